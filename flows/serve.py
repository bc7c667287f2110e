"""`frugal serve`: every pipeline as a Prefect deployment, served from this process.

No work pool or worker is needed: Prefect's runner polls for scheduled and
triggered runs of these deployments and runs them here. Each deployment is
named after its pipeline and passes `pipeline` as a fixed parameter; callers
give `inputs`.
"""

from __future__ import annotations

from typing import Any

from prefect import serve

from flows import catalog
from flows.pipeline_flow import run_pipeline


def deployment_for(name: str) -> Any:
    pipeline = catalog.load(name)
    defaults = {k: v.default for k, v in pipeline.spec.inputs.items() if not v.required}
    return run_pipeline.to_deployment(
        name=pipeline.name,
        parameters={"pipeline": pipeline.name, "inputs": defaults},
        description=pipeline.spec.description.strip() or None,
        tags=["frugal-flows", f"pipeline:{pipeline.name}"],
        version=pipeline.spec.version,
    )


def serve_pipelines(names: list[str]) -> None:
    serve(*(deployment_for(name) for name in names))
