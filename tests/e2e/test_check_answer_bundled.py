"""The answer check with the real bundled model (SmolLM2-135M): its answers judged, the bad ones escalated."""

from __future__ import annotations

import pytest

from flows.orchestration.flow import run_inline
from tasks.checks.confidence import label_confidence
from tasks.core.model_request import ModelRequest
from tasks.providers.llama_cpp import get_local_model
from tasks.steps.check_answer import CheckRequest, judge
from tests.benchmarks.bench_quality import LABEL_ALTERNATIVES, LABELS, SENTIMENT_SYSTEM, small_answer

pytestmark = pytest.mark.slow
FRENCH = "Bonjour à tous, je suis très content de vous voir aujourd'hui."


async def test_the_bundled_models_english_answer_to_a_french_request_escalates(peer, redis_cache, monkeypatch):
    """SmolLM2 answers "Say hello in French." in English: rejected (language), escalated, never cached."""
    monkeypatch.setenv("FRUGAL_SLM_PROVIDER", "local")
    peer.responder = lambda protocol, body: FRENCH
    inputs = {"prompt": "Say hello in French."}
    first = await run_inline("answer", inputs)
    out = first.output
    assert (out["text"], out["route"], out["accepted"]) == (FRENCH, "large", True)
    assert (out["reason"], out["escalated_from"]) == ("language", "local/smollm2-135m")
    second = await run_inline("answer", inputs)
    assert (second.output["cache"], second.output["text"]) == ("hit", FRENCH)
    assert peer.count("/v1/chat/completions") == 1


def test_the_bundled_models_log_probabilities_give_a_label_confidence():
    """With the local model's own log-probabilities (100 alternatives, as the benchmark asks), the chosen
    label's probability and its runner-up are read from the tokens, and the verdict follows the thresholds."""
    model = get_local_model()
    request = ModelRequest(system=SENTIMENT_SYSTEM, prompt="Best ramen I've had outside Tokyo.", labels=LABELS, max_tokens=16)
    answer = small_answer(model, request, LABEL_ALTERNATIVES)
    assert answer.label in LABELS and answer.logprobs
    conf = label_confidence(answer.label, LABELS, answer.logprobs)
    assert conf is not None and conf.runner_up in LABELS and 0 < conf.prob < 1
    strict = judge(CheckRequest(answer=answer, labels=LABELS, min_label_prob=conf.prob + 0.01))
    assert (strict.accepted, strict.reason) == (False, "low_label_prob")
    loose = judge(CheckRequest(answer=answer, labels=LABELS, min_label_prob=0.0, min_label_margin=None))
    assert loose.accepted and loose.scores["label_prob"] == round(conf.prob, 4)
