"""The OpenAI-compatible gateway, end to end: a real uvicorn server on loopback, called with the
official `openai` client (sync, async, streaming), the models on the loopback peer."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from flows import ledger
from flows.gateway.app import create_app
from flows.gateway.server import check_bind
from flows.gateway.tenants import add_key
from tasks.core.errors import ConfigError
from tests.peers.server import LoopbackServer


@pytest.fixture
def gateway(peer, redis_cache) -> Iterator[LoopbackServer]:
    peer.responder = lambda protocol, body: "Paris is the capital of France."
    with LoopbackServer(create_app(), lifespan="on") as server:
        yield server


def client(server: LoopbackServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def test_a_miss_then_a_hit_through_the_openai_client(gateway, peer):
    api = client(gateway)
    first = api.chat.completions.with_raw_response.create(
        model="frugal/answer", messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    answer = first.parse()
    assert answer.choices[0].message.content == "Paris is the capital of France."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert first.headers["x-frugal-cache"] == "miss"
    assert first.headers["x-frugal-route"] in ("small", "large")
    assert first.headers["x-frugal-model"] == answer.model
    calls = peer.count()
    second = api.chat.completions.with_raw_response.create(
        model="frugal/answer", messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    assert second.parse().choices[0].message.content == "Paris is the capital of France."
    assert second.headers["x-frugal-cache"] == "hit"
    ids = [answer.id, second.parse().id]
    assert all(re.fullmatch(r"chatcmpl-[0-9a-f]{24}", i) for i in ids) and ids[0] != ids[1], ids
    assert second.headers["x-frugal-cost-usd"] in ("0", "0.0")
    assert peer.count() == calls  # the hit called no model


def test_streaming_replays_the_answer_as_chunks_with_usage(gateway):
    api = client(gateway)
    for _ in range(2):  # a miss, then a cached answer, both streamed
        stream = api.chat.completions.create(
            model="frugal/answer",
            messages=[{"role": "user", "content": "Name the capital of France."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Paris is the capital of France."
        assert chunks[0].choices[0].delta.role == "assistant"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        assert len(chunks) >= 4


async def test_the_async_client_and_a_conversation(gateway, peer):
    api = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    answer = await api.chat.completions.create(
        model="frugal/answer",
        messages=[
            {"role": "system", "content": "Answer in one line."},
            {"role": "user", "content": "Remember the number 7."},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "Which number?"},
        ],
        max_tokens=20,
        temperature=0,
    )
    assert answer.choices[0].message.content == "Paris is the capital of France."
    sent = peer.requests[-1].json
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert sent["messages"][0]["content"] == "Answer in one line."
    await api.close()


def test_models_lists_every_pipeline(gateway):
    names = {m.id for m in client(gateway).models.list()}
    assert {"frugal/answer", "frugal/sentiment"} <= names


def test_a_mapped_model_name_runs_answer_with_that_large_model(gateway, peer, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # the small tier is down: the request escalates to large
    answer = client(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Prove that the square root of 2 is irrational."}]
    )
    assert answer.choices[0].message.content == "Paris is the capital of France."
    large = [r for r in peer.requests if r.path == "/v1/chat/completions"]
    assert large and all(r.json["model"] == "gpt-4o-mini" for r in large)
    assert answer.model == "openai/gpt-4o-mini"


@pytest.mark.parametrize(
    ("kwargs", "error", "code"),
    [
        ({"model": "frugal/nope"}, openai.NotFoundError, "model_not_found"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            openai.BadRequestError,
            "unsupported_parameter",
        ),
        ({"n": 2}, openai.BadRequestError, "invalid_value"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, openai.BadRequestError, None),
        ({"messages": [{"role": "user", "content": "  "}]}, openai.BadRequestError, None),
    ],
    ids=["unknown-model", "tools", "n", "last-not-user", "empty-prompt"],
)
def test_bad_requests_are_openai_errors_and_call_no_model(gateway, peer, kwargs, error, code):
    request = {"model": "frugal/answer", "messages": [{"role": "user", "content": "hello"}], **kwargs}
    with pytest.raises(error) as raised:
        client(gateway).chat.completions.create(**request)
    body = raised.value.body
    assert isinstance(body, dict) and body["message"] and body["type"]
    if code is not None:
        assert body["code"] == code
    assert peer.count() == 0


def test_malformed_json_is_a_400_in_openai_shape(gateway):
    response = httpx.post(
        gateway.url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_health_readiness_and_metrics(gateway):
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(gateway.url + "/readyz").status_code == 200
    client(gateway).chat.completions.create(model="frugal/answer", messages=[{"role": "user", "content": "metrics?"}])
    text = httpx.get(gateway.url + "/metrics").text
    assert 'frugal_gateway_requests_total{pipeline="answer",status="200"}' in text
    assert "frugal_gateway_request_seconds_bucket" in text
    assert 'frugal_gateway_cache_total{kind="miss"}' in text


def test_the_access_log_holds_neither_prompt_nor_key(gateway, caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="frugal.gateway.access")
    client(gateway).chat.completions.create(model="frugal/answer", messages=[{"role": "user", "content": "a secret question"}])
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "frugal.gateway.access"]
    assert lines and lines[-1]["status"] == 200 and lines[-1]["pipeline"] == "answer" and lines[-1]["cache"] == "miss"
    assert all("secret question" not in r.getMessage() for r in caplog.records)


@pytest.fixture
def tenants(peer, redis_cache, tmp_path, monkeypatch) -> Iterator[tuple[LoopbackServer, dict[str, str]]]:
    keys_file = tmp_path / "keys.yaml"
    keys = {
        "acme": add_key(keys_file, "acme", None, None),
        "globex": add_key(keys_file, "globex", None, None),
        "broke": add_key(keys_file, "broke", budget=__import__("decimal").Decimal("0"), rpm=None),
        "slow": add_key(keys_file, "slow", None, rpm=1),
    }
    assert all(key not in keys_file.read_text() for key in keys.values())  # only hashes are stored
    monkeypatch.setenv("FRUGAL_GATEWAY_KEYS_FILE", str(keys_file))
    peer.responder = lambda protocol, body: "an answer"
    with LoopbackServer(create_app(), lifespan="on") as server:
        yield server, keys


def test_keys_are_required_and_tenants_never_share_answers(tenants, peer):
    server, keys = tenants
    ask = {"model": "frugal/answer", "messages": [{"role": "user", "content": "What is our refund policy?"}]}
    no_key = httpx.post(server.url + "/v1/chat/completions", json=ask)
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(server, "ff-not-a-key").chat.completions.create(**ask)
    acme = client(server, keys["acme"]).chat.completions.with_raw_response.create(**ask)
    assert acme.headers["x-frugal-cache"] == "miss"
    again = client(server, keys["acme"]).chat.completions.with_raw_response.create(**ask)
    assert again.headers["x-frugal-cache"] == "hit"
    globex = client(server, keys["globex"]).chat.completions.with_raw_response.create(**ask)
    assert globex.headers["x-frugal-cache"] == "miss"  # the same prompt, another tenant: never acme's answer
    ledger.flush()
    spaces = {e.namespace for e in ledger.read_entries()}
    assert {"acme", "globex"} <= spaces


def test_budgets_and_rate_limits_answer_429(tenants, peer):
    server, keys = tenants
    ask = {"model": "frugal/answer", "messages": [{"role": "user", "content": "hello"}]}
    with pytest.raises(openai.RateLimitError) as spent:
        client(server, keys["broke"]).chat.completions.create(**ask)
    assert spent.value.body["code"] == "insufficient_quota"
    client(server, keys["slow"]).chat.completions.create(**ask)
    with pytest.raises(openai.RateLimitError) as limited:
        client(server, keys["slow"]).chat.completions.create(**ask)
    assert limited.value.body["code"] == "rate_limit_exceeded"
    assert int(limited.value.response.headers["retry-after"]) >= 1


def test_listening_beyond_loopback_needs_keys(tmp_path, monkeypatch):
    check_bind("127.0.0.1")
    with pytest.raises(ConfigError, match="FRUGAL_GATEWAY_KEYS_FILE"):
        check_bind("0.0.0.0")
    add_key(tmp_path / "keys.yaml", "acme", None, None)
    monkeypatch.setenv("FRUGAL_GATEWAY_KEYS_FILE", str(tmp_path / "keys.yaml"))
    check_bind("0.0.0.0")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_sigterm_finishes_the_request_in_flight_and_flushes_the_ledger(peer, redis_cache, tmp_path, server):
    if server == "granian":
        pytest.importorskip("granian", reason="--server granian is optional: pip install granian")
    peer.responder = lambda protocol, body: "slow answer"
    peer.delay = 1.5
    port = _free_port()
    frugal = str(Path(sys.executable).parent / "frugal")
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen([frugal, "gateway", "--port", str(port), "--server", server], env=dict(os.environ), stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "the gateway did not become ready"
            time.sleep(0.1)
        with httpx.Client(timeout=30) as http:
            pending = http.build_request(
                "POST",
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"model": "frugal/answer", "messages": [{"role": "user", "content": "take your time"}]},
            )
            result: dict[str, httpx.Response] = {}
            sender = threading.Thread(target=lambda: result.setdefault("r", http.send(pending)))
            sender.start()
            while peer.count() == 0:  # the request reached the model
                assert sender.is_alive()
                time.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            sender.join(30)
        assert result["r"].status_code == 200 and result["r"].json()["choices"][0]["message"]["content"] == "slow answer"
        assert process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert "Traceback" not in (tmp_path / "gateway.log").read_text()
    ledger.flush()
    assert any(e.kind == "call" and e.pipeline == "answer" for e in ledger.read_entries())


def test_a_worker_loads_what_the_mapped_pipelines_first_miss_needs_before_it_is_ready():
    from flows.gateway.warm import steps_used

    used = steps_used({"answer", "no-such-pipeline"})  # one that does not load is left to its requests
    assert ("classify", "embedding") in used and ("check_answer", "") in used
    assert steps_used({"no-such-pipeline"}) == set()
