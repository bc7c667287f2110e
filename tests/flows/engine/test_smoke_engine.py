"""First end-to-end checks of the engine on the answer pipeline (inline)."""

from __future__ import annotations

from flows.orchestration.flow import run_inline


async def test_answer_small_then_hit(peer, redis_cache):
    peer.responder = lambda protocol, body: "four"
    first = await run_inline("answer", {"prompt": "What is 2+2?"})
    assert first.output["text"] == "four"
    assert first.output["cache"] == "miss"
    assert first.output["route"] == "small"
    assert first.output["model"] == "ollama/llama3.2:1b"
    second = await run_inline("answer", {"prompt": "What is 2+2?"})
    assert second.output["cache"] == "hit"
    assert second.output["text"] == "four"
    assert peer.count("/api/chat") == 1
