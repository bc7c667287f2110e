"""Runs started over REST (as the Prefect UI starts them) read and write only inside the file roots.

The served worker reads and writes only inside its FRUGAL_FILE_ROOTS (this session's folder); a caller who names
another folder, or `/proc/self/environ`, gets a failed run that says why, and no model step runs.
"""

from __future__ import annotations

import time

import httpx
import pytest

from flows.orchestration.rest_client import RestCaller
from tasks.core.errors import RunFailed

pytestmark = pytest.mark.slow

MODEL_STEPS = {"route", "small", "large", "part_summaries", "store", "write"}


def task_run_names(api_url: str, flow_run_id: str) -> set[str]:
    """Task runs are recorded from events a moment after the run ends: poll until they are final."""
    deadline = time.monotonic() + 30
    while True:
        runs = httpx.post(f"{api_url}/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}}).json()
        if (
            runs and all(r["state"] and r["state"]["type"] in ("COMPLETED", "FAILED") for r in runs)
        ) or time.monotonic() > deadline:
            return {r["name"] for r in runs}
        time.sleep(0.2)


@pytest.mark.parametrize(
    ("pipeline", "parameters", "says"),
    [
        (
            "nightly-summaries",
            {"source": "/etc", "destination": "{root}/summaries"},
            r"source /etc is outside .*FRUGAL_FILE_ROOTS",
        ),
        (
            "nightly-summaries",
            {"source": "{root}/inbox", "destination": "/tmp/anywhere"},
            r"destination /tmp/anywhere is outside .*FRUGAL_FILE_WRITE_ROOTS",
        ),
        (
            "summarise-document",
            {"id": "env", "source": "/proc/self/environ", "destination": "{root}/summaries"},
            r"document /proc/self/environ .*system folder",
        ),
    ],
)
def test_a_rest_run_cannot_reach_outside_the_roots(served_prefect, pipeline, parameters, says):
    root = served_prefect.folder / "data"  # the served worker's FRUGAL_FILE_ROOTS
    parameters = {k: v.format(root=root) for k, v in parameters.items()}
    with RestCaller(served_prefect.api_url) as caller:
        with pytest.raises(RunFailed, match=says) as failed:
            caller.call(pipeline, parameters, timeout=120)
        run_id = str(failed.value).split("(", 1)[1].split(")", 1)[0]
        assert not task_run_names(served_prefect.api_url, run_id) & MODEL_STEPS
