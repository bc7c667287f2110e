"""The small-model tier on the Ollama wire, and its escalation to the large model in the pipelines."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from flows.orchestration.flow import run_inline
from tasks.core.constraints import label_schema
from tasks.core.errors import ModelRequestError, ModelUnavailable, StepError
from tasks.steps.call_slm import SlmRequest, answer_small, call_slm

PROJECT = Path(__file__).resolve().parents[3]
LABELS = ["positive", "negative", "neutral"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_ollama_answer(peer):
    peer.responder = lambda protocol, body: "the sky is blue"
    answer = await answer_small(SlmRequest(system="Be brief.", prompt="What colour is the sky?"))
    assert answer.text == "the sky is blue"
    assert answer.model == "ollama/llama3.2:1b"
    assert answer.tier == "small"
    assert answer.valid
    # prompt_eval_count: system 2 + prompt 5 words; eval_count: 4 words
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (7, 4)
    [request] = peer.requests
    assert (request.protocol, request.path) == ("ollama", "/api/chat")
    assert request.json["model"] == "llama3.2:1b"
    assert request.json["stream"] is False
    assert request.json["messages"][0] == {"role": "system", "content": "Be brief."}
    assert not request.json.get("format")


async def test_model_and_options_are_sent(peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_SLM_MODEL", "qwen2.5:0.5b")
    answer = await call_slm(SlmRequest(prompt="hi", max_tokens=9, temperature=0.5))
    assert answer.model == "ollama/qwen2.5:0.5b"
    body = peer.requests[0].json
    assert body["model"] == "qwen2.5:0.5b"
    assert body["options"]["num_predict"] == 9
    assert body["options"]["temperature"] == 0.5


async def test_labels_send_the_schema_as_format(peer):
    peer.responder = lambda protocol, body: '{"label":"positive"}'
    answer = await answer_small(SlmRequest(prompt="I loved it", labels=LABELS))
    fmt = peer.requests[0].json["format"]
    assert fmt == label_schema(LABELS)
    assert fmt["properties"]["label"]["enum"] == LABELS
    assert (answer.valid, answer.label, answer.text) == (True, "positive", "positive")
    assert answer.reason is None


async def test_answer_outside_the_labels_is_invalid(peer):
    peer.responder = lambda protocol, body: "banana"
    answer = await answer_small(SlmRequest(prompt="I loved it", labels=LABELS))
    assert answer.valid is False
    assert answer.label is None
    assert answer.reason is not None and "banana" in answer.reason


async def test_ollama_down_is_unavailable(peer, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ModelUnavailable, match="OLLAMA_HOST"):
        await answer_small(SlmRequest(prompt="hi"))


async def test_unknown_model_says_ollama_pull(peer, monkeypatch):
    peer.ollama_models = ["llama3.2:1b"]
    monkeypatch.setenv("FRUGAL_SLM_MODEL", "tinyllama:nope")
    with pytest.raises(ModelRequestError) as caught:
        await answer_small(SlmRequest(prompt="hi"))
    assert "ollama pull tinyllama:nope" in str(caught.value)
    assert caught.value.status == 404


# -- escalation in the pipelines -------------------------------------------------------------------


async def test_sentiment_escalates_an_invalid_small_answer(peer, redis_cache):
    peer.responder = lambda protocol, body: "banana" if protocol == "ollama" else '{"label": "negative"}'
    text = "The delivery was late and the box was crushed."
    first = await run_inline("sentiment", {"text": text})
    assert first.output["label"] == "negative"
    assert first.output["route"] == "large"
    assert first.output["escalated"] is True
    assert first.output["cache"] == "miss"
    assert first.output["model"] == "openai/gpt-test"
    assert (peer.count("/api/chat"), peer.count("/v1/chat/completions")) == (1, 1)
    # the large model got the same constraint
    fmt = peer.requests[-1].json["response_format"]["json_schema"]["schema"]
    assert fmt["properties"]["label"]["enum"] == LABELS

    second = await run_inline("sentiment", {"text": text})
    assert second.output["cache"] == "hit"
    assert second.output["label"] == "negative"
    assert second.output["route"] == "large"
    assert (peer.count("/api/chat"), peer.count("/v1/chat/completions")) == (1, 1)


async def test_sentiment_valid_small_answer_is_not_escalated(peer, redis_cache):
    peer.responder = lambda protocol, body: '{"label": "positive"}'
    result = await run_inline("sentiment", {"text": "Lovely little shop."})
    assert (result.output["label"], result.output["route"], result.output["escalated"]) == ("positive", "small", False)
    assert peer.count("/v1/chat/completions") == 0


async def test_answer_escalates_when_ollama_is_down(peer, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{closed_port()}")
    peer.responder = lambda protocol, body: "four"
    result = await run_inline("answer", {"prompt": "What is 2+2?"})
    assert result.output["text"] == "four"
    assert result.output["route"] == "large"
    assert result.output["model"] == "openai/gpt-test"
    assert result.output["escalated"] is True
    assert result.nodes["small"].status == "failed"
    assert "OLLAMA_HOST" in (result.nodes["small"].error or "")
    assert peer.count("/v1/chat/completions") == 1


async def test_answer_with_small_on_error_fail_stops(peer, monkeypatch, tmp_path):
    spec = yaml.safe_load((PROJECT / "deployments" / "answer.yaml").read_text())
    spec["nodes"]["small"]["on_error"] = "fail"
    path = tmp_path / "answer_strict.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(StepError) as caught:
        await run_inline(str(path), {"prompt": "What is 2+2?"})
    assert caught.value.node == "small"
    assert "node 'small'" in str(caught.value)
    assert "OLLAMA_HOST" in str(caught.value)
    assert peer.count() == 0
