"""Leases: concurrent identical requests in different processes pay for one model call."""

from __future__ import annotations

import asyncio
import time

import pytest

from tasks.core.records import ModelAnswer
from tasks.core.settings import get_settings
from tasks.steps.cache import LookupRequest, StoreRequest, cache_key, lookup, store
from tasks.stores import open_store


@pytest.fixture(params=["redis", "sqlite"])
def backend(request, monkeypatch):
    if request.param == "redis":
        request.getfixturevalue("redis_cache")
    return request.param


async def lease_is_free(key: str) -> bool:
    """Whether another caller could take `key`'s lease now (it takes it, then gives it back)."""
    settings = get_settings().cache
    full = cache_key(settings.prefix, "default", key)
    store_ = open_store(settings)
    if not await store_.claim(full, 5):
        return False
    await store_.release(full)
    return True


async def test_a_second_caller_waits_for_the_first_answer_instead_of_paying(backend, monkeypatch):
    monkeypatch.setenv("FRUGAL_CACHE_LEASE_SECONDS", "30")
    first = await lookup(LookupRequest(key="k1"))
    assert first.cache == "miss"  # first caller holds the lease
    second = asyncio.ensure_future(lookup(LookupRequest(key="k1")))
    finished, _ = await asyncio.wait({second}, timeout=0.3)
    assert not finished  # it waits for the holder's answer, it does not go and pay
    await store(StoreRequest(key="k1", answer=ModelAnswer(text="paid once", model="m", tier="large")))
    found = await second
    assert found.cache == "hit" and found.answer.text == "paid once"


async def test_an_invalid_answer_releases_the_lease_so_the_next_caller_answers(backend, monkeypatch):
    monkeypatch.setenv("FRUGAL_CACHE_LEASE_SECONDS", "30")
    assert (await lookup(LookupRequest(key="k2"))).cache == "miss"
    assert not await lease_is_free("k2")
    await store(StoreRequest(key="k2", answer=ModelAnswer(text="x", model="m", tier="small", valid=False, reason="bad")))
    assert await lease_is_free("k2")  # the next caller takes it at once: it answers instead of waiting
    assert (await lookup(LookupRequest(key="k2"))).cache == "miss"


async def test_a_dead_holder_delays_the_next_caller_by_the_lease_at_most(backend, monkeypatch):
    monkeypatch.setenv("FRUGAL_CACHE_LEASE_SECONDS", "0.5")
    assert (await lookup(LookupRequest(key="k3"))).cache == "miss"  # and never stores: it "died"
    started = time.monotonic()
    assert (await lookup(LookupRequest(key="k3"))).cache == "miss"
    assert time.monotonic() - started > 0.3  # it waited for the lease to run out, then answered


async def test_leases_off(backend, monkeypatch):
    monkeypatch.setenv("FRUGAL_CACHE_LEASE_SECONDS", "0")
    assert (await lookup(LookupRequest(key="k4"))).cache == "miss"
    assert await lease_is_free("k4")  # no lease taken: nobody waits
    assert (await lookup(LookupRequest(key="k4"))).cache == "miss"
