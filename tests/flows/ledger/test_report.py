"""The FinOps report (`frugal report`: table, JSON, PNG) and the cost table of orchestrated runs."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from flows.cli.main import main
from flows.ledger import read_entries
from flows.ledger.entry import LedgerEntry, settle
from flows.ledger.report import chart, parse_since, summarise, table
from flows.orchestration import cost_artifact
from flows.orchestration.flow import run_inline
from tasks.core.errors import InputError

D = Decimal
DAY1 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def entry(n: int, **fields) -> LedgerEntry:
    base = {
        "id": f"r{n}:x",
        "ts": DAY1,
        "run_id": f"r{n}",
        "pipeline": "answer",
        "version": "1",
        "node": "x",
        "mode": "inline",
        "kind": "call",
        "model": "openai/gpt-4o-mini",
        "route": "large",
        "cache": "miss",
    }
    return LedgerEntry.model_validate({**base, **fields})


@pytest.fixture
def sample() -> list[LedgerEntry]:
    """A large call, a hit of it, an accepted small call, a provider-cached call and an unpriced call,
    settled against gpt-4o ($2.50 in, $10 out per million)."""
    made = [
        entry(1, input_tokens=10, output_tokens=6, cost="0.0000051", uncached_cost="0.0000051"),
        entry(2, kind="hit", cache="hit", node="lookup", input_tokens=10, output_tokens=6, cost="0"),
        entry(
            3,
            model="ollama/llama3.2:1b",
            route="small",
            accepted=True,
            input_tokens=9,
            output_tokens=1,
            cost="0",
            ts=DAY1 + timedelta(days=1),
        ),
        entry(
            4,
            pipeline="prefixed",
            input_tokens=1102,
            cached_input_tokens=1024,
            output_tokens=1,
            cost="0.0000891",
            uncached_cost="0.0001659",
            ts=DAY1 + timedelta(days=1),
        ),
        entry(5, model="openai/gpt-test", input_tokens=10, output_tokens=6, ts=DAY1 + timedelta(days=1)),
    ]
    return [settle(e, "openai/gpt-4o") for e in made]


def test_totals_are_exact_and_the_causes_add_up(sample):
    groups, total = summarise(sample, "route")
    assert list(groups) == ["cache hit", "large", "small"]
    assert (total.calls, total.hits, total.unpriced) == (4, 1, 1)
    assert (total.input_tokens, total.output_tokens, total.cached_input_tokens) == (1131, 14, 1024)
    assert total.cost == D("0.0000942")  # 0.0000051 + 0.0000891 (the unpriced call is not in it)
    # 0.000085 (large) + 0.000085 (hit) + 0.0000325 (small) + 0.002765 (1102 * 2.5 + 10)
    assert total.counterfactual == D("0.0029675")
    assert total.savings == {
        "prompt_cache": D("0.000085"),
        "routing": D("0.0000325"),
        "provider_cache": D("0.0000768"),  # 0.0001659 - 0.0000891
        "model_choice": D("0.002679"),  # 0.000085 - 0.0000051 + 0.002765 - 0.0001659
    }
    assert total.saved == total.counterfactual - total.cost == D("0.0028733")
    assert total.saved_pct == D("96.8")
    assert groups["cache hit"].saved == D("0.000085") and groups["cache hit"].cost == 0
    by_day, _ = summarise(sample, "day")
    assert list(by_day) == ["2026-03-01", "2026-03-02"]
    assert by_day["2026-03-01"].cost == D("0.0000051")


def test_table_and_json(sample):
    groups, total = summarise(sample, "pipeline")
    text = table(groups, total, "pipeline")
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["pipeline", "calls", "hits", "tokens"]
    assert "saved: model choice" in lines[0]
    total_line = next(line for line in lines if line.startswith("total"))
    assert "$0.000094" in total_line and "$0.002968" in total_line and "96.8%" in total_line
    assert "1 entries have no price" in text
    from flows.ledger.report import as_json

    data = as_json(groups, total, "pipeline", None)
    assert data["total"]["cost"] == "0.0000942"
    assert data["total"]["savings"]["provider_cache"] == "0.0000768"
    assert data["groups"]["prefixed"]["cached_input_tokens"] == 1024


def test_money_never_shows_a_cost_as_zero():
    from flows.ledger.report import money

    assert money(D(0)) == "$0.000000" and money(D("0.00123456")) == "$0.001235" and money(D("1234.5")) == "$1,234.500000"
    assert money(D("0.00000035")) == "$0.00000035" and money(D("-0.00000035")) == "-$0.00000035"  # six places: $0.000000
    assert money(D("0.000000012345")) == "$0.000000012"


def test_parse_since():
    now = datetime(2026, 3, 10, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 3, 3, tzinfo=UTC)
    assert parse_since("12h", now) == datetime(2026, 3, 9, 12, tzinfo=UTC)
    assert parse_since("2026-03-01", now) == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(InputError, match="7d"):
        parse_since("last week", now)
    with pytest.raises(InputError, match="--by"):
        summarise([], "colour")


def test_chart_is_a_png(sample, tmp_path):
    path = chart(sample, tmp_path / "out" / "costs.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_cost_artifact_rows(sample):
    rows = cost_artifact.rows(sample, per_model=True)
    assert [r["route"] for r in rows] == [
        "large",
        "small",
        "cache hit",
        "model: ollama/llama3.2:1b",
        "model: openai/gpt-4o-mini",
        "model: openai/gpt-test",
        "total",
    ]
    large, small, hit = rows[:3]
    assert (large["calls"], large["cost ($)"], large["counterfactual ($)"], large["unpriced"]) == (3, "0.0000942", "0.00285", 1)
    assert (small["saved ($)"], small["saved %"]) == ("0.0000325", "100.0")
    assert (hit["cache hits"], hit["saved: prompt cache ($)"]) == (1, "0.000085")
    assert rows[-1]["saved ($)"] == "0.0028733" and rows[-1]["saved %"] == "96.8"
    assert cost_artifact.artifact_key("Nightly_Summaries") == "cost-nightly-summaries"


async def test_frugal_report_on_real_runs(peer, redis_cache, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("FRUGAL_REFERENCE_MODEL", "openai/gpt-4o")
    peer.responder = lambda protocol, body: "four" if protocol == "ollama" else "Rust is safer; Go is simpler."
    for prompt in ("What is 2+2?", "What is 2+2?", "Compare Rust and Go."):
        await run_inline("answer", {"prompt": prompt})

    assert main(["report", "--by", "route", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # the small answer counts as saved only if the answer check accepted it; unchecked, it is "not counted"
    [small] = [e for e in read_entries() if e.route == "small" and e.kind == "call"]
    verified = small.verdict == "accepted"
    routing, not_counted = ("0.0000325", "0") if verified else ("0", "0.0000325")
    assert data["by"] == "route"
    assert data["groups"]["small"]["saved"] == routing
    assert data["groups"]["small"]["not_counted"] == not_counted
    assert data["groups"]["cache hit"]["saved"] == "0.0000325"  # a hit counts, whatever made the answer
    assert data["groups"]["large"]["cost"] == "0.0000051"
    total = data["total"]
    assert {k: total[k] for k in ("calls", "cache_hits", "input_tokens", "output_tokens", "cost", "counterfactual")} == {
        "calls": 2,
        "cache_hits": 1,
        "input_tokens": 19,
        "output_tokens": 7,
        "cost": "0.0000051",
        "counterfactual": "0.00015",  # 0.0000325 * 2 + 0.000085
    }
    assert total["savings"] == {
        "prompt_cache": "0.0000325",
        "routing": routing,
        "provider_cache": "0",
        "model_choice": "0.0000799",
    }
    # counterfactual - cost = saved + not counted
    assert D(total["saved"]) + D(total["not_counted"]) == D("0.0001449")
    assert total["saved_pct"] == ("96.6" if verified else "74.9")
    assert (total["unpriced"], total["estimated"], total["audits"]["n"]) == (0, 0, 0)

    png = tmp_path / "report.png"
    assert main(["report", "--png", str(png)]) == 0
    out, err = capsys.readouterr()
    assert "Reference model: openai/gpt-4o" in out
    assert "answer: saved" in out and "agreement not measured" in out
    assert next(line for line in out.splitlines() if line.startswith("answer")).split()[1:3] == ["2", "1"]
    assert f"wrote {png}" in err and png.read_bytes()[:4] == b"\x89PNG"

    assert main(["report", "--since", "2099-01-01"]) == 0
    assert "0 ledger entries" in capsys.readouterr().out
    assert main(["report", "--since", "yesterday"]) == 1
    assert "--since 'yesterday'" in capsys.readouterr().err


# -- the cost table of an orchestrated run (real Prefect) ---------------------------------


async def _artifacts(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), type=ArtifactFilterType(any_=["table"])
            )
        )


@pytest.mark.slow
@pytest.mark.usefixtures("prefect")
async def test_orchestrated_run_publishes_its_cost_table(peer, redis_cache, monkeypatch):
    from flows.ledger import read_entries
    from flows.orchestration.flow import run_pipeline

    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-4o-mini")
    peer.responder = lambda protocol, body: "Rust is safer; Go is simpler."
    state = await run_pipeline("answer", {"prompt": "Compare Rust and Go."}, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    [artifact] = await _artifacts(flow_run_id)
    assert artifact.key == "cost-answer"
    rows = {r["route"]: r for r in json.loads(artifact.data)}
    assert rows["large"]["calls"] == 1 and rows["large"]["cost ($)"] == "0.0000051"
    assert rows["total"]["counterfactual ($)"] == "0.0000051" and rows["total"]["saved ($)"] == "0"
    assert "spent $0.0000051" in artifact.description
    [entry] = read_entries()
    assert (entry.mode, entry.flow_run_id) == ("orchestrated", str(flow_run_id))


@pytest.mark.slow
@pytest.mark.usefixtures("prefect")
async def test_orchestrated_run_that_fails_after_a_paid_call(peer, redis_cache, monkeypatch, tmp_path):
    from flows.ledger.observer import config
    from flows.ledger.stores import open_ledger
    from flows.orchestration.flow import run_pipeline

    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-4o-mini")
    path = tmp_path / "fails.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: fails-after-call
            version: "1"
            inputs: {prompt: {type: string}, ttl: {type: integer, default: 0}}
            nodes:
              large: {uses: call_llm, with: {prompt: "{{ inputs.prompt }}"}}
              store: {uses: cache_store, with: {key: k, answer: "{{ large }}", ttl: "{{ inputs.ttl }}"}}
            output: "{{ store }}"
            """
        )
    )
    peer.responder = lambda protocol, body: "Paid for"
    state = await run_pipeline(str(path), {"prompt": "Say something worth paying for"}, return_state=True)
    assert state.is_failed()
    [entry] = open_ledger(config().target).read()
    assert (entry.mode, entry.flow_run_id, entry.cost) == ("orchestrated", str(state.state_details.flow_run_id), D("0.00000195"))
    [artifact] = await _artifacts(state.state_details.flow_run_id)
    assert "failed after spending $0.00000195" in artifact.description


@pytest.mark.slow
@pytest.mark.usefixtures("prefect")
async def test_orchestrated_batch_table_has_every_item_and_a_row_per_model(peer, redis_cache, monkeypatch, tmp_path):
    from flows.ledger import read_entries
    from flows.ledger.report import plain
    from flows.orchestration.flow import run_pipeline

    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("FRUGAL_BATCH_CHUNK_SIZE", "4")
    peer.responder = lambda protocol, body: "A short summary."
    source = tmp_path / "in"
    source.mkdir()
    for i in range(10):
        (source / f"doc{i}.txt").write_text(f"Document {i}. " + " ".join(f"w{i}x{j}" for j in range(12)))
    inputs = {"source": str(source), "destination": str(tmp_path / "out")}
    state = await run_pipeline("nightly-summaries", inputs, return_state=True)
    assert state.is_completed()
    flow_run_id = state.state_details.flow_run_id
    [artifact] = await _artifacts(flow_run_id)
    assert artifact.key == "cost-nightly-summaries"
    rows = {r["route"]: r for r in json.loads(artifact.data)}
    assert rows["small"]["calls"] == 10 and rows["model: ollama/llama3.2:1b"]["calls"] == 10
    # the items ran inline inside the flow run: their entries name it, and add up to its table
    items = [e for e in read_entries() if e.flow_run_id == str(flow_run_id)]
    assert len(items) == 10 and {e.pipeline for e in items} == {"summarise-document"}
    assert rows["total"]["counterfactual ($)"] == plain(sum((e.counterfactual for e in items), D(0)))
    # all on the free small model: saved if the check accepted the summaries, else not counted
    total = rows["total"]
    assert D(total["saved ($)"]) + D(total["not counted ($)"]) == D(total["counterfactual ($)"]) != 0
    verified = all(e.verdict == "accepted" for e in items)
    assert total["saved ($)"] == (total["counterfactual ($)"] if verified else "0")


# -- quality: what the savings kept (a known ledger, every figure checked) ---------------------

SMALL, LARGE = "ollama/llama3.2:1b", "openai/gpt-4o-mini"


@pytest.fixture
def checked() -> list[LedgerEntry]:
    """Two pipelines' answers with every verdict, settled against gpt-4o ($2.50 in, $10 out per million)."""
    s = {"model": SMALL, "route": "small", "cost": "0"}
    made = [
        entry(1, node="small", **s, accepted=True, input_tokens=100, output_tokens=20),  # cf 0.00045
        # rejected (truncated) and escalated: the small call cost $0.001 and 1.5 s for nothing
        entry(
            2,
            node="small",
            **{**s, "cost": "0.001"},
            accepted=False,
            reject_reason="truncated",
            replaced_by="large",
            latency_ms=1500.0,
            input_tokens=100,
            output_tokens=40,
        ),
        entry(
            2,
            node="large",
            model=LARGE,
            escalated_from=SMALL,
            input_tokens=100,
            output_tokens=50,
            cost="0.000045",
            uncached_cost="0.000045",
        ),  # cf 0.00075
        entry(3, node="small", **s, input_tokens=40, output_tokens=10),  # unchecked: cf 0.0002, not counted
        entry(
            4, node="lookup", kind="hit", cache="hit", model=SMALL, route="small", input_tokens=100, output_tokens=20, cost="0"
        ),
        # rejected (loop), not replaced: used anyway (flagged), cf 0.00035, not counted
        entry(5, node="small", **s, accepted=False, reject_reason="loop", input_tokens=60, output_tokens=20),
        entry(6, pipeline="sentiment", node="small", **s, accepted=True, input_tokens=30, output_tokens=2),  # cf 0.000095
        entry(
            7,
            pipeline="sentiment",
            node="small",
            **s,
            accepted=False,
            reject_reason="low_confidence",
            replaced_by="small",
            latency_ms=200.0,
            input_tokens=30,
            output_tokens=2,
        ),
        entry(7, pipeline="sentiment", node="retry", **s, accepted=True, input_tokens=30, output_tokens=2),  # cf 0.000095
    ]
    audit = {"kind": "audit", "model": LARGE, "route": "large", "cache": "none", "audited_model": SMALL}
    made += [
        entry(
            1, id="r1:small:audit", node="small", **audit, audit_of="r1:small", agreed=True, judged_by="rubric", cost="0.00002"
        ),
        entry(
            6,
            id="r6:small:audit",
            pipeline="sentiment",
            node="small",
            **audit,
            audit_of="r6:small",
            agreed=False,
            judged_by="label",
            cost="0.000001",
        ),
        entry(
            7,
            id="r7:retry:audit",
            pipeline="sentiment",
            node="retry",
            **audit,
            audit_of="r7:retry",
            judged_by="label",
            cost="0.000002",
        ),  # the large answer was malformed: not judged
    ]
    for e in made:
        if e.kind != "audit":
            e.id = f"{e.run_id}:{e.node}"
    return [settle(e, "openai/gpt-4o") for e in made]


def test_saved_counts_only_accepted_answers_and_hits(checked):
    groups, total = summarise(checked, "pipeline")
    answer, sentiment = groups["answer"], groups["sentiment"]
    assert (answer.calls, answer.hits, sentiment.calls, sentiment.hits) == (5, 1, 3, 0)
    assert answer.cost == D("0.001045")  # the wasted small call and the large one; audits are not in it
    assert answer.counterfactual == D("0.0022")  # 0.00045 + 0 (replaced) + 0.00075 + 0.0002 + 0.00045 + 0.00035
    assert answer.savings == {
        "prompt_cache": D("0.00045"),
        "routing": D("-0.00055"),  # 0.00045 accepted - 0.001 wasted
        "provider_cache": D(0),
        "model_choice": D("0.000705"),  # 0.00075 - 0.000045
    }
    assert answer.saved == D("0.000605") and answer.saved_pct == D("27.5")
    assert answer.not_counted == D("0.00055")  # unchecked 0.0002 + flagged 0.00035
    assert answer.saved + answer.not_counted == answer.counterfactual - answer.cost
    assert (sentiment.cost, sentiment.counterfactual, sentiment.saved, sentiment.saved_pct) == (
        0,
        D("0.00019"),
        D("0.00019"),
        100,
    )
    assert total.saved == D("0.000795") and total.saved_pct == D("33.3") and total.not_counted == D("0.00055")
    assert total.cost == D("0.001045") and total.unpriced == 0

    assert (total.audits.audits, total.audits.agreed, total.audits.disagreed, total.audits.audit_cost) == (3, 1, 1, D("0.000023"))

    small = total.tallies[("answer", SMALL)]
    assert (small.calls, small.hits, small.accepted, small.rejected, small.unchecked) == (4, 1, 1, 2, 1)
    assert (small.escalated, small.retried, small.flagged) == (1, 0, 1)
    assert (small.acceptance_pct, small.escalation_pct) == (D("25.0"), D("25.0"))
    assert small.reasons == {"truncated": 1, "loop": 1}
    assert (small.waste, small.waste_ms) == (D("0.001"), 1500.0)
    assert (small.audits, small.agreed, small.agreement_pct) == (1, 1, D("100.0"))
    large = total.tallies[("answer", LARGE)]
    assert (large.calls, large.accepted, large.unchecked, large.audits) == (1, 0, 1, 0)
    labels = total.tallies[("sentiment", SMALL)]
    assert (labels.calls, labels.accepted, labels.rejected, labels.retried, labels.escalated) == (3, 2, 1, 1, 0)
    assert (labels.acceptance_pct, labels.escalation_pct, labels.waste, labels.waste_ms) == (D("66.7"), D("0.0"), 0, 200.0)
    assert (labels.audits, labels.agreed, labels.disagreed, labels.judged, labels.agreement_pct) == (2, 0, 1, 1, D("0.0"))

    text = table(groups, total, "pipeline")
    assert "answer: saved 27.5 % at 100.0 % agreement with the large model (n=1, 95 % interval 20.7-100.0 %)" in text
    assert "sentiment: saved 100.0 % at 0.0 % agreement with the large model (n=1, 95 % interval 0.0-79.3 %)" in text
    assert "audits (not in cost): 3, $0.000023: 1 agreed, 1 disagreed, 1 not judged" in text
    assert "not counted: $0.000550 saved by small answers nobody verified" in text
    row = next(line for line in text.splitlines() if line.startswith("answer") and SMALL in line)
    assert row.split()[2:13] == ["4", "1", "1", "2", "1", "25.0%", "1", "25.0%", "$0.001000", "1.5", "s"]
    assert row.endswith("truncated 1, loop 1") or row.endswith("loop 1, truncated 1")

    from flows.ledger.report import as_json

    data = as_json(groups, total, "pipeline", None)
    assert data["pipelines"]["answer"]["saved_pct"] == "27.5"
    assert data["pipelines"]["answer"]["agreement_interval_pct"] == [20.7, 100.0]
    assert data["total"]["audits"] == {"n": 3, "agreed": 1, "disagreed": 1, "cost": "0.000023", "unpriced": 0}
    [row_json] = [r for r in data["answers"] if (r["pipeline"], r["model"]) == ("sentiment", SMALL)]
    assert row_json["rejection_reasons"] == {"low_confidence": 1} and row_json["waste_seconds"] == 0.2


def test_wilson_interval():
    from flows.ledger.report import wilson

    assert wilson(0, 0) is None
    low, high = wilson(45, 50)
    assert (round(low, 4), round(high, 4)) == (0.7864, 0.9565)  # the textbook figures for 45 of 50
    assert wilson(10, 10)[1] == 1.0 and wilson(0, 10)[0] == 0.0


def test_chart_of_one_day_and_of_several(checked, tmp_path):
    one = chart(checked, tmp_path / "one-day.png")
    later = [e.model_copy(update={"ts": e.ts + timedelta(days=d)}) for d in (1, 2) for e in checked if e.pipeline == "answer"]
    several = chart(checked + later, tmp_path / "three-days.png")
    empty = chart([], tmp_path / "empty.png")
    for path in (one, several, empty):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cost_artifact_rows_carry_the_verdicts(checked):
    rows = {r["route"]: r for r in cost_artifact.rows(checked)}
    small = rows["small"]
    assert (small["calls"], small["accepted"], small["rejected"], small["unchecked"], small["escalated"]) == (7, 3, 3, 1, 1)
    assert small["not counted ($)"] == "0.00055"
    assert rows["large"]["unchecked"] == 1 and rows["total"]["saved ($)"] == "0.000795"
