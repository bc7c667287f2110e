"""The large-model tier against the loopback peer: OpenAI and Anthropic wire, retries, typed errors, no leaked keys."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from tasks.core.errors import ConfigError, ModelAuthError, ModelRequestError, ModelTimeout, ModelUnavailable
from tasks.steps.call_llm import LlmRequest, answer_large, call_llm
from tests.conftest import API_KEY

CHAT = "/v1/chat/completions"
ANTHROPIC_KEY = "sk-ant-api03-test-abcdef0123456789"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def assert_no_key(exc: BaseException, caplog: pytest.LogCaptureFixture, key: str = API_KEY) -> None:
    for link in chain(exc):
        assert key not in str(link)
        assert key not in repr(link)
        assert key not in repr(link.args)
    assert key not in caplog.text


async def test_openai_answer(peer):
    peer.responder = lambda protocol, body: "hello there friend"
    answer = await answer_large(LlmRequest(system="Be kind.", prompt="Say hello nicely please"))
    assert answer.text == "hello there friend"
    assert answer.model == "openai/gpt-test"
    assert answer.tier == "large"
    assert answer.valid
    # the peer counts one token per word: system 2 + prompt 4 in, 3 out
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (6, 3)
    assert answer.latency_ms > 0
    [request] = peer.requests
    assert request.protocol == "openai" and request.path == CHAT
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.json["model"] == "gpt-test"
    assert request.json["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Say hello nicely please"},
    ]
    assert "response_format" not in request.json


async def test_task_function_and_node_model(peer):
    peer.responder = lambda protocol, body: "fine"
    answer = await call_llm(LlmRequest(prompt="How are you?", model="gpt-other", max_tokens=7, temperature=0.3))
    assert answer.model == "openai/gpt-other"
    body = peer.requests[0].json
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("gpt-other", 7, 0.3)


async def test_429_retry_after_is_honoured(peer):
    peer.responder = lambda protocol, body: "after the wait"
    peer.fail_next(429, headers={"Retry-After": "1"})
    started = time.monotonic()
    answer = await answer_large(LlmRequest(prompt="hi"))
    elapsed = time.monotonic() - started
    assert answer.text == "after the wait"
    assert peer.count(CHAT) == 2
    assert elapsed >= 0.95


async def test_503_is_retried_with_backoff(peer, caplog):
    peer.responder = lambda protocol, body: "back up"
    peer.fail_next(503, n=2)
    with caplog.at_level(logging.WARNING):
        answer = await answer_large(LlmRequest(prompt="hi"))
    assert answer.text == "back up"
    assert peer.count(CHAT) == 3
    assert "retry 1/3" in caplog.text and "retry 2/3" in caplog.text


async def test_retries_are_bounded(peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_MAX_ATTEMPTS", "2")
    peer.fail_next(500, n=3)
    with pytest.raises(ModelUnavailable) as caught:
        await answer_large(LlmRequest(prompt="hi"))
    assert "2 attempts" in str(caught.value)
    assert "500" in str(caught.value)
    assert caught.value.status == 500
    assert peer.count(CHAT) == 2
    assert peer.pending_failures == 1


async def test_retry_after_beyond_budget_is_a_timeout_without_waiting(peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_MAX_RETRY_SECONDS", "2")
    peer.fail_next(429, headers={"Retry-After": "30"})
    with pytest.raises(ModelTimeout) as caught:
        await answer_large(LlmRequest(prompt="hi"))
    assert "retry budget of 2s spent after 1 attempts" in str(caught.value)  # it did not wait the 30 s out
    assert "FRUGAL_LLM_MAX_RETRY_SECONDS" in str(caught.value)
    assert peer.count(CHAT) == 1


async def test_wrong_key_is_an_auth_error_without_the_key(peer, caplog):
    peer.api_key = "sk-the-right-key-that-we-do-not-have"
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ModelAuthError) as caught:
            await answer_large(LlmRequest(prompt="hi"))
    message = str(caught.value)
    assert "Incorrect API key provided" in message  # the provider's own words
    assert "OPENAI_API_KEY" in message  # and what to do
    assert caught.value.status == 401
    assert peer.count(CHAT) == 1  # not retried
    assert_no_key(caught.value, caplog)
    assert "sk-test" not in message


async def test_provider_error_echoing_the_key_is_redacted(peer, caplog):
    peer.fail_next(403, body={"error": {"message": f"key {API_KEY} is not allowed here", "type": "permission"}})
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ModelAuthError) as caught:
            await answer_large(LlmRequest(prompt="hi"))
    assert "is not allowed here" in str(caught.value)
    assert_no_key(caught.value, caplog)


async def test_bad_request_is_not_retried(peer):
    peer.fail_next(400, body={"error": {"message": "Unsupported value: 'temperature'", "type": "invalid_request_error"}})
    with pytest.raises(ModelRequestError) as caught:
        await answer_large(LlmRequest(prompt="hi"))
    assert type(caught.value) is ModelRequestError
    assert "Unsupported value: 'temperature'" in str(caught.value)
    assert caught.value.status == 400
    assert peer.count(CHAT) == 1


async def test_connection_refused_is_unavailable(peer, monkeypatch):
    port = closed_port()
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ModelUnavailable) as caught:
        await answer_large(LlmRequest(prompt="hi"))
    assert "cannot be reached" in str(caught.value)
    assert "4 attempts" in str(caught.value)
    assert peer.count() == 0


async def test_labels_constrain_the_request(peer):
    peer.responder = lambda protocol, body: '{"label": "negative"}'
    answer = await answer_large(LlmRequest(prompt="I hated it", labels=["positive", "negative"]))
    fmt = peer.requests[0].json["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"]["properties"]["label"]["enum"] == ["positive", "negative"]
    assert fmt["json_schema"]["schema"]["required"] == ["label"]
    assert (answer.valid, answer.label, answer.text) == (True, "negative", "negative")


async def test_answer_outside_the_labels_is_invalid(peer):
    peer.responder = lambda protocol, body: '{"label": "meh"}'
    answer = await answer_large(LlmRequest(prompt="It was fine", labels=["positive", "negative"]))
    assert answer.valid is False
    assert answer.label is None
    assert answer.reason is not None and "meh" in answer.reason


async def test_anthropic_answer(peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", peer.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "claude-test")
    peer.api_key = ANTHROPIC_KEY
    peer.responder = lambda protocol, body: "bonjour mon ami"
    answer = await answer_large(LlmRequest(system="Answer in French.", prompt="Say hello to me"))
    assert answer.text == "bonjour mon ami"
    assert answer.model == "anthropic/claude-test"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (7, 3)
    [request] = peer.requests
    assert (request.protocol, request.path) == ("anthropic", "/v1/messages")
    assert request.headers["x-api-key"] == ANTHROPIC_KEY
    assert request.headers["anthropic-version"]
    assert "authorization" not in request.headers
    assert request.json["system"] == "Answer in French."
    assert request.json["messages"] == [{"role": "user", "content": "Say hello to me"}]


async def test_anthropic_wrong_key(peer, monkeypatch, caplog):
    monkeypatch.setenv("FRUGAL_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", peer.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    peer.api_key = "sk-ant-another-one"
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ModelAuthError) as caught:
            await answer_large(LlmRequest(prompt="hi"))
    assert "invalid x-api-key" in str(caught.value)
    assert "ANTHROPIC_API_KEY" in str(caught.value)
    assert_no_key(caught.value, caplog, ANTHROPIC_KEY)


async def test_missing_openai_key_with_default_url_is_a_config_error(monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_PROVIDER", "openai")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        await answer_large(LlmRequest(prompt="hi"))


async def test_missing_anthropic_key_is_a_config_error(monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_PROVIDER", "anthropic")
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        await answer_large(LlmRequest(prompt="hi"))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "not a number", "retry-after": "1"}, 1.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header_forms(headers, expected):
    """A malformed Retry-After falls back to our own backoff instead of failing the call."""
    import httpx

    from tasks.providers.retry import retry_after_seconds

    assert retry_after_seconds(httpx.Headers(headers)) == expected
