"""The cost ledger, end to end on the real pipelines, real Redis or SQLite, and the loopback peer:
every model call and every cache hit is one entry with exact cost, counterfactual and savings by cause."""

from __future__ import annotations

import importlib
import json
import logging
import textwrap
import time
from decimal import Decimal

import pytest

from flows import ledger
from flows.ledger.entry import LedgerEntry
from flows.ledger.observer import config
from flows.ledger.stores import open_ledger
from flows.orchestration.flow import run_inline
from tasks.core import pricing
from tasks.core.errors import StepError
from tests.conftest import API_KEY

D = Decimal
ANTHROPIC_KEY = "sk-ant-api03-test-abcdef0123456789"
SYSTEM_WORDS = 6  # "You are a concise, helpful assistant.": the peer counts one token per word


def entries() -> list[LedgerEntry]:
    assert ledger.flush()
    return ledger.read_entries()


def balanced(entry: LedgerEntry) -> bool:
    """The causes add up to counterfactual - cost, exactly."""
    return sum(entry.savings.values(), D(0)) == entry.counterfactual - entry.cost


@pytest.fixture
def priced(peer, monkeypatch):
    """The peer, with a large model the price database knows ($0.15 in, $0.60 out per million)."""
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-4o-mini")
    return peer


# -- the answer pipeline -----------------------------------------------------------------


async def test_large_model_miss_then_hit(priced, redis_cache):
    priced.responder = lambda protocol, body: "Rust is safer; Go is simpler."  # 6 tokens
    miss = await run_inline("answer", {"prompt": "Compare Rust and Go."})  # 6 + 4 = 10 tokens in
    hit = await run_inline("answer", {"prompt": "Compare Rust and Go.", "namespace": "default"})
    assert (miss.output["route"], miss.output["cache"], hit.output["cache"]) == ("large", "miss", "hit")
    assert D(str(miss.output["cost"])) == D("0.0000051")  # 10 * 0.15 + 6 * 0.60 per million
    assert hit.output["cost"] == 0

    call, cached = entries()
    assert (call.kind, call.node, call.model, call.route, call.cache) == ("call", "large", "openai/gpt-4o-mini", "large", "miss")
    assert (call.input_tokens, call.output_tokens, call.cached_input_tokens) == (10, 6, 0)
    assert call.cost == D("0.0000051")
    assert call.reference_model == "openai/gpt-4o-mini"  # by default, the large tier's model
    assert call.counterfactual == D("0.0000051")
    assert call.savings == {"provider_cache": D(0)}

    assert (cached.kind, cached.node, cached.model, cached.route, cached.cache) == (
        "hit",
        "lookup",
        "openai/gpt-4o-mini",
        "large",
        "hit",
    )
    assert (cached.input_tokens, cached.output_tokens) == (10, 6)  # the tokens of the call that made the answer
    assert cached.cost == 0
    assert cached.counterfactual == D("0.0000051")
    assert cached.savings == {"prompt_cache": D("0.0000051")}  # a hit saves its whole counterfactual
    assert all(map(balanced, (call, cached)))
    assert (call.pipeline, call.version, call.mode, call.namespace) == ("answer", "2", "inline", "default")
    assert call.run_id != cached.run_id and call.flow_run_id is None


async def test_small_model_answer_saves_its_counterfactual_under_routing(priced, redis_cache, monkeypatch):
    monkeypatch.setenv("FRUGAL_REFERENCE_MODEL", "openai/gpt-4o")  # $2.50 in, $10 out per million
    priced.responder = lambda protocol, body: "four"
    small = await run_inline("answer", {"prompt": "What is 2+2?"})  # 6 + 3 = 9 tokens in, 1 out
    await run_inline("answer", {"prompt": "What is 2+2?"})
    assert (small.output["route"], small.output["model"], small.output["cost"]) == ("small", "ollama/llama3.2:1b", 0)

    call, cached = entries()
    assert (call.model, call.route, call.input_tokens, call.output_tokens) == ("ollama/llama3.2:1b", "small", 9, 1)
    assert call.cost == 0  # self-hosted
    assert call.counterfactual == D("0.0000325")  # 9 * 2.50 + 1 * 10 per million
    assert call.savings == {"routing": D("0.0000325")}
    assert (cached.kind, cached.route, cached.cost) == ("hit", "small", 0)
    assert cached.savings == {"prompt_cache": D("0.0000325")}  # attributed to the cache, whichever tier made it


async def test_large_model_against_a_dearer_reference_splits_model_choice(priced, redis_cache, monkeypatch):
    monkeypatch.setenv("FRUGAL_REFERENCE_MODEL", "openai/gpt-4o")
    priced.responder = lambda protocol, body: "Rust is safer; Go is simpler."
    await run_inline("answer", {"prompt": "Compare Rust and Go."})
    [call] = entries()
    assert call.cost == D("0.0000051")
    assert call.counterfactual == D("0.000085")  # 10 * 2.50 + 6 * 10 per million
    assert call.savings == {"provider_cache": D(0), "model_choice": D("0.0000799")}
    assert balanced(call)


async def test_escalation_counts_the_wasted_small_call_against_routing(priced, redis_cache, monkeypatch):
    # the small model costs $3.60 an hour shared by 3,600 calls: $0.001 a call
    monkeypatch.setenv("FRUGAL_PRICE_OVERRIDES", '{"ollama/*": {"hourly_usd": "3.60", "calls_per_hour": 3600}}')
    priced.responder = lambda protocol, body: "maybe" if protocol == "ollama" else '{"label": "positive"}'
    result = await run_inline("sentiment", {"text": "I love it"})  # 20 system words + 3 = 23 tokens in
    assert (result.output["label"], result.output["route"], result.output["escalated"]) == ("positive", "large", True)
    assert D(str(result.output["cost"])) == D("0.00100465")  # both calls: 0.001 + (23 * 0.15 + 2 * 0.60) / 1e6

    small, large = entries()
    assert (small.route, small.valid, small.cost, small.counterfactual) == ("small", False, D("0.001"), D(0))
    assert small.savings == {"routing": D("-0.001")}  # an unused answer is spending without a counterfactual
    assert (large.route, large.valid, large.input_tokens, large.output_tokens) == ("large", True, 23, 2)
    assert large.cost == large.counterfactual == D("0.00000465")
    assert small.run_id == large.run_id


async def test_unknown_model_is_recorded_with_null_cost(peer, redis_cache, caplog, monkeypatch):
    monkeypatch.setattr(pricing, "_warned", set())  # said once per process: forget earlier tests
    peer.responder = lambda protocol, body: "Rust is safer; Go is simpler."
    with caplog.at_level(logging.WARNING, logger="frugal"):
        result = await run_inline("answer", {"prompt": "Compare Rust and Go."})
    assert result.output["cost"] is None
    assert result.output["usage"] == {
        "input_tokens": 10,
        "output_tokens": 6,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "estimated": False,
    }
    [call] = entries()
    assert (call.model, call.input_tokens, call.output_tokens) == ("openai/gpt-test", 10, 6)
    assert (call.cost, call.counterfactual, call.savings) == (None, None, None)
    said = caplog.text
    assert "no price for model 'openai/gpt-test'" in said and "FRUGAL_PRICE_OVERRIDES" in said
    assert "reference model 'openai/gpt-test' has no price" in said and "FRUGAL_REFERENCE_MODEL" in said


async def test_entries_hold_no_prompt_answer_or_secret(priced, redis_cache):
    priced.responder = lambda protocol, body: "Rust is safer; Go is simpler."
    await run_inline("answer", {"prompt": "Compare Rust and Go, secretly."})
    await run_inline("answer", {"prompt": "Compare Rust and Go, secretly."})
    assert ledger.flush()
    raw = b" ".join(redis_cache.zrange(config().target.key, 0, -1))
    assert raw.count(b'"kind"') == 2
    for secret in (API_KEY, "secretly", "Rust is safer"):
        assert secret.encode() not in raw


# -- provider prompt caching -------------------------------------------------------------

PREFIXED = textwrap.dedent(
    """\
    name: prefixed
    version: "1"
    inputs:
      system: {type: string}
      prompt: {type: string}
    nodes:
      large:
        uses: call_llm
        with:
          system: "{{ inputs.system }}"
          prompt: "{{ inputs.prompt }}"
          cache_prefix: true
    output:
      text: "{{ large.text }}"
      cost: "{{ large.cost_usd }}"
    """
)


@pytest.fixture
def prefixed(tmp_path):
    path = tmp_path / "prefixed.yaml"
    path.write_text(PREFIXED)
    return str(path)


async def test_anthropic_cache_write_then_read(peer, redis_cache, monkeypatch, prefixed):
    monkeypatch.setenv("FRUGAL_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", peer.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "claude-sonnet-4-5")
    peer.prompt_cache = True
    peer.responder = lambda protocol, body: "Answer"
    system = " ".join(["lorem"] * 1200)
    await run_inline(prefixed, {"system": system, "prompt": "Question one please"})
    await run_inline(prefixed, {"system": system, "prompt": "Question two please"})

    write, read = entries()
    assert (write.input_tokens, write.cache_write_tokens, write.cached_input_tokens, write.output_tokens) == (1203, 1200, 0, 1)
    assert (read.input_tokens, read.cache_write_tokens, read.cached_input_tokens, read.output_tokens) == (1203, 0, 1200, 1)
    # claude-sonnet-4-5: $3 in, $3.75 cache write (1.25x), $0.30 cache read (0.1x), $15 out per million
    assert write.cost == D("0.004524")  # 3 * 3 + 1200 * 3.75 + 1 * 15
    assert read.cost == D("0.000384")  # 3 * 3 + 1200 * 0.30 + 1 * 15
    assert write.counterfactual == read.counterfactual == D("0.003624")  # 1203 * 3 + 1 * 15, no cache
    assert write.savings == {"provider_cache": D("-0.0009")}  # writing the cache costs a premium
    assert read.savings == {"provider_cache": D("0.00324")}  # reading it saves 0.9x input on 1,200 tokens
    assert all(map(balanced, (write, read)))
    assert write.cache == "none"  # this pipeline has no prompt cache


async def test_openai_cached_tokens(priced, redis_cache, prefixed):
    priced.prompt_cache = True
    priced.responder = lambda protocol, body: "Answer"
    system = " ".join(["policy"] * 1100)
    first = await run_inline(prefixed, {"system": system, "prompt": "Question one"})
    second = await run_inline(prefixed, {"system": system, "prompt": "Question two"})
    assert D(str(first.output["cost"])) == D("0.0001659")
    assert D(str(second.output["cost"])) == D("0.0000891")

    uncached, cached = entries()
    assert (uncached.cached_input_tokens, cached.cached_input_tokens, cached.input_tokens) == (0, 1024, 1102)
    assert uncached.savings == {"provider_cache": D(0)}
    assert cached.cost == D("0.0000891")  # 78 * 0.15 + 1024 * 0.075 + 1 * 0.60 per million
    assert cached.counterfactual == D("0.0001659")  # 1102 * 0.15 + 1 * 0.60
    assert cached.savings == {"provider_cache": D("0.0000768")}  # 1024 * (0.15 - 0.075)


# -- failures ----------------------------------------------------------------------------

FAILS_AFTER_CALL = textwrap.dedent(
    """\
    name: fails-after-call
    version: "1"
    inputs:
      prompt: {type: string}
      ttl: {type: integer, default: 0}
    nodes:
      large:
        uses: call_llm
        with: {prompt: "{{ inputs.prompt }}"}
      store:
        uses: cache_store
        with: {key: k, answer: "{{ large }}", ttl: "{{ inputs.ttl }}"}
    output: "{{ store.cost_usd }}"
    """
)


@pytest.mark.parametrize("store", ["redis", "sqlite"])
async def test_a_run_that_fails_after_a_paid_call_keeps_its_entry(priced, request, tmp_path, store):
    if store == "redis":
        request.getfixturevalue("redis_cache")
    path = tmp_path / "fails.yaml"
    path.write_text(FAILS_AFTER_CALL)
    priced.responder = lambda protocol, body: "Paid for"
    with pytest.raises(StepError, match="node 'store'"):
        await run_inline(str(path), {"prompt": "Say something worth paying for"})  # 5 tokens in, 2 out
    # stored before the failure was raised: read the store directly, without flushing the writer
    [entry] = open_ledger(config().target).read()
    assert (entry.pipeline, entry.node, entry.model) == ("fails-after-call", "large", "openai/gpt-4o-mini")
    assert entry.cost == entry.counterfactual == D("0.00000195")  # 5 * 0.15 + 2 * 0.60 per million
    assert config().target.kind == store


async def test_a_down_store_keeps_entries_in_the_spool_and_writes_them_when_it_is_back(priced, redis_cache, monkeypatch):
    from flows.ledger import spool, stores

    priced.responder = lambda protocol, body: "four"
    real = stores.RedisLedger.append
    ours = config().target
    down = {"now": True}

    def flaky(self, rows, retention_days):
        if self.target == ours and down["now"]:
            raise stores.CacheError("Redis is down (test)")
        return real(self, rows, retention_days)

    monkeypatch.setattr(stores.RedisLedger, "append", flaky)
    await run_inline("answer", {"prompt": "What is 2+2?"})
    assert not ledger.flush()  # the store cannot take it: it is in the spool, on disk
    [line] = spool.spool_path(ours).read_text().splitlines()
    assert json.loads(line)["ledger"][0] == "redis"
    assert open_ledger(ours).read() == []
    down["now"] = False
    assert ledger.flush()  # back: the spool is replayed, and emptied
    [entry] = ledger.read_entries()
    assert entry.savings == {"routing": entry.counterfactual}
    assert not spool.pending(ours.spool_dir)


async def test_retention_drops_old_entries(redis_cache, monkeypatch):
    from flows.ledger.stores import row

    monkeypatch.setenv("FRUGAL_CACHE_URL", "redis://127.0.0.1:6379/15")
    now = time.time()
    old = LedgerEntry.model_validate(
        {
            "id": "old:x",
            "ts": now - 10 * 86400,
            "run_id": "old",
            "pipeline": "p",
            "version": "1",
            "node": "x",
            "mode": "inline",
            "kind": "hit",
            "model": "m",
            "route": "small",
            "cache": "hit",
        }
    )
    new = old.model_copy(update={"id": "new:x", "run_id": "new", "ts": old.ts.fromtimestamp(now, old.ts.tzinfo)})
    store = open_ledger(config().target)
    store.append([row(old)], retention_days=0)
    assert [e.id for e in store.read()] == ["old:x"]
    store.append([row(new)], retention_days=7)
    assert [e.id for e in store.read()] == ["new:x"]
    assert json.loads(row(new)[2])["kind"] == "hit"


async def test_the_ledger_can_be_turned_off(priced, redis_cache, monkeypatch):
    monkeypatch.setenv("FRUGAL_LEDGER_ENABLED", "false")
    priced.responder = lambda protocol, body: "four"
    await run_inline("answer", {"prompt": "What is 2+2?"})
    assert entries() == []


def test_a_call_prefect_replayed_from_its_result_cache_costs_nothing_now():
    from flows.engine.observers import RunInfo
    from flows.engine.results import NodeReport
    from flows.language import catalog
    from flows.ledger.record import make_entries, record

    answer = {
        "text": "x",
        "model": "openai/gpt-4o-mini",
        "tier": "large",
        "usage": {"input_tokens": 10, "output_tokens": 6},
        "cost_usd": 5.1e-06,
        "uncached_cost_usd": 5.1e-06,
        "valid": True,
    }
    run = RunInfo(pipeline=catalog.load("answer"), mode="orchestrated", inputs={}, flow_run_id="fr-1")
    lookup = {"hit": False, "cache": "error", "answer": None}  # the prompt cache was down
    nodes = [
        ("lookup", lookup, NodeReport(uses="cache_lookup", status="ran", duration_ms=1, cache="error")),
        ("large", answer, NodeReport(uses="call_llm", status="cache_hit", duration_ms=1, model="openai/gpt-4o-mini")),
    ]
    [entry] = make_entries(record(run, nodes))
    ledger.settle(entry, "openai/gpt-4o-mini")
    assert (entry.id, entry.cache, entry.cost, entry.counterfactual) == ("fr-1:large", "result", 0, D("0.0000051"))
    assert entry.savings == {"prompt_cache": D("0.0000051")}
    assert not entry.paid


def test_the_fast_serialisation_reads_back_as_the_same_entries():
    from flows.engine.observers import RunInfo
    from flows.engine.results import NodeReport
    from flows.language import catalog
    from flows.ledger.entry import Reference
    from flows.ledger.record import make_entries, record, rows

    small = {"model": "ollama/llama3.2:1b", "tier": "small", "usage": {"input_tokens": 9, "output_tokens": 1}, "cost_usd": 0.0}
    small["valid"] = False
    large = {
        "model": "anthropic/claude-sonnet-4-5",
        "tier": "large",
        "usage": {"input_tokens": 1203, "output_tokens": 1, "cached_input_tokens": 1200},
        "cost_usd": 0.000384,
        "uncached_cost_usd": 0.003624,
    }
    stored = {"model": "openai/gpt-test", "route": "large", "usage": {"input_tokens": 10, "output_tokens": 6}}
    run = RunInfo(pipeline=catalog.load("answer"), mode="inline", inputs={"namespace": "tenant-a"})
    nodes = [
        (
            "lookup",
            {"hit": True, "cache": "hit", "answer": stored},
            NodeReport(uses="cache_lookup", status="cache_hit", duration_ms=1),
        ),
        ("small", small, NodeReport(uses="call_slm", status="ran", duration_ms=1, model=small["model"])),
        ("large", large, NodeReport(uses="call_llm", status="ran", duration_ms=1, model=large["model"])),
    ]
    rec = record(run, nodes)
    reference = Reference.of("openai/gpt-4o")
    fast = [LedgerEntry.model_validate_json(text) for _, _, text in rows(rec, reference)]
    slow = [ledger.settle(entry, reference) for entry in make_entries(rec)]
    assert fast == slow and len(fast) == 3
    assert [e.savings for e in fast] == [
        {"prompt_cache": D("0.000085")},  # 10 * 2.50 + 6 * 10 per million
        {"routing": D(0)},  # an unused answer at $0
        {"provider_cache": D("0.00324"), "model_choice": D("-0.0006065")},  # (1203 * 2.5 + 10) / 1e6 - 0.003624
    ]


async def test_many_inline_hits_share_writes_and_none_is_lost(priced, redis_cache, monkeypatch):
    """Inline runs are queued one by one and written a gathering at a time: every run is stored once."""
    from flows.ledger import writer

    monkeypatch.setattr(writer, "LINGER", 0.02)
    priced.responder = lambda protocol, body: "Paris."
    await run_inline("answer", {"prompt": "Capital of France?"})  # the miss: one call entry
    runs = 120
    for _ in range(runs):
        await run_inline("answer", {"prompt": "Capital of France?"})
    stored = entries()
    hits = [e for e in stored if e.kind == "hit"]
    assert len(hits) == runs and len({e.run_id for e in hits}) == runs
    assert [e.kind for e in stored].count("call") == 1


def test_the_checks_verdicts_reach_the_entries():
    """A call's own verdict, a `check_answer` node's verdict, an escalation naming the model it replaced,
    and the request key: copied on the request path, the same through both serialisations."""
    from flows.engine.observers import RunInfo
    from flows.engine.results import NodeReport
    from flows.language import catalog
    from flows.ledger.entry import Reference
    from flows.ledger.record import make_entries, record, rows
    from tasks.core.records import ModelAnswer
    from tasks.steps.check_answer import Verdict

    usage = {"input_tokens": 9, "output_tokens": 1}
    small = {"model": "ollama/llama3.2:1b", "tier": "small", "usage": usage, "cost_usd": 0.0, "latency_ms": 812.5}
    retry = {**small, "latency_ms": 700.0}
    large = {"model": "openai/gpt-4o-mini", "tier": "large", "usage": usage, "cost_usd": 1.95e-06}

    def judged(call: dict, **verdict) -> dict:
        """What the real `check_answer` step returns: the judged answer inside, the verdict beside it."""
        answer = ModelAnswer(text="x", **call).model_copy(update={"accepted": verdict["accepted"]})
        return Verdict(answer=answer, note="", **verdict).model_dump(mode="json")

    verdict = judged(retry, accepted=False, reason="loop", action="escalate", escalate=True)
    large_verdict = judged(large, accepted=True, action="accept", escalated_from=small["model"], escalation_reason="loop")
    run = RunInfo(pipeline=catalog.load("answer"), mode="inline", inputs={})

    def report(uses, model=None):
        return NodeReport(uses=uses, status="ran", duration_ms=1, model=model)

    nodes = [
        ("key", "ab" * 32, report("hash_prompt")),
        ("small", {**small, "accepted": False, "reject_reason": "truncated"}, report("call_slm", small["model"])),
        ("retry", retry, report("call_slm", small["model"])),
        ("check", verdict, report("check_answer")),
        ("large", large, report("call_llm", large["model"])),
        ("large_check", large_verdict, report("check_answer")),
    ]
    rec = record(run, nodes)
    reference = Reference.of("openai/gpt-4o")
    fast = [LedgerEntry.model_validate_json(text) for _, _, text in rows(rec, reference)]
    slow = [ledger.settle(entry, reference) for entry in make_entries(rec)]
    assert fast == slow
    first, second, last = fast
    assert (first.verdict, first.reject_reason, first.replaced_by, first.latency_ms) == ("rejected", "truncated", "small", 812.5)
    assert (second.verdict, second.reject_reason, second.replaced_by) == ("rejected", "loop", "large")
    assert (last.verdict, last.escalated_from, last.replaced_by) == ("accepted", "ollama/llama3.2:1b", None)
    assert {e.key for e in fast} == {"ab" * 32}
    # replaced answers carry no counterfactual: the one that replaced them does
    assert (first.counterfactual, second.counterfactual, last.counterfactual) == (0, 0, D("0.0000325"))


def test_an_escalation_rejects_the_answer_it_replaced():
    from flows.engine.observers import RunInfo
    from flows.engine.results import NodeReport
    from flows.language import catalog
    from flows.ledger.record import record

    small = {"model": "ollama/llama3.2:1b", "tier": "small", "cost_usd": 0.0}
    large = {"model": "openai/gpt-4o-mini", "tier": "large", "cost_usd": 0.0, "escalated_from": small["model"]}
    run = RunInfo(pipeline=catalog.load("answer"), mode="inline", inputs={})
    nodes = [
        ("small", small, NodeReport(uses="call_slm", status="ran", duration_ms=1, model=small["model"])),
        ("large", large, NodeReport(uses="call_llm", status="ran", duration_ms=1, model=large["model"])),
    ]
    first, _ = record(run, nodes).seen
    assert (first.accepted, first.reject_reason, first.replaced_by) == (False, "rejected", "large")


# -- storage faults ------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
async def test_a_corrupt_sqlite_file_is_moved_aside_and_made_anew(priced, damage, caplog):
    """The embedded file (cache and ledger) damaged between two runs: the next run is answered,
    recorded in a new file, and the damaged one is kept beside it for inspection."""
    from pathlib import Path

    from flows.ledger import stores, writer

    priced.responder = lambda protocol, body: "four"
    await run_inline("answer", {"prompt": "What is 2+2?"})
    assert ledger.flush()
    path = Path(config().target.location)
    for opened in (stores._stores, importlib.import_module("tasks.stores.sqlite_store")._stores):
        for one in opened.values():  # as in a new process: nothing open
            if hasattr(one, "close"):
                one.close()
        opened.clear()
    for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        extra.unlink(missing_ok=True)
    if damage == "truncated":
        with path.open("r+b") as f:
            f.truncate(path.stat().st_size // 3)
    else:
        path.write_bytes(b"not a database at all " * 1000)
    with caplog.at_level(logging.WARNING):
        result = await run_inline("answer", {"prompt": "What is 3+3?"})
        assert ledger.flush()
    assert result.output["text"] == "four"
    assert [e.kind for e in ledger.read_entries()][-1:] == ["call"]
    assert list(path.parent.glob("cache.sqlite3.corrupt-*")), "the damaged file is kept aside"
    assert "moved aside" in caplog.text
    assert writer.WRITER.problems() == []


def test_entries_spooled_by_a_process_are_replayed_by_the_next_one(tmp_path, monkeypatch):
    """A process whose store could not be written until its exit leaves its entries in the spool;
    the next process that reads the ledger (`read_entries`, as `frugal report` does) stores them first."""
    import os
    import subprocess
    import sys

    from flows.ledger import spool

    blocker = tmp_path / "ledger-folder"
    blocker.write_text("a file where the ledger's folder should be: the store cannot be opened")
    monkeypatch.setenv("FRUGAL_CACHE_URL", f"sqlite:///{blocker}/ledger.sqlite3")
    target = config().target
    script = textwrap.dedent(
        """
        import datetime
        from decimal import Decimal
        from flows.ledger.entry import LedgerEntry
        from flows.ledger.observer import config
        from flows.ledger.writer import WRITER, Batch
        cfg = config()
        now = datetime.datetime.now(datetime.UTC)
        made = [
            LedgerEntry(id=f"r:{i}", ts=now, run_id="r", pipeline="p", version="1", node=f"n{i}", seq=i, mode="inline",
                        namespace="default", kind="call", model="openai/gpt-4o-mini", route="large", cache="miss",
                        valid=True, cost=Decimal("0.001"))
            for i in range(3)
        ]
        WRITER.submit(Batch(cfg.target, cfg.reference, 0, entries=made))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ledger-spool.jsonl" in done.stderr  # said at exit
    assert len(spool.spool_path(target).read_text().splitlines()) == 3
    blocker.unlink()  # the store can be written again
    assert sorted(e.id for e in ledger.read_entries()) == ["r:0", "r:1", "r:2"]
    assert not spool.pending(target.spool_dir)
