"""The shadow audit, end to end on the real pipelines, the real Redis (or SQLite) ledger and the loopback
peer: sampled small answers are re-asked of the large model after the caller has its answer, judged,
recorded as audit entries, within the day's budget; an audit never delays or fails an answer."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from decimal import Decimal

import pytest

from flows import ledger
from flows.cli.main import main
from flows.ledger import audit
from flows.ledger.audit import AUDITOR, RUBRIC, AuditCounts, sampled
from flows.ledger.labels import router_labels
from flows.ledger.observer import config
from flows.orchestration.flow import run_inline

D = Decimal
CHAT = "/v1/chat/completions"


@pytest.fixture(autouse=True)
def _fresh_auditor(monkeypatch):
    monkeypatch.setattr(AUDITOR, "counts", AuditCounts())
    yield
    assert AUDITOR.drain(30), "an audit of this test is still running"


@pytest.fixture
def audited(peer, monkeypatch):
    """Every small answer audited; a priced large model ($0.15 in, $0.60 out per million)."""
    monkeypatch.setenv("FRUGAL_AUDIT_RATE", "1")
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-4o-mini")
    return peer


def is_judge(body) -> bool:
    return any(RUBRIC in str(m.get("content")) for m in body.get("messages", []))


def entries():
    assert AUDITOR.drain(30)
    assert ledger.flush()
    return ledger.read_entries()


async def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# -- sampling ------------------------------------------------------------------------------


def test_sampling_is_deterministic_per_request_key():
    keys = [f"request-{i}" for i in range(1000)]
    half = [k for k in keys if sampled(k, 0.5)]
    quarter = {k for k in keys if sampled(k, 0.25)}
    # fixed keys, fixed hash: exactly these, every time, in any process (binomial means: 500, 250, 20)
    assert len(half) == 517 and half[:5] == ["request-0", "request-2", "request-4", "request-6", "request-7"]
    assert len(quarter) == 284
    assert quarter <= set(half)  # a lower rate audits a subset: raising it never drops an audited request
    assert [k for k in keys if sampled(k, 0.5)] == half
    assert not any(sampled(k, 0) for k in keys) and all(sampled(k, 1) for k in keys)
    two_percent = sum(sampled(k, 0.02) for k in keys)
    assert two_percent == 18


# -- the audit runs after the answer -----------------------------------------------------------


async def test_the_answer_returns_before_the_audit_large_call_completes(audited, redis_cache):
    gate = threading.Event()

    def respond(protocol, body):
        if protocol == "ollama":
            return "four"
        if is_judge(body):
            return '{"label": "agree"}'
        assert gate.wait(30), "the test never opened the gate"
        return "4"

    audited.responder = respond
    result = await run_inline("answer", {"prompt": "What is 2+2?"})
    # the caller has its answer, from the small model, while the audit's large call is held at the peer
    assert (result.output["text"], result.output["route"]) == ("four", "small")
    await wait_for(lambda: audited.count(CHAT) == 1, "the audit's large call")
    assert AUDITOR.pending == 1 and not gate.is_set()
    assert ledger.flush() and [e.kind for e in ledger.read_entries()] == ["call"]  # no audit entry yet
    gate.set()

    call, check = entries()
    assert audited.count(CHAT) == 2  # the large answer, then the rubric judge
    assert (check.kind, check.audit_of, check.audited_model, check.model) == ("audit", call.id, call.model, "openai/gpt-4o-mini")
    assert (check.agreed, check.judged_by, check.key) == (True, "rubric", call.key)
    assert call.key is not None and len(call.key) == 64
    assert check.cost > 0 and check.counterfactual is None and check.savings is None
    assert AUDITOR.counts.done == 1

    assert main(["report"]) == 0


async def test_the_judge_sees_the_request_and_both_answers(audited, redis_cache):
    judged = []

    def respond(protocol, body):
        if protocol == "ollama":
            return "Paris is the capital."
        if is_judge(body):
            judged.append(body)
            return '{"label": "disagree"}'
        return "The capital of France is Paris."

    audited.responder = respond
    await run_inline("answer", {"prompt": "Capital of France?"})
    [_, check] = entries()
    assert check.agreed is False
    [body] = judged
    text = body["messages"][-1]["content"]
    assert "Capital of France?" in text and "Paris is the capital." in text and "The capital of France is Paris." in text
    assert body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == ["agree", "disagree"]


async def test_labels_are_judged_exactly_without_a_judge_call(audited, redis_cache, capsys):
    audited.responder = lambda protocol, body: '{"label": "positive"}' if protocol == "ollama" else '{"label": "negative"}'
    result = await run_inline("sentiment", {"text": "I love it"})
    assert result.output["label"] == "positive"  # the audit changes nothing
    call, check = entries()
    assert audited.count(CHAT) == 1
    assert (check.agreed, check.judged_by) == (False, "label")
    assert check.cost == D("0.00000465")  # 23 tokens in, 2 out, at gpt-4o-mini's price
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    assert "audits (not in cost): 1, $0.000005: 0 agreed, 1 disagreed, 0 not judged" in out
    assert "sentiment: saved" in out and "0.0 % agreement with the large model (n=1, 95 % interval 0.0-79.3 %)" in out


async def test_a_failing_audit_is_only_logged(audited, redis_cache, caplog):
    audited.api_key = "sk-another-key"  # the large call is refused (401): the audit fails, nothing else
    audited.responder = lambda protocol, body: "four"
    with caplog.at_level(logging.WARNING, logger="frugal"):
        result = await run_inline("answer", {"prompt": "What is 2+2?"})
        assert result.output["text"] == "four"
        [call] = entries()
    assert call.kind == "call" and AUDITOR.counts.failed == 1
    assert "audit of " in caplog.text and "the answer was not affected" in caplog.text
    assert "sk-another-key" not in caplog.text and "sk-test" not in caplog.text


async def test_rejected_small_answers_are_not_audited(audited, redis_cache):
    audited.responder = lambda protocol, body: "maybe" if protocol == "ollama" else '{"label": "positive"}'
    result = await run_inline("sentiment", {"text": "I love it"})
    assert result.output["escalated"] is True
    small, large = entries()
    assert (small.verdict, small.replaced_by, small.reject_reason) == ("rejected", "large", "invalid")  # the check's reason
    assert audited.count(CHAT) == 1 and AUDITOR.counts.queued == 0


# -- bounds: budget and queue ------------------------------------------------------------------


@pytest.mark.parametrize("store", ["redis", "sqlite"])
async def test_audits_stop_when_the_days_budget_is_spent(audited, request, monkeypatch, store):
    if store == "redis":
        request.getfixturevalue("redis_cache")
    monkeypatch.setenv("FRUGAL_AUDIT_BUDGET_USD", "0.0000093")  # two audits of 0.00000465
    audited.responder = lambda protocol, body: '{"label": "positive"}'
    for text in ("I love it", "I like it", "It is fine", "It was ok"):  # 3 words each: 23 tokens in
        await run_inline("sentiment", {"text": text})
        assert AUDITOR.drain(30)  # one after the other: the budget is read before each audit
    checks = [e for e in entries() if e.kind == "audit"]
    assert len(checks) == 2 and sum(e.cost for e in checks) == D("0.0000093")
    assert (AUDITOR.counts.done, AUDITOR.counts.over_budget) == (2, 2)
    assert audited.count(CHAT) == 2
    assert AUDITOR.budget.spent(config().target) == D("0.0000093")


async def test_the_queue_is_bounded(audited, redis_cache, monkeypatch):
    monkeypatch.setattr(audit, "MAX_QUEUED", 1)
    gate = threading.Event()

    def respond(protocol, body):
        if protocol == "openai":
            assert gate.wait(30)
        return '{"label": "positive"}'

    audited.responder = respond
    for text in ("I love it", "I like it", "It is great"):
        result = await run_inline("sentiment", {"text": text})
        assert result.output["label"] == "positive"
    assert (AUDITOR.counts.queued, AUDITOR.counts.dropped) == (1, 2)
    gate.set()
    assert len([e for e in entries() if e.kind == "audit"]) == 1


async def test_audit_is_off_by_default(peer, redis_cache, monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-4o-mini")
    peer.responder = lambda protocol, body: "four"
    await run_inline("answer", {"prompt": "What is 2+2?"})
    assert [e.kind for e in entries()] == ["call"] and AUDITOR.counts.queued == 0


# -- batches and orchestrated runs ---------------------------------------------------------------


async def test_batch_items_are_audited(audited, redis_cache, tmp_path):
    audited.responder = lambda protocol, body: '{"label": "agree"}' if is_judge(body) else "A short summary."
    source = tmp_path / "in"
    source.mkdir()
    for i in range(3):
        (source / f"doc{i}.txt").write_text(f"Document {i} says something short.")
    result = await run_inline("nightly-summaries", {"source": str(source), "destination": str(tmp_path / "out")})
    assert result.output is not None
    checks = [e for e in entries() if e.kind == "audit"]
    assert len(checks) == 3 and all(e.agreed and e.pipeline == "summarise-document" for e in checks)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect")
async def test_orchestrated_runs_are_audited(audited, redis_cache):
    from flows.orchestration.flow import run_pipeline

    audited.responder = lambda protocol, body: '{"label": "positive"}'
    state = await run_pipeline("sentiment", {"text": "I love it"}, return_state=True)
    assert state.is_completed()
    call, check = entries()
    assert (call.mode, check.mode, check.kind, check.agreed) == ("orchestrated", "orchestrated", "audit", True)
    assert check.flow_run_id == str(state.state_details.flow_run_id)


# -- router labels -----------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [False, True])
async def test_router_labels(audited, redis_cache, monkeypatch, keep):
    if keep:
        monkeypatch.setenv("FRUGAL_AUDIT_KEEP_PROMPTS", "true")

    def respond(protocol, body):
        text = body["messages"][-1]["content"]
        if protocol == "ollama":
            return "maybe" if "hate" in text else '{"label": "positive"}'
        return '{"label": "negative"}' if "meh" in text else '{"label": "positive"}'

    audited.responder = respond
    for text in ("I love it", "I hate it", "It is meh"):
        await run_inline("sentiment", {"text": text})
    entries()
    labels = sorted(router_labels(config().target), key=lambda label: label.why)
    assert [(label.label, label.why) for label in labels] == [
        ("small", "audit agreed"),
        ("large", "audit disagreed"),
        ("large", "rejected: invalid"),  # the check's reason code
    ]
    assert all(label.key and label.entry_id.endswith(":small") for label in labels)
    if keep:
        assert [label.messages[-1]["content"] for label in labels] == ["I love it", "It is meh", "I hate it"]
    else:
        assert all(label.messages is None for label in labels)
        raw = b" ".join(redis_cache.zrange(config().target.key, 0, -1))
        assert b"I love it" not in raw and b"meh" not in raw  # the ledger holds keys, never prompts


def test_semantic_hits_are_candidates_and_exact_hits_are_not():
    from flows.engine.observers import RunInfo
    from flows.engine.results import NodeReport
    from flows.language import catalog
    from flows.ledger.record import record

    stored = {"text": "4", "model": "ollama/llama3.2:1b", "route": "small", "usage": {}}
    for cache, audited in (("hit", False), ("semantic", True)):
        lookup = {"hit": True, "cache": cache, "answer": stored}
        run = RunInfo(pipeline=catalog.load("answer"), mode="inline", inputs={"prompt": "2+2?"}, values={"lookup": lookup})
        rec = record(run, [("lookup", lookup, NodeReport(uses="cache_lookup", status="cache_hit", duration_ms=1))])
        found = audit.candidates(run, rec)
        if not audited:
            assert found == []  # an exact hit repeats an answer already counted
            continue
        [(ask, seen, answer)] = found
        assert (ask, seen.kind, seen.lookup, answer["text"]) == ("large", "hit", "semantic", "4")


async def test_semantic_hits_are_audited_and_reported_apart(audited, capsys):
    """The re-worded request is re-asked of the large model and the cached answer judged against it;
    the report shows the semantic hits' agreement on its own line, not in the model's."""

    def respond(protocol, body):
        if is_judge(body):  # the cached answer does not serve the re-worded question; the original one agrees
            return '{"label": "disagree"}' if "What should I do" in str(body) else '{"label": "agree"}'
        return "Open Settings, then Security, then Reset password."

    audited.responder = respond
    await run_inline("answer", {"prompt": "How do I reset my password?"})
    assert (await run_inline("answer", {"prompt": "How do I reset my password?"})).output["cache"] == "hit"
    reworded = await run_inline("answer", {"prompt": "What should I do to reset my password?"})
    assert reworded.output["cache"] == "semantic"
    found = entries()
    hits = [e for e in found if e.kind == "hit"]
    audits = [e for e in found if e.kind == "audit"]
    semantic = [e for e in audits if e.audited_cache == "semantic"]
    assert [e.cache for e in hits] == ["hit", "semantic"]
    assert len(semantic) == 1 and semantic[0].audit_of == [e.id for e in hits if e.cache == "semantic"][0]
    assert semantic[0].agreed is False and semantic[0].judged_by == "rubric"
    assert all(e.agreed is True for e in audits if e.audited_cache is None)  # the model answers' audits, apart
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    assert "semantic hits audited: 1: 0.0 % agreement with the large model (n=1" in out
    assert main(["report", "--json"]) == 0
    assert '"semantic_hit_audits"' in capsys.readouterr().out
