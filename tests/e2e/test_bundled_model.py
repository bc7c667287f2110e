"""The bundled model, for real: zero-config pipelines, and the adapters against
a real llama.cpp server (OpenAI and Anthropic wire) and an Ollama-protocol
peer that answers with the real model."""

from __future__ import annotations

from collections.abc import Iterator

import ollama
import pytest

from flows.orchestration.flow import run_inline, run_orchestrated
from tasks.core.errors import ModelAuthError
from tasks.providers.llama_cpp import find_bundled_model, get_local_model
from tasks.steps.call_llm import LlmRequest, answer_large
from tasks.steps.call_slm import SlmRequest, answer_small
from tests.peers.llama_http import start_llama_http_server

pytestmark = pytest.mark.slow
LABELS = ["positive", "negative", "neutral"]
SERVER_KEY = "sk-llama-test-key-123456"


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    url, stop = start_llama_http_server(find_bundled_model(), 0, api_key=SERVER_KEY)
    yield url
    stop()


@pytest.mark.usefixtures("prefect")
@pytest.mark.parametrize(
    ("pipeline", "inputs", "field"),
    # "Say hello in French." would be answered in English, rejected and never cached: see test_check_answer_bundled.py
    [("answer", {"prompt": "Say hello."}, "text"), ("sentiment", {"text": "I love this phone."}, "label")],
)
async def test_pipelines_run_with_no_settings_at_all(pipeline, inputs, field):
    first = await run_orchestrated(pipeline, inputs)
    out = first.output
    assert set(out) >= {"text", "cache", "route", "model", "usage"}
    assert out["cache"] == "miss"
    assert out["model"] == "local/smollm2-135m"
    assert out["route"] in ("small", "large")
    assert out["usage"]["input_tokens"] > 0 and out["usage"]["output_tokens"] > 0
    if field == "label":
        assert out["label"] in LABELS
    second = await run_orchestrated(pipeline, inputs)
    assert second.output["cache"] == "hit"
    assert second.output[field] == out[field]
    assert all(second.nodes[n].status == "skipped" for n in ("small", "large", "store"))
    assert second.nodes["lookup"].status == "cache_hit"


async def test_label_calls_always_parse_on_the_local_model():
    for text in ["Fantastic!", "Worst purchase ever.", "It arrived on Tuesday.", "meh"]:
        answer = await answer_small(SlmRequest(prompt=text, labels=LABELS, max_tokens=16, provider="local"))
        assert answer.valid, answer.reason
        assert answer.label in LABELS
        assert answer.model == "local/smollm2-135m"


async def test_call_llm_against_a_real_openai_compatible_server(llama_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", llama_server + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", SERVER_KEY)
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "smollm2-135m")
    answer = await answer_large(LlmRequest(prompt="Name a colour.", max_tokens=12))
    assert answer.text.strip()
    assert answer.model == "openai/smollm2-135m"
    assert answer.usage.input_tokens > 0 and 0 < answer.usage.output_tokens <= 12
    labelled = await answer_large(LlmRequest(prompt="I hate waiting.", labels=LABELS, max_tokens=24))
    assert labelled.valid and labelled.label in LABELS


async def test_call_llm_gets_a_typed_error_without_the_key_from_a_real_server(llama_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", llama_server + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-abcdef123456")
    with pytest.raises(ModelAuthError) as info:
        await answer_large(LlmRequest(prompt="hi", max_tokens=4))
    assert "sk-wrong-key-abcdef123456" not in str(info.value)


async def test_call_llm_against_the_real_anthropic_compatible_endpoint(llama_server, monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", llama_server)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SERVER_KEY)
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "smollm2-135m")
    answer = await answer_large(LlmRequest(system="Be brief.", prompt="Name a fruit.", max_tokens=12))
    assert answer.text.strip()
    assert answer.model.startswith("anthropic/")
    assert answer.usage.output_tokens > 0


def _real_model_responder(protocol: str, body: dict) -> str:
    """The Ollama-protocol peer answers with the bundled model, honouring `format`."""
    schema = body.get("format") if isinstance(body.get("format"), dict) else None
    options = body.get("options") or {}
    completion = get_local_model().complete(
        body["messages"], max_tokens=int(options.get("num_predict", 32)), temperature=0.0, json_schema=schema
    )
    return completion.text


def test_ollama_peer_serving_the_real_model_with_the_official_client(peer):
    peer.responder = _real_model_responder
    client = ollama.Client(host=peer.url)
    schema = {"type": "object", "properties": {"label": {"enum": LABELS}}, "required": ["label"]}
    response = client.chat(
        model="smollm2", messages=[{"role": "user", "content": "Great product!"}], format=schema, options={"num_predict": 16}
    )
    assert response.message.content.strip().startswith("{")
    assert '"label"' in response.message.content


async def test_call_slm_on_ollama_wire_with_the_real_model(peer):
    peer.responder = _real_model_responder
    answer = await answer_small(SlmRequest(prompt="Terrible service.", labels=LABELS, max_tokens=16))
    assert answer.valid and answer.label in LABELS
    assert answer.model == "ollama/llama3.2:1b"
    sent = peer.requests[-1].json
    assert sent["format"]["properties"]["label"]["enum"] == LABELS


async def test_sentiment_end_to_end_on_ollama_wire_with_the_real_model(peer):
    peer.responder = _real_model_responder
    result = await run_inline("sentiment", {"text": "Absolutely wonderful, I recommend it."})
    assert result.output["label"] in LABELS
    assert result.output["route"] == "small"
    assert peer.count("/api/chat") == 1
