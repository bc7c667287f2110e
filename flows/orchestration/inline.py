"""Run a pipeline inline: node functions called directly in this process, no flow or task runs.

Kept apart from `flows.orchestration.flow` so an inline caller (`frugal run` without a Prefect
server) does not import Prefect's flow engine and its server-side modules.
"""

from __future__ import annotations

from typing import Any

from flows import ledger
from flows.engine.executor import execute
from flows.engine.results import RunResult
from flows.engine.runners import InlineRunner
from flows.language import catalog
from flows.language.compiler import Pipeline


async def run_inline(pipeline: str | Pipeline, inputs: dict[str, Any] | None = None) -> RunResult:
    """Run a pipeline without Prefect task runs: for latency-critical callers."""
    ledger.install()  # the run artifacts and the cost table artifact are for flow runs only
    compiled = catalog.load(pipeline) if isinstance(pipeline, str) else pipeline
    return await execute(compiled, inputs, InlineRunner())
