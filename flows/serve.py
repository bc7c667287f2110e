"""`frugal serve`: every pipeline as a Prefect deployment, served from this process.

No work pool or worker is needed: Prefect's runner polls for scheduled and
triggered runs of these deployments and runs them here (each in a fresh
subprocess). Each deployment is named after its pipeline and runs the
pipeline's typed flow (`flows.pipeline_flows`), flow and deployment both named
after the pipeline (`answer/answer`): the UI's run form shows the pipeline's
inputs as typed fields, and callers pass the inputs as the run's parameters.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import serve

from flows import catalog
from flows.pipeline_flows import flow_for


def deployment_for(name: str) -> Any:
    pipeline = catalog.load(name)
    return flow_for(name).to_deployment(
        name=pipeline.name,
        description=pipeline.spec.description.strip() or None,
        tags=["frugal-flows", f"pipeline:{pipeline.name}"],
        version=pipeline.spec.version,
    )


def serve_pipelines(names: list[str], *, in_process: bool = True) -> None:
    """Serve the pipelines: in this process (fastest, the default), or one subprocess per run (Prefect's runner)."""
    if in_process:
        from flows.inprocess_runner import serve_in_process

        asyncio.run(serve_in_process([(flow_for(name), deployment_for(name)) for name in names]))
    else:
        serve(*(deployment_for(name) for name in names))
