"""Leases: concurrent identical requests in different processes pay for one model call."""

from __future__ import annotations

import asyncio
import time

import pytest

from tasks.core.records import ModelAnswer
from tasks.steps.cache import LookupRequest, StoreRequest, lookup, store


@pytest.fixture(params=["redis", "sqlite"])
def backend(request, monkeypatch):
    if request.param == "redis":
        request.getfixturevalue("redis_cache")
    return request.param


async def test_a_second_caller_waits_for_the_first_answer_instead_of_paying(backend, monkeypatch):
    monkeypatch.setenv("FRUGAL_CACHE_LEASE_SECONDS", "5")
    first = await lookup(LookupRequest(key="k1"))
    assert first.cache == "miss"  # first caller holds the lease

    async def answer_later() -> None:
        await asyncio.sleep(0.3)
        await store(StoreRequest(key="k1", answer=ModelAnswer(text="paid once", model="m", tier="large")))

    writer = asyncio.create_task(answer_later())
    started = time.monotonic()
    second = await lookup(LookupRequest(key="k1"))
    await writer
    assert second.cache == "hit" and second.answer.text == "paid once"
    assert 0.2 < time.monotonic() - started < 3


async def test_an_invalid_answer_releases_the_lease_so_the_next_caller_answers(backend, monkeypatch):
    monkeypatch.setenv("FRUGAL_CACHE_LEASE_SECONDS", "5")
    assert (await lookup(LookupRequest(key="k2"))).cache == "miss"
    await store(StoreRequest(key="k2", answer=ModelAnswer(text="x", model="m", tier="small", valid=False, reason="bad")))
    started = time.monotonic()
    assert (await lookup(LookupRequest(key="k2"))).cache == "miss"
    assert time.monotonic() - started < 0.5


async def test_a_dead_holder_delays_the_next_caller_by_the_lease_at_most(backend, monkeypatch):
    monkeypatch.setenv("FRUGAL_CACHE_LEASE_SECONDS", "0.5")
    assert (await lookup(LookupRequest(key="k3"))).cache == "miss"  # and never stores: it "died"
    started = time.monotonic()
    assert (await lookup(LookupRequest(key="k3"))).cache == "miss"
    assert 0.3 < time.monotonic() - started < 2


async def test_leases_off(backend, monkeypatch):
    monkeypatch.setenv("FRUGAL_CACHE_LEASE_SECONDS", "0")
    assert (await lookup(LookupRequest(key="k4"))).cache == "miss"
    started = time.monotonic()
    assert (await lookup(LookupRequest(key="k4"))).cache == "miss"
    assert time.monotonic() - started < 0.2
