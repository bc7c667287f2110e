"""`frugal serve`: every pipeline as a Prefect deployment, served from this process.

No work pool or worker is needed: the runner finds scheduled and triggered runs
of these deployments and runs them in this process
(`flows.orchestration.inprocess_runner`), or with `--subprocess` Prefect's own
runner, a fresh subprocess per run. Each deployment is named after its pipeline and runs the
pipeline's typed flow (`flows.orchestration.pipeline_flows`), flow and deployment both named
after the pipeline (`answer/answer`): the UI's run form shows the pipeline's
inputs as typed fields, and callers pass the inputs as the run's parameters.
Schedules and default parameters come from `prefect.yaml`, so `frugal serve`
runs the nightly batch on the same cron as a deployed worker would.

A deployment's parameters are the pipeline's inputs as they were when serving
started: an input added to a pipeline file meanwhile is refused by the server
(`frugal call` says "has no input") until `frugal serve` is restarted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from prefect import serve
from prefect.schedules import Cron

from flows.language import catalog
from flows.orchestration.inprocess_runner import serve_in_process
from flows.orchestration.pipeline_flows import flow_for
from flows.orchestration.task_runs import RECORD_SKIPS
from tasks.core.errors import ConfigError


def project_settings(name: str, prefect_yaml: Path | None = None) -> dict[str, Any]:
    """The schedules and parameters `prefect.yaml` gives the deployment named `name`, if any.

    `frugal serve` runs the same schedules as `prefect deploy` (e.g. nightly-summaries at 02:00).
    """
    path = prefect_yaml or catalog.PROJECT_DIR / "prefect.yaml"
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    for deployment in config.get("deployments") or []:
        if isinstance(deployment, dict) and deployment.get("name") == name:
            schedules = [
                Cron(s["cron"], timezone=s.get("timezone"), active=s.get("active", True))
                for s in deployment.get("schedules") or []
                if isinstance(s, dict) and s.get("cron")
            ]
            return {"schedules": schedules, "parameters": deployment.get("parameters") or {}}
    return {}


def deployment_for(name: str) -> Any:
    pipeline = catalog.load(name)
    return flow_for(name).to_deployment(
        name=pipeline.name,
        description=pipeline.spec.description.strip() or None,
        tags=["frugal-flows", f"pipeline:{pipeline.name}"],
        version=pipeline.spec.version,
        **project_settings(pipeline.name),
    )


def _say(line: str) -> None:
    print(line, flush=True)


def serve_pipelines(names: list[str], *, in_process: bool = True, record_skips: bool = False) -> None:
    """Serve the pipelines: in this process (fastest, the default), or one subprocess per run (Prefect's runner).

    Prints one line on stdout once runs can be taken: what is served, and the API URL.
    `record_skips`: a *Skipped* task run per skipped node (slower; see `flows.orchestration.task_runs`).
    """
    RECORD_SKIPS.set(record_skips)
    if in_process:
        asyncio.run(serve_in_process([(flow_for(name), deployment_for(name)) for name in names], ready=_say))
    else:
        serve(*(deployment_for(name) for name in names))
