"""OLLAMA_HOSTS: small-model calls spread over several Ollama servers (two loopback stand-ins), a host
that dies taken out while the other serves, and taken back once it answers again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tasks.providers.ollama_hosts import forget_hosts
from tasks.steps.call_slm import SlmRequest, answer_small, prepare_small
from tests.peers.model_peer import ModelPeer
from tests.peers.server import LoopbackServer

CHAT = "/api/chat"


@pytest.fixture
def two_hosts(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModelPeer, ModelPeer, list[LoopbackServer]]]:
    forget_hosts()
    first, second = ModelPeer(ollama_models=[], delay=0.05), ModelPeer(ollama_models=[], delay=0.05)
    servers = [first.serve().start(), second.serve().start()]
    monkeypatch.setenv("FRUGAL_SLM_PROVIDER", "ollama")
    monkeypatch.setenv("OLLAMA_HOSTS", ",".join(s.url for s in servers))
    monkeypatch.setenv("FRUGAL_LLM_BACKOFF_BASE", "0.01")
    try:
        yield first, second, servers
    finally:
        for server in servers:
            server.stop()
        forget_hosts()


@pytest.mark.slow
async def test_calls_spread_over_hosts_survive_a_dead_one_and_take_it_back(two_hosts):
    first, second, servers = two_hosts
    answers = await asyncio.gather(*(answer_small(SlmRequest(prompt=f"spread {i}", max_tokens=8)) for i in range(8)))
    assert [a.text for a in answers] == [f"ok: spread {i}" for i in range(8)]
    assert first.count(CHAT) >= 2 and second.count(CHAT) >= 2  # least-loaded first: both served

    port = servers[0].port
    servers[0].stop()  # the first host dies
    before = second.count(CHAT)
    for i in range(6):
        answer = await answer_small(SlmRequest(prompt=f"one down {i}", max_tokens=8))
        assert answer.text == f"ok: one down {i}"
    assert second.count(CHAT) == before + 6  # the other host served every call, none failed

    served_before = first.count(CHAT)
    servers[0] = LoopbackServer(first.app, port=port).start()  # it answers again, at the same address
    deadline = time.monotonic() + 40  # probed again after a back-off of 1, 2, 4, ... s
    i = 0
    while first.count(CHAT) == served_before and time.monotonic() < deadline:
        await answer_small(SlmRequest(prompt=f"back {i}", max_tokens=8))
        i += 1
        await asyncio.sleep(0.1)
    assert first.count(CHAT) > served_before  # taken back


def test_a_list_of_hosts_is_one_endpoint_in_request_keys(monkeypatch):
    """Adding a host to the list keeps every cached answer: the hosts serve alike."""
    monkeypatch.setenv("FRUGAL_SLM_PROVIDER", "ollama")
    monkeypatch.setenv("OLLAMA_HOSTS", "http://gpu1:11434,http://gpu2:11434")
    two = prepare_small(SlmRequest(prompt="same")).identity.key
    monkeypatch.setenv("OLLAMA_HOSTS", "http://gpu1:11434, http://gpu2:11434, gpu3:11434")
    three = prepare_small(SlmRequest(prompt="same"))
    assert three.identity.key == two
    assert three.choice.endpoint == "http://gpu1:11434,http://gpu2:11434,http://gpu3:11434"


def test_ollama_host_alone_still_names_its_server(monkeypatch):
    monkeypatch.setenv("FRUGAL_SLM_PROVIDER", "ollama")
    monkeypatch.setenv("OLLAMA_HOST", "gpu1:11434")
    assert prepare_small(SlmRequest(prompt="x")).choice.endpoint == "http://gpu1:11434"
