"""How a step runs another pipeline without importing the engine.

The engine puts a function that runs a pipeline inline into the run's context
(`SUBPIPELINES`, a context variable, like the run's settings snapshot); the
`run_pipeline` step calls it. Steps stay below the engine in the layers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from tasks.core.errors import ConfigError

#: (pipeline name, inputs) -> the pipeline's output
RunSubpipeline = Callable[[str, dict[str, Any]], Awaitable[Any]]

SUBPIPELINES: ContextVar[RunSubpipeline | None] = ContextVar("frugal_subpipelines", default=None)


async def run_subpipeline(name: str, inputs: dict[str, Any]) -> Any:
    runner = SUBPIPELINES.get()
    if runner is None:
        raise ConfigError("the run_pipeline step runs only inside a pipeline run (the engine provides the runner)")
    return await runner(name, inputs)
