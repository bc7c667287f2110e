"""The engine: run a compiled pipeline's nodes in dependency order.

One engine, two runners (see `flows.engine.runners`): *inline* calls each step's
function directly; *orchestrated* makes each node a Prefect task run named
after its node id. Same spec, same code, same results.

Independent nodes of one level run concurrently. A node whose `if:` is false
is skipped (its output is None). A node that fails stops the run with a
`StepError` naming it, unless it says `on_error: continue`, in which case its
output is None and its report says `failed`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from typing import Any

from flows.engine.batch import remove_run_directory, run_batch
from flows.engine.node_call import build_request, jsonable
from flows.engine.observers import RunInfo, node_observers_for, notify_node, notify_run, observers_for
from flows.engine.results import NodeReport, RunResult
from flows.engine.runners import InlineRunner, Runner
from flows.language import catalog
from flows.language.compiler import Node, Pipeline
from flows.language.templates import TemplateProblem, evaluate
from tasks.core.errors import StepError
from tasks.core.log import step_logger
from tasks.core.settings import pin_settings, unpin_settings
from tasks.core.subpipelines import SUBPIPELINES
from tasks.providers.tiers import probe_tiers, public_settings

#: this process's part of the run ids it makes (`new_run_id`)
_PROCESS_RUNS = uuid.uuid4().hex[:16]
_run_serial = itertools.count()


def new_run_id() -> str:
    """An id for a run without a flow run (an inline run): unique across processes and machines
    (a random part per process, its pid: a forked child has another) without a uuid4 per run (a
    system call for random bytes: a document of a batch is an inline run of its own pipeline)."""
    return f"{_PROCESS_RUNS}{os.getpid():x}-{next(_run_serial)}"


def _report(node: Node, value: Any, cached: bool, duration_ms: float) -> NodeReport:
    report = NodeReport(uses=node.step.name, status="cache_hit" if cached else "ran", duration_ms=round(duration_ms, 3))
    if isinstance(value, dict):
        if isinstance(value.get("cache"), str):
            report.cache = value["cache"]
            if value["cache"] == "hit":
                report.status = "cache_hit"
        if isinstance(value.get("note"), str):  # a step's one-line account (check_answer's verdict) for the node table
            report.reason = value["note"]
        if node.step.model_call and isinstance(value.get("model"), str):
            usage = value.get("usage") or {}
            report.model = value["model"]
            report.tokens_in = usage.get("input_tokens")
            report.tokens_out = usage.get("output_tokens")
            report.latency_ms = value.get("latency_ms")
    return report


def skipped(node: Node, context: dict[str, Any]) -> NodeReport | None:
    """The report of a node whose `if:` is false, or None if the node runs (for_each nodes test it per item).

    Its duration is 0: evaluating a condition takes well under the report's unit (1 µs).
    """
    if node.condition is None or node.for_each is not None:
        return None
    try:
        go = evaluate(node.condition, context)
    except TemplateProblem as exc:
        raise StepError(node.id, f"if: {exc}") from exc
    return None if go else NodeReport(uses=node.step.name, status="skipped", duration_ms=0.0, reason=node.skip_reason)


async def step_or_skip(
    node: Node, context: dict[str, Any], runner: Runner, run_id: str, pipeline: Pipeline | None = None
) -> tuple[Any, NodeReport]:
    report = skipped(node, context)
    if report is None:
        return await run_node(node, context, runner, run_id, pipeline)
    if runner.shows_skips:
        await runner.skip(node, node.skip_reason)
    return None, report


async def run_level(
    nodes: list[Node], context: dict[str, Any], runner: Runner, run_id: str, pipeline: Pipeline
) -> list[tuple[Any, NodeReport]]:
    """The nodes of one level, for a runner that shows no skips: those whose `if:` is false are
    skipped without a coroutine (a cache hit skips most of its pipeline), the others run at once
    (alone: awaited, without a task). Two tasks and a gather per level cost a cached document ~4 %
    of its CPU in a batch rerun."""
    done: list[tuple[Any, NodeReport] | None] = []
    running: list[int] = []
    for node in nodes:
        report = skipped(node, context)
        if report is None:
            running.append(len(done))
            done.append(None)
        else:
            done.append((None, report))
    if len(running) == 1:
        done[running[0]] = await run_node(nodes[running[0]], context, runner, run_id, pipeline)
    elif running:
        ran = await asyncio.gather(*(run_node(nodes[i], context, runner, run_id, pipeline) for i in running))
        for i, result in zip(running, ran, strict=True):
            done[i] = result
    return [result for result in done if result is not None]


async def run_node(
    node: Node, context: dict[str, Any], runner: Runner, run_id: str = "", pipeline: Pipeline | None = None
) -> tuple[Any, NodeReport]:
    """Run a node whose `if:` was true (see `skipped`); `pipeline` is the node's, for a batch whose
    chunks may run in other processes."""
    started = time.perf_counter()
    if node.for_each is not None:
        return await run_batch_node(node, context, runner, run_id, started, pipeline)
    request = build_request(node, context)
    try:
        value, cached = await runner.call(node, request)
    except Exception as exc:  # any step failure: stop the run or continue, as the node says
        if node.spec.on_error != "continue":
            raise StepError(node.id, str(exc) or type(exc).__name__) from exc
        step_logger().warning("node '%s' failed and the pipeline continues: %s", node.id, exc)
        elapsed = (time.perf_counter() - started) * 1000
        return None, NodeReport(uses=node.step.name, status="failed", duration_ms=round(elapsed, 3), error=str(exc))
    value = jsonable(value)
    return value, _report(node, value, cached, (time.perf_counter() - started) * 1000)


async def run_batch_node(
    node: Node, context: dict[str, Any], runner: Runner, run_id: str, started: float, pipeline: Pipeline | None = None
) -> tuple[Any, NodeReport]:
    """A `for_each:` node: its `if:` is per item; item failures are in its output, not raised."""
    try:
        value = await run_batch(node, context, runner, run_id, pipeline)
    except Exception as exc:
        if node.spec.on_error != "continue":
            raise StepError(node.id, str(exc) or type(exc).__name__) from exc
        elapsed = (time.perf_counter() - started) * 1000
        return None, NodeReport(uses=node.step.name, status="failed", duration_ms=round(elapsed, 3), error=str(exc))
    report = NodeReport(uses=node.step.name, status="ran", duration_ms=round((time.perf_counter() - started) * 1000, 3))
    if isinstance(value, dict) and value.get("failed"):
        report.error = f"{value['failed']} of {value['total']} items failed"
    return value, report


async def execute(pipeline: Pipeline, inputs: dict[str, Any] | None, runner: Runner, run: RunInfo | None = None) -> RunResult:
    """Validate the inputs, run every node in order, evaluate the output.

    Observers (`flows.engine.observers`) hear of the end of the run (and, if they ask, of every node).
    The run and its steps see one snapshot of the settings (`pin_settings`).
    """
    started = time.perf_counter()
    pinned = pin_settings()
    subpipelines = SUBPIPELINES.set(run_subpipeline)
    try:
        values = pipeline.validate_inputs(inputs)
        await probe_tiers()  # is Ollama up? asked once per process, without blocking the loop
        context: dict[str, Any] = {"inputs": values, "settings": public_settings(), "pipeline": pipeline.identity}
        reports: dict[str, NodeReport] = {}
        if run is None:
            run = RunInfo(pipeline=pipeline, mode=runner.mode, inputs=values, values=context, reports=reports)
        else:
            run.inputs, run.values, run.reports = values, context, reports  # what observers read at the end
        batched = pipeline.batched
        # a batch spools to a folder named after the run; other runs need no id
        run_id = (run.flow_run_id or new_run_id()) if batched else ""
        watching = observers_for(runner.mode)
        node_watchers = node_observers_for(runner.mode)
        try:
            for level in pipeline.levels:
                if len(level) == 1:
                    node = pipeline.nodes[level[0]]
                    report = skipped(node, context)  # no coroutine for a skipped node: a cache hit skips four
                    if report is None:
                        done = [await run_node(node, context, runner, run_id, pipeline)]
                    else:
                        if runner.shows_skips:
                            await runner.skip(node, node.skip_reason)
                        done = [(None, report)]
                elif runner.shows_skips:  # each skip is a visible task run: made alongside the nodes that run
                    done = list(
                        await asyncio.gather(*(step_or_skip(pipeline.nodes[n], context, runner, run_id, pipeline) for n in level))
                    )
                else:
                    done = await run_level([pipeline.nodes[n] for n in level], context, runner, run_id, pipeline)
                for node_id, (value, report) in zip(level, done, strict=True):
                    context[node_id] = value
                    reports[node_id] = report
                    if node_watchers:
                        notify_node(run, node_id, value, report, node_watchers)
            try:
                output = evaluate(pipeline.output, context)
            except TemplateProblem as exc:
                raise StepError("output", str(exc)) from exc
            result = RunResult(
                pipeline=pipeline.spec.name,
                version=pipeline.spec.version,
                mode=runner.mode,
                output=output,
                nodes={n: reports[n] for n in pipeline.spec.nodes if n in reports},
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
        except BaseException as exc:
            if batched:
                remove_run_directory(run_id)
            if watching:
                await notify_run(run, None, exc, watching)
            raise
        if batched:
            remove_run_directory(run_id)
        if watching:
            await notify_run(run, result, None, watching)
        return result
    finally:
        SUBPIPELINES.reset(subpipelines)
        unpin_settings(pinned)


async def run_subpipeline(name: str, inputs: dict[str, Any]) -> Any:
    """A pipeline run inline from a step (`run_pipeline`): its nodes are plain calls, never task runs."""
    result = await execute(catalog.load(name), inputs, InlineRunner())
    return result.output
