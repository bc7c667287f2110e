"""The model peer speaks the real wire formats: proven with the official clients."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import anthropic
import httpx
import ollama
import openai
import pytest
from pydantic import BaseModel

from .model_peer import ModelPeer
from .server import LoopbackServer

MODEL = "llama3.2:1b"
KEY = "sk-test"
_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "OLLAMA_HOST",
    "OLLAMA_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_AUTH_TOKEN",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def _served() -> Iterator[tuple[ModelPeer, LoopbackServer]]:
    peer = ModelPeer()
    with peer.serve() as server:
        yield peer, server


@pytest.fixture
def peer(_served: tuple[ModelPeer, LoopbackServer]) -> Iterator[ModelPeer]:
    peer = _served[0]
    peer.reset(settings=True)
    yield peer
    peer.reset(settings=True)


@pytest.fixture
def url(_served: tuple[ModelPeer, LoopbackServer]) -> str:
    return _served[1].url


@pytest.fixture
def oai(url: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def claude(url: str) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)
    yield client
    client.close()


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# -- LoopbackServer --------------------------------------------------------------------


def test_loopback_server_starts_on_ephemeral_port_and_stops_cleanly() -> None:
    before = set(threading.enumerate())
    server = LoopbackServer(ModelPeer().app)
    with server:
        assert server.url.startswith("http://127.0.0.1:") and server.port and server.port > 0
        assert server.running
        assert httpx.get(server.url + "/api/version", trust_env=False).json() == {"version": "0.13.0"}
    assert not server.running
    assert set(threading.enumerate()) == before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    server.stop()  # idempotent


# -- Ollama ----------------------------------------------------------------------------


def test_ollama_chat_non_stream(peer: ModelPeer, url: str) -> None:
    peer.responder = lambda protocol, body: f"{protocol} says positive"
    with ollama.Client(host=url) as client:
        resp = client.chat(
            model=MODEL,
            messages=[
                {"role": "system", "content": "Classify."},
                *user("I love this product"),
            ],
        )
    assert resp.message.role == "assistant"
    assert resp.message.content == "ollama says positive"
    assert (resp.model, resp.done, resp.done_reason) == (MODEL, True, "stop")
    assert (resp.prompt_eval_count, resp.eval_count) == (5, 3)
    assert resp.total_duration >= resp.load_duration + resp.prompt_eval_duration + resp.eval_duration
    assert resp.created_at.endswith("Z")
    protocol, path, body, headers = peer.requests[0]
    assert (protocol, path, body["stream"]) == ("ollama", "/api/chat", False)
    assert body["messages"][1] == {"role": "user", "content": "I love this product"}
    assert headers["user-agent"].startswith("ollama-python/")


def test_ollama_generate_and_num_predict(peer: ModelPeer, url: str) -> None:
    peer.responder = lambda protocol, body: "one two three four"
    with ollama.Client(host=url) as client:
        full = client.generate(model=MODEL, prompt="count please", system="be brief")
        cut = client.generate(model=MODEL, prompt="count", options={"num_predict": 2})
    assert (full.response, full.done_reason, full.eval_count, full.prompt_eval_count) == ("one two three four", "stop", 4, 4)
    assert list(full.context) == list(range(1, 9))
    assert (cut.response, cut.done_reason, cut.eval_count) == ("one two", "length", 2)
    assert peer.requests[0].json["prompt"] == "count please"


def test_ollama_streaming_chat(peer: ModelPeer, url: str) -> None:
    peer.responder = lambda protocol, body: "a streamed answer"
    with ollama.Client(host=url) as client:
        chunks = list(client.chat(model=MODEL, messages=user("go"), stream=True))
    assert [c.message.content for c in chunks] == ["a", " streamed", " answer", ""]
    assert [c.done for c in chunks] == [False, False, False, True]
    assert (chunks[-1].done_reason, chunks[-1].eval_count, chunks[-1].prompt_eval_count) == ("stop", 3, 1)
    assert chunks[0].eval_count is None


class Verdict(BaseModel):
    label: Literal["positive", "negative"]
    score: float


def test_ollama_format_schema_passed_through(peer: ModelPeer, url: str) -> None:
    schema = Verdict.model_json_schema()
    with ollama.Client(host=url) as client:
        resp = client.chat(model=MODEL, messages=user("rate it"), format=schema)
        peer.responder = lambda protocol, body: json.dumps({"label": "negative", "score": 0.25})
        told = client.generate(model=MODEL, prompt="rate it", format="json")
    assert peer.requests[0].json["format"] == schema
    assert peer.requests[1].json["format"] == "json"
    assert Verdict.model_validate_json(resp.message.content) == Verdict(label="positive", score=0.0)
    assert Verdict.model_validate_json(told.response).label == "negative"


def test_ollama_list_show_and_version(peer: ModelPeer, url: str) -> None:
    peer.ollama_models = [MODEL, "qwen2.5:0.5b"]
    with ollama.Client(host=url) as client:
        listed = client.list()
        shown = client.show("qwen2.5:0.5b")
    assert [m.model for m in listed.models] == [MODEL, "qwen2.5:0.5b"]
    assert listed.models[0].details.family == "llama" and len(listed.models[0].digest) == 64
    assert shown.modelfile == "FROM qwen2.5:0.5b\n" and shown.capabilities == ["completion"]
    assert httpx.get(url + "/api/version", trust_env=False).json() == {"version": peer.ollama_version}
    assert [r.path for r in peer.requests] == ["/api/tags", "/api/show", "/api/version"]


def test_ollama_unknown_model_is_404(peer: ModelPeer, url: str) -> None:
    with ollama.Client(host=url) as client, pytest.raises(ollama.ResponseError) as info:
        client.chat(model="nope:7b", messages=user("hi"))
    assert info.value.status_code == 404
    assert info.value.error == "model 'nope:7b' not found, try pulling it first"
    peer.ollama_models = []  # accept any model
    with ollama.Client(host=url) as client:
        assert client.chat(model="nope:7b", messages=user("hi")).model == "nope:7b"
    assert peer.count("/api/chat") == 2


def test_ollama_injected_500_then_recovers(peer: ModelPeer, url: str) -> None:
    peer.fail_next(500, body={"error": "llama runner process has terminated"})
    with ollama.Client(host=url) as client:
        with pytest.raises(ollama.ResponseError) as info:
            client.chat(model=MODEL, messages=user("hi"))
        assert client.chat(model=MODEL, messages=user("hi")).message.content == "ok: hi"
    assert (info.value.status_code, info.value.error) == (500, "llama runner process has terminated")
    assert peer.count("/api/chat") == 2 and peer.pending_failures == 0


@pytest.mark.asyncio
async def test_ollama_async_client_chat_and_stream(peer: ModelPeer, url: str) -> None:
    async def responder(protocol: str, body: dict) -> str:
        await asyncio.sleep(0)
        return "async label"

    peer.responder = responder
    async with ollama.AsyncClient(host=url) as client:
        resp = await client.chat(model=MODEL, messages=user("hi"))
        parts = [c.message.content async for c in await client.chat(model=MODEL, messages=user("x"), stream=True)]
        with pytest.raises(ollama.ResponseError) as info:
            await client.generate(model="missing", prompt="x")
    assert resp.message.content == "async label"
    assert "".join(parts) == "async label" and len(parts) == 3
    assert info.value.status_code == 404 and "model 'missing' not found" in info.value.error


# -- OpenAI ----------------------------------------------------------------------------


def test_openai_chat_completion(peer: ModelPeer, oai: openai.OpenAI) -> None:
    peer.api_key = KEY
    peer.responder = lambda protocol, body: "positive"
    resp = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Label the sentiment."},
            *user("great stuff"),
        ],
    )
    choice = resp.choices[0]
    assert (resp.object, resp.model, resp.id[:9]) == ("chat.completion", "gpt-4o-mini", "chatcmpl-")
    assert (choice.index, choice.finish_reason, choice.logprobs) == (0, "stop", None)
    assert (choice.message.role, choice.message.content, choice.message.refusal) == ("assistant", "positive", None)
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (5, 1, 6)
    recorded = peer.requests[0]
    assert (recorded.protocol, recorded.path) == ("openai", "/v1/chat/completions")
    assert recorded.headers["authorization"] == f"Bearer {KEY}"


def test_openai_max_tokens_and_json_schema(peer: ModelPeer, oai: openai.OpenAI) -> None:
    peer.responder = lambda protocol, body: "one two three"
    cut = oai.chat.completions.create(model="m", messages=user("x"), max_completion_tokens=2)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("one two", "length")
    peer.reset(settings=True)  # default responder: a schema instance
    schema = Verdict.model_json_schema()
    resp = oai.chat.completions.create(
        model="m",
        messages=user("x"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "verdict", "schema": schema, "strict": True},
        },
    )
    assert Verdict.model_validate_json(resp.choices[0].message.content).label == "positive"
    assert peer.requests[0].json["response_format"]["json_schema"]["schema"] == schema


def test_openai_streaming_with_usage(peer: ModelPeer, oai: openai.OpenAI) -> None:
    peer.responder = lambda protocol, body: "streamed chat answer"
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=user("go now"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed chat answer"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(oai.chat.completions.create(model="m", messages=user("go"), stream=True))
    assert all(c.usage is None and c.choices for c in plain)


def test_openai_wrong_key_is_401(peer: ModelPeer, url: str) -> None:
    peer.api_key = KEY
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong-key-123", max_retries=0)
    with client, pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="m", messages=user("x"))
    err = info.value
    assert (err.status_code, err.code, err.type, err.param) == (401, "invalid_api_key", "invalid_request_error", None)
    assert err.message.startswith("Error code: 401") and "Incorrect API key provided: sk-" in err.message
    assert "sk-wrong-key-123" not in err.message  # masked, like the real API
    assert err.request_id and peer.count("/v1/chat/completions") == 1


def test_openai_injected_429_with_retry_after(peer: ModelPeer, oai: openai.OpenAI) -> None:
    peer.fail_next(429, n=2, headers={"Retry-After": "7"})
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as info:
            oai.chat.completions.create(model="m", messages=user("x"))
        assert info.value.status_code == 429 and info.value.code == "rate_limit_exceeded"
        assert info.value.response.headers["retry-after"] == "7"
    assert oai.chat.completions.create(model="m", messages=user("x")).choices[0].message.content == "ok: x"
    assert peer.count() == 3


def test_openai_models_list(peer: ModelPeer, oai: openai.OpenAI) -> None:
    peer.openai_models = ["gpt-4o-mini", "gpt-4.1"]
    assert [m.id for m in oai.models.list()] == ["gpt-4o-mini", "gpt-4.1"]


# -- Anthropic -------------------------------------------------------------------------


def test_anthropic_message(peer: ModelPeer, claude: anthropic.Anthropic) -> None:
    peer.api_key = KEY
    peer.responder = lambda protocol, body: "negative sentiment"
    msg = claude.messages.create(
        model="claude-3-5-haiku-latest",
        max_tokens=64,
        system="Label it.",
        messages=user("awful service"),
    )
    assert (msg.type, msg.role, msg.model, msg.id[:4]) == ("message", "assistant", "claude-3-5-haiku-latest", "msg_")
    assert [(b.type, b.text) for b in msg.content] == [("text", "negative sentiment")]
    assert (msg.stop_reason, msg.stop_sequence) == ("end_turn", None)
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (4, 2)
    assert (msg.usage.cache_creation_input_tokens, msg.usage.cache_read_input_tokens) == (0, 0)
    headers = peer.requests[0].headers
    assert headers["authorization"] == f"Bearer {KEY}" and headers["anthropic-version"]  # anthropic 2.x
    cut = claude.messages.create(model="c", max_tokens=1, messages=user("x"))
    assert (cut.content[0].text, cut.stop_reason, cut.usage.output_tokens) == ("negative", "max_tokens", 1)


def test_anthropic_stream(peer: ModelPeer, claude: anthropic.Anthropic) -> None:
    peer.responder = lambda protocol, body: "streamed claude answer"
    with claude.messages.stream(model="c", max_tokens=50, messages=user("go")) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert deltas == ["streamed", " claude", " answer"]
    assert final.content[0].text == "streamed claude answer" and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (1, 3)


def test_anthropic_wrong_key_is_401(peer: ModelPeer, url: str) -> None:
    peer.api_key = KEY
    client = anthropic.Anthropic(base_url=url, api_key="sk-bad", max_retries=0)
    with client, pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.create(model="c", max_tokens=5, messages=user("x"))
    assert info.value.status_code == 401
    assert info.value.body["type"] == "error"
    assert info.value.body["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    assert info.value.response.headers["request-id"].startswith("req_")


def test_anthropic_requires_version_header_and_max_tokens(peer: ModelPeer, url: str) -> None:
    peer.api_key = KEY
    body = {"model": "c", "max_tokens": 5, "messages": user("x")}
    version = {"anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=url, trust_env=False, headers={"x-api-key": KEY}) as client:
        no_version = client.post("/v1/messages", json=body)
        no_max = client.post("/v1/messages", json={"model": "c", "messages": user("x")}, headers=version)
        ok = client.post("/v1/messages", json=body, headers=version)
        no_key = client.post("/v1/messages", json=body, headers={**version, "x-api-key": ""})
    assert ok.status_code == 200 and ok.json()["content"] == [{"type": "text", "text": "ok: x"}]
    assert no_key.status_code == 401 and no_key.json()["error"]["message"] == "x-api-key header is required"
    assert no_version.status_code == 400
    assert no_version.json()["error"] == {"type": "invalid_request_error", "message": "anthropic-version: header is required"}
    assert no_max.status_code == 400 and no_max.json()["error"]["message"] == "max_tokens: Field required"


def test_anthropic_injected_overload(peer: ModelPeer, claude: anthropic.Anthropic) -> None:
    peer.fail_next(529)
    with pytest.raises(anthropic.InternalServerError) as info:
        claude.messages.create(model="c", max_tokens=5, messages=user("x"))
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"


# -- counting, delay, responders -------------------------------------------------------


def test_counting_and_reset(peer: ModelPeer, url: str, oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    with ollama.Client(host=url) as client:
        client.chat(model=MODEL, messages=user("a"))
        client.generate(model=MODEL, prompt="b")
    oai.chat.completions.create(model="m", messages=user("c"))
    claude.messages.create(model="c", max_tokens=5, messages=user("d"))
    assert peer.count() == 4
    assert (peer.count("/api/chat"), peer.count("/api/generate"), peer.count("/v1/messages")) == (1, 1, 1)
    assert peer.count(protocol="ollama") == 2 and peer.count(protocol="openai") == 1
    assert [r.protocol for r in peer.requests] == ["ollama", "ollama", "openai", "anthropic"]
    peer.fail_next(503, n=3)
    peer.reset()
    assert peer.count() == 0 and peer.requests == [] and peer.pending_failures == 0


def test_delay_slows_responses_and_client_timeout(peer: ModelPeer, url: str) -> None:
    peer.delay = 0.3
    started = time.monotonic()
    with ollama.Client(host=url) as client:
        assert client.chat(model=MODEL, messages=user("slow")).message.content == "ok: slow"
    assert time.monotonic() - started >= 0.3
    peer.delay = 5
    with openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="m", messages=user("x"))
    assert time.monotonic() - started < 2
    assert peer.count("/v1/chat/completions") == 1  # a timed-out request is still counted


def test_blocking_responder_runs_off_the_event_loop(peer: ModelPeer, url: str) -> None:
    release = threading.Event()

    def responder(protocol: str, body: dict) -> str:
        if body.get("prompt") == "wait":
            assert release.wait(5)
        return "done"

    peer.responder = responder
    with ollama.Client(host=url) as client:
        slow: list[str] = []
        waiter = threading.Thread(target=lambda: slow.append(client.generate(model=MODEL, prompt="wait").response))
        waiter.start()
        try:
            assert client.generate(model=MODEL, prompt="quick").response == "done"  # server still answers
            assert not slow
        finally:
            release.set()
            waiter.join(5)
    assert slow == ["done"]


def test_failing_responder_gives_provider_500(peer: ModelPeer, oai: openai.OpenAI) -> None:
    def responder(protocol: str, body: dict) -> str:
        raise ValueError("boom")

    peer.responder = responder
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model="m", messages=user("x"))
    assert info.value.status_code == 500 and info.value.type == "server_error"
    assert "responder raised ValueError: boom" in info.value.message


# -- the providers' prompt caches (peer.prompt_cache) -----------------------------------


def test_anthropic_prompt_cache_usage_read_by_the_official_client(peer: ModelPeer, claude: anthropic.Anthropic) -> None:
    peer.prompt_cache = True
    peer.responder = lambda protocol, body: "ok"
    document = " ".join(["clause"] * 1500)
    system: Any = [{"type": "text", "text": document, "cache_control": {"type": "ephemeral"}}]
    first = claude.messages.create(model="claude-test", max_tokens=8, system=system, messages=user("one two"))
    second = claude.messages.create(model="claude-test", max_tokens=8, system=system, messages=user("three"))
    # input_tokens leaves out what was written to or read from the cache, as the real API reports it
    assert (first.usage.input_tokens, first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (
        2,
        1500,
        0,
    )
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 1500
    assert (second.usage.input_tokens, second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (
        1,
        0,
        1500,
    )
    short = claude.messages.create(
        model="c", max_tokens=8, system=[{**system[0], "text": "too short"}], messages=user("x")
    )  # below peer.cache_min_tokens: not cached, no error (as the API does)
    assert (short.usage.cache_creation_input_tokens, short.usage.input_tokens) == (0, 3)


def test_openai_prompt_cache_usage_read_by_the_official_client(peer: ModelPeer, oai: openai.OpenAI) -> None:
    peer.prompt_cache = True
    peer.responder = lambda protocol, body: "ok"
    manual = " ".join(["rule"] * 1300)
    messages: Any = [{"role": "system", "content": manual}, *user("question one")]
    first = oai.chat.completions.create(model="gpt-4o-mini", messages=messages)
    second = oai.chat.completions.create(model="gpt-4o-mini", messages=[messages[0], *user("question two")])
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    # 1,301 shared tokens, cached in steps of 128 from 1,024; prompt_tokens includes them
    assert (second.usage.prompt_tokens, second.usage.prompt_tokens_details.cached_tokens) == (1302, 1280)
    small = oai.chat.completions.create(model="gpt-4o-mini", messages=user("short prompt"))
    assert small.usage.prompt_tokens_details.cached_tokens == 0


# -- token log-probabilities and trickling ---------------------------------------------


def test_openai_logprobs_read_by_the_official_client(peer: ModelPeer, oai: openai.OpenAI) -> None:
    peer.responder = lambda protocol, body: "quite positive"
    peer.token_logprob = -0.25
    resp = oai.chat.completions.create(model="m", messages=user("x"), logprobs=True, top_logprobs=3)
    content = resp.choices[0].logprobs.content
    assert "".join(t.token for t in content) == "quite positive"
    assert [t.logprob for t in content] == [-0.25, -0.25]
    assert bytes(content[1].bytes) == b" positive"
    assert [a.token for a in content[0].top_logprobs] == ["quite", " alt1", " alt2"]
    assert [a.logprob for a in content[0].top_logprobs] == [-0.25, -1.25, -2.25]
    plain = oai.chat.completions.create(model="m", messages=user("x"))
    assert plain.choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        oai.chat.completions.create(model="m", messages=user("x"), top_logprobs=2)


def test_openai_streamed_logprobs_read_by_the_official_client(peer: ModelPeer, oai: openai.OpenAI) -> None:
    peer.responder = lambda protocol, body: "one two"
    chunks = list(oai.chat.completions.create(model="m", messages=user("x"), stream=True, logprobs=True, top_logprobs=1))
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.token for t in tokens] == ["one", " two"]
    assert all(len(t.top_logprobs) == 1 for t in tokens)


def test_ollama_logprobs_read_by_the_official_client(peer: ModelPeer, url: str) -> None:
    peer.responder = lambda protocol, body: "label positive"
    peer.token_logprob = -0.5
    with ollama.Client(host=url) as client:
        resp = client.chat(model=MODEL, messages=user("x"), logprobs=True, top_logprobs=2)
        assert [(t.token, t.logprob) for t in resp.logprobs] == [("label", -0.5), (" positive", -0.5)]
        assert [(a.token, a.logprob) for a in resp.logprobs[1].top_logprobs] == [(" positive", -0.5), (" alt1", -1.5)]
        streamed = list(client.chat(model=MODEL, messages=user("x"), logprobs=True, stream=True))
        assert [t.token for part in streamed for t in part.logprobs or ()] == ["label", " positive"]
        assert client.chat(model=MODEL, messages=user("x")).logprobs is None
    assert peer.requests[0].json["logprobs"] is True and peer.requests[0].json["top_logprobs"] == 2


def test_trickle_sends_a_whole_answer_one_byte_at_a_time(peer: ModelPeer, url: str) -> None:
    """Every byte arrives within a short read timeout, yet the answer takes seconds: only a total deadline stops it."""
    peer.responder = lambda protocol, body: "ok"
    peer.trickle = 0.01
    with httpx.Client(timeout=httpx.Timeout(0.5), trust_env=False) as client:
        response = client.post(url + "/api/chat", json={"model": MODEL, "messages": user("x"), "stream": False})
    assert response.json()["message"]["content"] == "ok"
    assert len(response.content) > 100  # so it took > 100 reads, each well under the read timeout


# -- a provider's rate limit -----------------------------------------------------------


def test_rate_limit_answers_openais_429_read_by_the_official_client(peer: ModelPeer, oai: openai.OpenAI) -> None:
    """Over the limit: 429 at once, OpenAI's error JSON, retry-after and x-ratelimit-* headers; counted."""
    rate = peer.limit_rate(rpm=120)  # 2 a second, the bucket holds 2
    started = time.monotonic()
    answered, refused = 0, []
    for i in range(6):
        try:
            oai.chat.completions.create(model="gpt-4o-mini", messages=user(f"item {i}"))
            answered += 1
        except openai.RateLimitError as exc:
            refused.append(exc)
    refill = int((time.monotonic() - started) * 2)  # what the bucket took in meanwhile
    assert 2 <= answered <= 2 + refill and len(refused) == 6 - answered
    error = refused[0]
    assert (error.status_code, error.code, error.type) == (429, "rate_limit_exceeded", "requests")
    assert "Rate limit reached for gpt-4o-mini" in error.message and "(RPM): Limit 120" in error.message
    assert error.response.headers["retry-after"] == "1"
    assert error.response.headers["x-ratelimit-limit-requests"] == "120"
    assert (rate.admitted, rate.refused) == (answered, len(refused))
    assert peer.count("/v1/chat/completions") == 6


def test_rate_limit_official_client_waits_retry_after_and_gets_through(peer: ModelPeer, url: str) -> None:
    peer.limit_rate(rpm=60)  # one a second
    peer.delay = 0.3  # and a provider's latency
    with openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=3) as client:
        first = client.chat.completions.create(model="gpt-4o-mini", messages=user("one"))
        started = time.monotonic()
        second = client.chat.completions.create(model="gpt-4o-mini", messages=user("two"))
    assert first.choices[0].message.content == "ok: one" and second.choices[0].message.content == "ok: two"
    assert time.monotonic() - started >= 0.5  # the client waited for the retry-after it was sent
    assert peer.rate.refused >= 1 and peer.rate.admitted == 2


def test_rate_limit_counts_tokens_per_minute(peer: ModelPeer, oai: openai.OpenAI) -> None:
    peer.limit_rate(tpm=600)  # 10 tokens a second, the bucket holds 10
    oai.chat.completions.create(model="gpt-4o-mini", messages=user("three words here"), max_tokens=5)  # 8 tokens
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model="gpt-4o-mini", messages=user("three words here"), max_tokens=5)
    assert info.value.type == "tokens" and "(TPM): Limit 600" in info.value.message
