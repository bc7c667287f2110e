"""The request key: stable across processes, blind to what must not matter, sensitive to the rest."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flows.orchestration.flow import run_inline
from tasks.steps import BUILTIN_STEPS
from tasks.steps.call_llm import LlmRequest, call_llm, prepare_large
from tasks.steps.call_slm import SlmRequest, call_slm, prepare_small
from tasks.steps.hash_prompt import HashRequest, hash_prompt, request_key
from tests.conftest import API_KEY

PROJECT = Path(__file__).resolve().parents[3]

BASE: dict[str, Any] = {
    "namespace": "shop",
    "tier": "auto",
    "models": {"small": "ollama/llama3.2:1b", "large": "openai/gpt-4o-mini"},
    "system": "You are terse.",
    "prompt": "Summarise: the café opens at nine.",
    "messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}],
    "params": {
        "temperature": 0.2,
        "max_tokens": 256,
        "labels": ["positive", "negative"],
        "schema": {"type": "object", "properties": {"label": {"type": "string"}}},
    },
    "pipeline": "answer",
    "version": "1",
}


def key_of(data: dict[str, Any]) -> str:
    return request_key(HashRequest.model_validate(data))


def variant(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split("__")
        for name in parents:
            target = target[name]
        target[last] = value
    return data


def test_key_is_64_hex_chars():
    key = key_of(BASE)
    assert len(key) == 64
    assert all(c in "0123456789abcdef" for c in key)


async def test_task_returns_the_same_key():
    assert await hash_prompt(HashRequest.model_validate(BASE)) == key_of(BASE)


async def test_with_group_the_key_and_the_key_without_the_user_message():
    keys = await hash_prompt(HashRequest.model_validate({**BASE, "group": True}))
    assert keys == {"exact": key_of(BASE), "group": key_of({**BASE, "prompt": None})}
    other = await hash_prompt(HashRequest.model_validate({**variant(prompt="Another prompt"), "group": True}))
    assert other["exact"] != keys["exact"] and other["group"] == keys["group"]  # worded otherwise: the same group
    elsewhere = await hash_prompt(HashRequest.model_validate({**variant(system="Answer in French."), "group": True}))
    assert elsewhere["group"] != keys["group"]  # every other part of the request counts


def test_same_request_same_key_in_another_process():
    requests = [BASE, variant(prompt="Another prompt"), variant(params={"labels": ["a", "b"], "temperature": 0})]
    script = (
        "import json, sys\n"
        "from tasks.steps.hash_prompt import HashRequest, request_key\n"
        "print(json.dumps([request_key(HashRequest.model_validate(r)) for r in json.loads(sys.stdin.read())]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(requests),
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env=env,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [key_of(r) for r in requests]


@pytest.mark.parametrize(
    "same",
    [
        pytest.param(
            variant(
                params={
                    "schema": {"properties": {"label": {"type": "string"}}, "type": "object"},
                    "labels": ["positive", "negative"],
                    "max_tokens": 256,
                    "temperature": 0.2,
                }
            ),
            id="param-key-order",
        ),
        pytest.param(variant(params__seed=None, params__top_p=None), id="none-params"),
        pytest.param(variant(models={"large": "openai/gpt-4o-mini", "small": "ollama/llama3.2:1b"}), id="models-key-order"),
        pytest.param(variant(prompt="  Summarise: the café opens at nine.\n\n"), id="prompt-whitespace"),
        pytest.param(variant(system="\tYou are terse.  "), id="system-whitespace"),
        pytest.param(variant(prompt="Summarise: the cafe\u0301 opens at nine."), id="unicode-nfd"),
    ],
)
def test_key_ignores_what_does_not_matter(same):
    assert key_of(same) == key_of(BASE)


def test_key_ignores_line_endings():
    lf = variant(prompt="line one\nline two", system="rule one\nrule two")
    crlf = variant(prompt="line one\r\nline two", system="rule one\r\nrule two")
    assert key_of(crlf) == key_of(lf)


def test_key_ignores_integral_float_vs_int():
    """temperature 0 and 0.0 (or max_tokens 256 and 256.0) are one request: same answer, same key."""
    ints = variant(params__temperature=0, params__max_tokens=256)
    floats = variant(params__temperature=0.0, params__max_tokens=256.0)
    assert key_of(floats) == key_of(ints)


async def test_temperature_zero_as_float_hits_the_cache(peer):
    peer.responder = lambda protocol, body: "four"
    first = await run_inline("answer", {"prompt": "What is 2+2?", "temperature": 0})
    second = await run_inline("answer", {"prompt": "What is 2+2?", "temperature": 0.0})
    assert (first.output["cache"], second.output["cache"]) == ("miss", "hit")
    assert peer.count("/api/chat") == 1


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(variant(namespace="other-shop"), id="namespace"),
        pytest.param(variant(tier="large"), id="tier"),
        pytest.param(variant(models__small="ollama/qwen2.5:0.5b"), id="small-model"),
        pytest.param(variant(models__large="openai/gpt-4o"), id="large-model"),
        pytest.param(variant(system="You are verbose."), id="system"),
        pytest.param(variant(system=None), id="no-system"),
        pytest.param(variant(prompt="Summarise: the café opens at ten."), id="prompt"),
        pytest.param(variant(messages=[{"role": "user", "content": "hello"}]), id="messages-dropped"),
        pytest.param(
            variant(messages=[{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hey"}]),
            id="messages-content",
        ),
        pytest.param(
            variant(messages=[{"role": "assistant", "content": "hello"}, {"role": "assistant", "content": "hi"}]),
            id="messages-role",
        ),
        pytest.param(variant(params__temperature=0.7), id="temperature"),
        pytest.param(variant(params__max_tokens=257), id="max_tokens"),
        pytest.param(variant(params__labels=["positive", "negative", "neutral"]), id="labels"),
        pytest.param(variant(params__labels=["negative", "positive"]), id="labels-order"),
        pytest.param(variant(params__schema={"type": "object", "properties": {"label": {"type": "integer"}}}), id="schema"),
        pytest.param(variant(params__task="summary"), id="new-param"),
        pytest.param(variant(pipeline="sentiment"), id="pipeline"),
        pytest.param(variant(version="2"), id="version"),
    ],
)
def test_key_changes_with_what_matters(changed):
    assert key_of(changed) != key_of(BASE)


def test_prompt_is_not_confused_with_a_message():
    """The prompt is the last user message: moving text between roles changes the key."""
    as_prompt = variant(messages=None, system=None, prompt="hello")
    as_system = variant(messages=None, system="hello", prompt="")
    assert key_of(as_prompt) != key_of(as_system)


# -- Prefect cache-policy identity of the model calls ---------------------------------------------


def _policy_key(step: Any, request: Any) -> str:
    """The key of the Prefect result cache of the step's task runs."""
    task = next(s for s in BUILTIN_STEPS if s.fn is step).task
    key = task.cache_policy.compute_key(None, {"request": request}, {})
    assert isinstance(key, str) and key
    return key


def test_llm_identity_never_holds_the_api_key(monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    request = LlmRequest(system="Be brief.", prompt="What is 2+2?", labels=["4", "5"])
    prepared = prepare_large(request)
    dumped = prepared.identity.canonical.decode()
    assert API_KEY not in dumped
    assert json.loads(dumped)["models"] == {"large": "openai/gpt-4o-mini"}

    anthropic_key = "sk-ant-api03-secret-value-0000"
    monkeypatch.setenv("FRUGAL_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("ANTHROPIC_API_KEY", anthropic_key)
    dumped = prepare_large(request).identity.canonical.decode()
    assert json.loads(dumped)["models"] == {"large": "anthropic/claude-haiku-4-5"}
    assert anthropic_key not in dumped
    assert API_KEY not in dumped


def test_llm_identity_and_policy_key_follow_the_model(monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    request = LlmRequest(prompt="What is 2+2?")
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-a")
    first, first_key = prepare_large(request).identity, _policy_key(call_llm, request)
    assert _policy_key(call_llm, request) == first_key  # deterministic
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-b")
    assert prepare_large(request).identity != first
    assert _policy_key(call_llm, request) != first_key
    # a model named on the node wins over the setting, and is part of the key too
    assert _policy_key(call_llm, LlmRequest(prompt="What is 2+2?", model="gpt-c")) != _policy_key(call_llm, request)
    # back to the first model with another API key: the same key, the key is not part of it
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-a")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-another-key-999999")
    assert _policy_key(call_llm, request) == first_key


def test_slm_identity_follows_the_model(monkeypatch):
    monkeypatch.setenv("FRUGAL_SLM_PROVIDER", "ollama")
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    request = SlmRequest(prompt="Label this.", labels=["a", "b"])
    monkeypatch.setenv("FRUGAL_SLM_MODEL", "llama3.2:1b")
    first, first_key = prepare_small(request), _policy_key(call_slm, request)
    assert first.choice.model_id == "ollama/llama3.2:1b"
    monkeypatch.setenv("FRUGAL_SLM_MODEL", "qwen2.5:0.5b")
    assert prepare_small(request).choice.model_id == "ollama/qwen2.5:0.5b"
    assert _policy_key(call_slm, request) != first_key
    assert _policy_key(call_slm, request) != _policy_key(call_llm, LlmRequest(prompt="Label this.", labels=["a", "b"]))
