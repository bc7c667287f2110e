"""`run_pipeline`: run another pipeline inline, as one step (e.g. per item of a batch).

The inner pipeline's nodes are called directly (no task runs): inside a
`for_each:` chunk, a task run per item is exactly what must not happen.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.subpipelines import run_subpipeline


class SubpipelineRequest(BaseModel):
    """Arguments of `run_pipeline`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="a pipeline name in deployments/")
    inputs: dict[str, Any] = Field(default_factory=dict)


async def run_pipeline_step(request: SubpipelineRequest) -> Any:
    """Run the named pipeline inline and return its output."""
    return await run_subpipeline(request.name, request.inputs)
