"""Orchestrated runs on a real Prefect (test harness): one task run per node that runs,
skips shown in the run's Markdown artifact, the output where a Prefect user looks, same
results as inline, no model call paid twice, and `bypass_cache` bypassing Prefect's cache too."""

from __future__ import annotations

import asyncio
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from pydantic import BaseModel, ConfigDict

from flows.language import registry
from flows.orchestration.flow import run_inline, run_orchestrated, run_pipeline

pytestmark = [pytest.mark.usefixtures("prefect"), pytest.mark.slow]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def task_runs_of(state, expected: int = 6) -> dict[str, str]:
    """Task-run name → state name, for the flow run behind `state`.

    The server records task runs from events, a moment after the flow returns: poll.
    """
    flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    async with get_client() as client:
        for _ in range(100):
            runs = await client.read_task_runs(flow_run_filter=flow_filter)
            if len(runs) >= expected and all(r.state is not None and r.state.is_final() for r in runs):
                break
            await asyncio.sleep(0.1)
    return {run.name: run.state.name for run in runs}


def strip_timing(result: dict) -> dict:
    return {
        "output": result["output"],
        "nodes": {n: {k: v for k, v in r.items() if k not in ("duration_ms", "latency_ms")} for n, r in result["nodes"].items()},
    }


async def artifacts_and_logs(state) -> tuple[dict[str, str], list[str]]:
    """The flow run's Markdown artifact text by type, and its log lines."""
    flow_run_id = state.state_details.flow_run_id
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        for _ in range(100):  # log lines are sent in batches, a moment after the run
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            if any(log.message.startswith("output: ") for log in logs):
                break
            await asyncio.sleep(0.1)
    return {a.type: a.data for a in artifacts if a.type == "markdown"}, [log.message for log in logs]


async def test_each_node_that_runs_is_a_named_task_run_and_skips_are_in_the_artifact(peer, redis_cache):
    peer.responder = lambda protocol, body: "four"
    state = await run_pipeline("answer", {"prompt": "What is 2+2?"}, return_state=True)
    assert state.is_completed()
    runs = await task_runs_of(state, 7)
    assert runs == {
        n: "Completed" for n in ("key", "lookup", "route", "small", "small_check", "store")
    }  # large: skipped, no task run

    hit = await run_pipeline("answer", {"prompt": "What is 2+2?"}, return_state=True)
    assert await task_runs_of(hit, 2) == {"key": "Completed", "lookup": "Completed"}  # no placeholders
    result = await hit.aresult()
    assert result["output"]["cache"] == "hit"
    assert result["nodes"]["lookup"]["status"] == "cache_hit"
    assert result["nodes"]["small"]["status"] == "skipped"
    assert peer.count("/api/chat") == 1

    # the skipped nodes and the answer, where a Prefect user looks: the Markdown artifact and the run's log
    markdown, logs = await artifacts_and_logs(hit)
    assert "**Skipped:** route, small, small_check, large, large_check, store" in markdown["markdown"]
    assert "### Output\n\n```\nfour\n```" in markdown["markdown"]
    assert "output: four" in logs


async def test_record_skips_makes_skipped_task_runs(peer, redis_cache):
    from flows.language import catalog
    from flows.orchestration.flow import orchestrate
    from flows.orchestration.task_runs import OrchestratedRunner

    peer.responder = lambda protocol, body: "four"
    await run_inline("answer", {"prompt": "What is 3+3?"})  # stored: the next run is a hit

    @flow(name="record-skips")
    async def recording() -> dict:
        return await orchestrate(catalog.load("answer"), {"prompt": "What is 3+3?"}, OrchestratedRunner(record_skips=True))

    hit = await recording(return_state=True)
    runs = await task_runs_of(hit, 9)
    assert [n for n, s in sorted(runs.items()) if s == "Skipped"] == [
        "large",
        "large_check",
        "route",
        "small",
        "small_check",
        "store",
    ]


async def test_bypass_cache_also_bypasses_prefects_result_cache(peer, redis_cache):
    answers = iter(["first", "second", "third"])
    peer.responder = lambda protocol, body: next(answers)
    inputs = {"prompt": "Name a fruit.", "namespace": "bypass"}
    first = await run_orchestrated("answer", inputs)
    assert first.output["text"] == "first"
    bypassed = await run_orchestrated("answer", {**inputs, "bypass_cache": True})
    assert bypassed.output["cache"] == "bypass"
    assert bypassed.output["text"] == "second", "answered from Prefect's result cache"
    assert bypassed.nodes["small"].status == "ran"
    assert peer.count("/api/chat") == 2


@pytest.mark.parametrize(
    ("pipeline", "inputs"),
    [
        ("answer", {"prompt": "Name a colour."}),
        ("answer", {"prompt": "Explain step by step how to design a database schema for a library."}),
        ("sentiment", {"text": "Great value, would buy again."}),
    ],
)
async def test_inline_and_orchestrated_give_the_same_result(peer, redis_cache, pipeline, inputs):
    peer.responder = lambda protocol, body: '{"label": "positive"}' if "label" in str(body) else f"{protocol} says hi"
    inline = (await run_inline(pipeline, {**inputs, "namespace": "inline"})).model_dump(mode="json")
    orchestrated = (await run_orchestrated(pipeline, {**inputs, "namespace": "orch"})).model_dump(mode="json")
    assert inline["mode"] == "inline" and orchestrated["mode"] == "orchestrated"
    assert strip_timing(inline) == strip_timing(orchestrated)
    assert inline["output"]["cache"] == "miss"


class ExplodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after: dict | None = None
    marker: str


@task(name="explode", cache_policy=NO_CACHE, persist_result=False)
async def explode(request: ExplodeRequest) -> str:
    if Path(request.marker).exists():
        raise RuntimeError("downstream failure after the paid call")
    return "fine"


@pytest.fixture
def explode_step() -> Iterator[None]:
    registry.register("explode", explode, ExplodeRequest, summary="fails while a marker file exists")
    yield
    registry._steps.pop("explode", None)


async def test_rerun_after_failure_does_not_pay_the_model_again(peer, explode_step, tmp_path, monkeypatch):
    # The prompt cache is down, so only Prefect's result persistence can save the second call.
    monkeypatch.setenv("FRUGAL_CACHE_URL", f"redis://127.0.0.1:{closed_port()}/0")
    marker = tmp_path / "fail"
    marker.write_text("x")
    pipeline = tmp_path / "paid-then-fail.yaml"
    pipeline.write_text(
        textwrap.dedent(
            f"""
            name: paid-then-fail
            version: "1"
            inputs:
              prompt: {{type: string}}
            nodes:
              large:
                uses: call_llm
                with: {{prompt: "{{{{ inputs.prompt }}}}", max_tokens: 8}}
              after:
                uses: explode
                with: {{after: "{{{{ large }}}}", marker: "{marker}"}}
            output: "{{{{ large.text }}}}"
            """
        )
    )
    peer.responder = lambda protocol, body: "paid answer"
    failed = await run_pipeline(str(pipeline), {"prompt": "an expensive question"}, return_state=True)
    assert failed.is_failed()
    assert peer.count("/v1/chat/completions") == 1

    marker.unlink()
    rerun = await run_pipeline(str(pipeline), {"prompt": "an expensive question"}, return_state=True)
    assert rerun.is_completed()
    result = await rerun.aresult()
    assert result["output"] == "paid answer"
    assert result["nodes"]["large"]["status"] == "cache_hit"
    assert peer.count("/v1/chat/completions") == 1, "the model was called again on the re-run"
