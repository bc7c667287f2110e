"""Providers as objects: the registry, injected clients, log-probabilities, finish reasons, deadlines, retries."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from tasks.core.errors import ConfigError, ModelTimeout
from tasks.core.settings import get_settings
from tasks.providers import ChatCall, get_provider, provider_names, register_provider
from tasks.providers.openai import OpenAIProvider
from tasks.providers.retry import RetryPolicy, with_retries
from tasks.providers.tiers import probe_tiers, small_choice
from tasks.steps.call_llm import LlmRequest, answer_large, prepare_large
from tasks.steps.call_slm import SlmRequest, answer_small, prepare_small
from tests.conftest import API_KEY

CHAT = "/v1/chat/completions"
LABELS = ["positive", "negative"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the registry -----------------------------------------------------------------------------------


def test_builtins_are_registered_by_name():
    assert {"openai", "anthropic", "ollama", "local"} <= set(provider_names())


async def test_a_registered_provider_answers_a_node_that_names_it(peer):
    """An extension registers the way the built-ins do, and a node picks it by name: no branch on the name."""
    register_provider("peer-chat", lambda settings, endpoint: OpenAIProvider(peer.url + "/v1", "sk-other-0000000000"))
    peer.responder = lambda protocol, body: "from the extension"
    answer = await answer_large(LlmRequest(prompt="hi", provider="peer-chat", model="m-ext"))
    assert (answer.text, answer.model) == ("from the extension", "openai/m-ext")
    assert peer.requests[0].headers["authorization"] == "Bearer sk-other-0000000000"


def test_unknown_provider_is_a_config_error_listing_the_known_ones():
    with pytest.raises(ConfigError, match="no model provider named 'nope'.*ollama"):
        get_provider("nope")


def test_one_provider_object_per_settings_snapshot(peer, monkeypatch):
    first = get_provider("openai")
    assert get_provider("openai") is first
    monkeypatch.setenv("FRUGAL_LLM_TIMEOUT", "7")
    changed = get_provider("openai")
    assert changed is not first and changed.policy.attempt_timeout == 7  # type: ignore[attr-defined]


async def test_injected_http_client_is_used():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"model": "m", "choices": [{"message": {"content": "injected"}, "finish_reason": "stop"}]}
        return httpx.Response(200, json=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        provider = OpenAIProvider("http://models.invalid/v1", API_KEY, http_client=client)
        completion = await provider.complete(
            ChatCall(model="m", messages=[{"role": "user", "content": "x"}], max_tokens=5, temperature=0)
        )
    assert completion.text == "injected" and completion.usage.estimated
    assert str(seen[0].url) == "http://models.invalid/v1/chat/completions"


# -- one request identity ---------------------------------------------------------------------------


def test_a_request_is_prepared_once_per_settings(peer, monkeypatch):
    request = LlmRequest(prompt="What is 2+2?")
    first = prepare_large(request)
    assert prepare_large(request) is first  # the cache policy, single-flight and the call share it
    assert json.loads(first.identity.canonical)["models"] == {"large": "openai/gpt-test"}
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-other")
    again = prepare_large(request)
    assert again is not first and again.identity.key != first.identity.key
    assert prepare_large(request.model_copy()) is not again  # a copy prepares itself


# -- log-probabilities, finish reasons, served model ------------------------------------------------


async def test_openai_logprobs_when_asked(peer):
    peer.responder = lambda protocol, body: "all good"
    peer.token_logprob = -0.3
    answer = await answer_large(LlmRequest(prompt="hi", logprobs=True))
    body = peer.requests[0].json
    assert (body["logprobs"], body["top_logprobs"]) == (True, 5)
    assert answer.logprobs is not None
    assert [(t.token, t.logprob) for t in answer.logprobs] == [("all", -0.3), (" good", -0.3)]
    assert [a.token for a in answer.logprobs[0].top] == ["all", " alt1", " alt2", " alt3", " alt4"]
    plain = await answer_large(LlmRequest(prompt="hello"))
    assert plain.logprobs is None and "logprobs" not in peer.requests[1].json


async def test_label_requests_always_ask_for_logprobs(peer):
    peer.responder = lambda protocol, body: '{"label": "positive"}'
    large = await answer_large(LlmRequest(prompt="I loved it", labels=LABELS))
    small = await answer_small(SlmRequest(prompt="I loved it", labels=LABELS))
    openai_body, ollama_body = peer.requests[0].json, peer.requests[1].json
    assert (openai_body["logprobs"], openai_body["top_logprobs"]) == (True, 5)
    assert (ollama_body["logprobs"], ollama_body["top_logprobs"]) == (True, 5)
    assert large.label == small.label == "positive"
    assert large.logprobs and small.logprobs
    assert "".join(t.token for t in small.logprobs) == '{"label": "positive"}'


async def test_finish_reasons_are_normalised(peer, monkeypatch):
    peer.responder = lambda protocol, body: "one two three four"
    assert (await answer_large(LlmRequest(prompt="a", max_tokens=2))).finish_reason == "length"
    assert (await answer_small(SlmRequest(prompt="b", max_tokens=2))).finish_reason == "length"
    assert (await answer_small(SlmRequest(prompt="c"))).finish_reason == "stop"
    monkeypatch.setenv("FRUGAL_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", peer.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-test-abcdef0123456789")
    assert (await answer_large(LlmRequest(prompt="d", max_tokens=2))).finish_reason == "length"  # max_tokens
    assert (await answer_large(LlmRequest(prompt="e"))).finish_reason == "stop"  # end_turn


async def test_the_model_asked_for_is_recorded_with_the_served_one_beside_it(peer):
    """A llama.cpp server names its model file: the answer keeps the model asked for (it has a price)."""
    peer.served_model = "/models/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"
    answer = await answer_large(LlmRequest(prompt="hi", model="gpt-4o-mini"))
    assert answer.model == "openai/gpt-4o-mini"
    assert answer.served_model == "openai//models/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"
    assert answer.cost_usd is not None


# -- deadlines and retries --------------------------------------------------------------------------


async def test_a_trickling_openai_server_fails_with_model_timeout(peer, monkeypatch):
    """One byte a second never trips a per-read timeout; the attempt's total deadline does."""
    monkeypatch.setenv("FRUGAL_LLM_TIMEOUT", "1")
    monkeypatch.setenv("FRUGAL_LLM_MAX_RETRY_SECONDS", "2.5")
    peer.trickle = 1.0
    with pytest.raises(ModelTimeout) as caught:
        await answer_large(LlmRequest(prompt="hi"))
    assert "FRUGAL_LLM" in str(caught.value)
    assert peer.count(CHAT) >= 1


async def test_a_trickling_ollama_fails_with_model_timeout(peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_SLM_TIMEOUT", "1")
    monkeypatch.setenv("FRUGAL_LLM_MAX_RETRY_SECONDS", "2.5")
    peer.trickle = 1.0
    with pytest.raises(ModelTimeout) as caught:
        await answer_small(SlmRequest(prompt="hi"))
    assert "FRUGAL_SLM_TIMEOUT" in str(caught.value) or "FRUGAL_LLM_MAX_RETRY_SECONDS" in str(caught.value)


async def test_the_retry_budget_is_a_hard_ceiling_across_attempts(peer, monkeypatch):
    """Attempts that each time out are not retried past the budget, whatever the attempt count allows."""
    monkeypatch.setenv("FRUGAL_LLM_TIMEOUT", "1")
    monkeypatch.setenv("FRUGAL_LLM_MAX_ATTEMPTS", "50")
    monkeypatch.setenv("FRUGAL_LLM_MAX_RETRY_SECONDS", "1.5")
    peer.delay = 30
    with pytest.raises(ModelTimeout, match="retry budget|did not answer"):
        await answer_large(LlmRequest(prompt="hi"))
    assert peer.count(CHAT) <= 2


async def test_ollama_transient_errors_are_retried(peer):
    peer.responder = lambda protocol, body: "after a hiccup"
    peer.fail_next(503)
    answer = await answer_small(SlmRequest(prompt="hi"))
    assert answer.text == "after a hiccup"
    assert peer.count("/api/chat") == 2


async def test_a_deadline_ends_the_wait_for_any_attempt():
    """The deadline wraps the whole attempt, whatever it awaits."""
    never = asyncio.Event()

    async def attempt() -> None:
        await never.wait()

    with pytest.raises(ModelTimeout, match="did not answer within"):
        await with_retries(attempt, RetryPolicy(max_attempts=1, attempt_timeout=0.05, budget=5), "test")


# -- the small tier's probe ---------------------------------------------------------------------------


async def test_auto_small_tier_probes_ollama_once_without_blocking(peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_SLM_PROVIDER", "auto")
    await probe_tiers()
    assert small_choice(get_settings().slm).provider == "ollama"
    assert peer.count("/api/version") <= 1
    await probe_tiers()
    assert peer.count("/api/version") <= 1  # once per process
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{closed_port()}")
    await probe_tiers()
    assert small_choice(get_settings().slm).provider == "local"
    assert prepare_small(SlmRequest(prompt="x")).choice.provider == "local"
