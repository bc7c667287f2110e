"""The Prefect flow that runs any pipeline, and the inline entry point.

`run_pipeline` is the deployment entrypoint (``flows/orchestration/flow.py:run_pipeline``):
each node becomes a task run named after its node id, so the run graph in the
Prefect UI mirrors the YAML. It is an async flow: a sync flow pays about a
second per run joining Prefect's heartbeat thread. It sets no `flow_run_name`:
renaming a run costs an extra API round trip (~75 ms per run, measured).
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.context import FlowRunContext

from flows.engine.executor import execute
from flows.engine.observers import RunInfo
from flows.engine.results import RunResult
from flows.language import catalog
from flows.language.compiler import Pipeline
from flows.orchestration.inline import run_inline
from flows.orchestration.observers import install
from flows.orchestration.task_runs import OrchestratedRunner

__all__ = ["orchestrate", "run_inline", "run_orchestrated", "run_pipeline"]


@flow(name="frugal-pipeline", log_prints=False)
async def run_pipeline(pipeline: str = "answer", inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the pipeline `pipeline` (a name in deployments/ or a YAML path) on `inputs`."""
    return await orchestrate(catalog.load(pipeline), inputs)


async def orchestrate(
    compiled: Pipeline, inputs: dict[str, Any] | None, runner: OrchestratedRunner | None = None
) -> dict[str, Any]:
    """The body of every pipeline flow: run the nodes as task runs (the run's observers publish its
    result and Markdown artifacts, `flows.orchestration.run_artifact`)."""
    install()
    ctx = FlowRunContext.get()
    current = ctx.flow_run if ctx is not None else None
    run = RunInfo(
        pipeline=compiled,
        mode="orchestrated",
        inputs=inputs or {},
        flow_run_id=str(current.id) if current is not None else None,
        deployment_id=str(current.deployment_id) if current is not None and current.deployment_id else None,
    )
    runner = runner or OrchestratedRunner()
    if run.flow_run_id is not None:  # the id its batches run under
        runner.connect_early(compiled, run.flow_run_id)
    try:
        result = await execute(compiled, inputs, runner, run)
    finally:
        await runner.close()
    return result.model_dump(mode="json")


async def run_orchestrated(pipeline: str, inputs: dict[str, Any] | None = None) -> RunResult:
    """Run a pipeline as a Prefect flow run and return its result."""
    return RunResult.model_validate(await run_pipeline(pipeline, inputs))
