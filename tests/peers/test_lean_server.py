"""The lean stand-in (`serve_peer --server lean`) answers as the Starlette peer does.

Both servers run as `serve_peer` processes side by side; the official `ollama`
and `openai` clients ask both the same things, and the answers must agree in
every field but the ones that change per call (times, durations, ids). Also:
the stats / reset / config routes, the delay, unknown routes and malformed
requests.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.peers.serve_peer import spawn

PROJECT = Path(__file__).resolve().parents[2]
MODEL = "llama3.2:1b"
VARYING = {"created_at", "total_duration", "created", "id", "system_fingerprint"}


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    folder = tmp_path_factory.mktemp("stand-ins")
    started = [spawn(folder, 0.01, server, name=server) for server in ("lean", "starlette")]
    try:
        yield {"lean": started[0][1], "starlette": started[1][1]}
    finally:
        for process, _ in started:
            process.terminate()
            process.wait(10)


def _stable(value: Any) -> Any:
    """`value` without the fields that change from one call to the next."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VARYING}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def test_ollama_chat_answers_as_the_starlette_peer(urls: dict[str, str]) -> None:
    messages = [{"role": "system", "content": "Summarise."}, {"role": "user", "content": "The report shows growth."}]
    replies = {}
    for server, url in urls.items():
        with ollama.Client(host=url) as client:
            reply = client.chat(model=MODEL, messages=messages, options={"num_predict": 2})
            streamed = list(client.chat(model=MODEL, messages=messages, stream=True))
        replies[server] = (_stable(reply.model_dump()), [_stable(part.model_dump()) for part in streamed])
    assert replies["lean"] == replies["starlette"]
    reply, streamed = replies["lean"]
    assert reply["message"]["content"] == "ok: The" and reply["done_reason"] == "length"
    assert reply["prompt_eval_count"] == 5 and reply["eval_count"] == 2
    assert "".join(part["message"]["content"] for part in streamed) == "ok: The report shows growth."
    assert streamed[-1]["done"] is True and not streamed[0]["done"]


def test_ollama_generate_answers_as_the_starlette_peer(urls: dict[str, str]) -> None:
    replies = {}
    for server, url in urls.items():
        with ollama.Client(host=url) as client:
            replies[server] = _stable(client.generate(model=MODEL, prompt="count to three", stream=False).model_dump())
    assert replies["lean"] == replies["starlette"]
    assert replies["lean"]["response"] == "ok: count to three" and replies["lean"]["context"] == [1, 2, 3, 4, 5, 6, 7]


def test_openai_chat_completion_answers_as_the_starlette_peer(urls: dict[str, str]) -> None:
    replies = {}
    for server, url in urls.items():
        with openai.OpenAI(base_url=url + "/v1", api_key="sk-test") as client:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Say something short."}], max_tokens=3
            )
            assert raw.headers["x-request-id"].startswith("req_")
            replies[server] = _stable(raw.parse().model_dump())
    assert replies["lean"] == replies["starlette"]
    choice = replies["lean"]["choices"][0]
    assert choice["message"]["content"] == "ok: Say something" and choice["finish_reason"] == "length"
    assert replies["lean"]["usage"]["prompt_tokens"] == 3 and replies["lean"]["usage"]["completion_tokens"] == 3


def test_stats_reset_and_delay(urls: dict[str, str]) -> None:
    url = urls["lean"]
    with httpx.Client(base_url=url) as http:
        http.post("/_peer/reset")
        with ollama.Client(host=url) as client:
            for text in ("one", "two", "one"):
                client.chat(model=MODEL, messages=[{"role": "user", "content": text}])
        stats = http.get("/_peer/stats").json()
        assert stats["requests"] == 4 and stats["by_path"]["/api/chat"] == 3  # the reset counts as a request
        assert (stats["answered"], stats["distinct_prompts"]) == (3, 2)
        assert list(stats["duplicates"].values()) == [2]

        assert http.post("/_peer/config", json={"delay": 0.3}).json()["delay"] == 0.3
        started = time.perf_counter()
        http.post("/api/chat", json={"model": MODEL, "messages": [{"role": "user", "content": "slow"}], "stream": False})
        assert time.perf_counter() - started >= 0.3  # the delay was applied (no upper bound: a busy machine is slower)
        http.post("/_peer/config", json={"delay": 0.01})

        http.post("/_peer/reset")
        assert http.get("/_peer/stats").json()["answered"] == 0


def test_unknown_routes_and_bad_requests(urls: dict[str, str]) -> None:
    url = urls["lean"]
    with httpx.Client(base_url=url) as http:
        assert http.get("/nothing/here").status_code == 404
        assert http.post("/api/chat", content=b"{not json").status_code == 400
        assert http.post("/api/chat", json={"messages": []}).status_code == 400
        streamed = http.post(
            "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
        )
        assert streamed.status_code == 400 and "Starlette" in streamed.json()["error"]["message"]
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:  # not HTTP at all: a 400, then the end
        raw.sendall(b"\x00\x01garbage\r\n\r\n")
        assert raw.recv(1024).startswith(b"HTTP/1.1 400")
