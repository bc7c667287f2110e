"""`RestCaller` against a real Prefect server (the test harness): deployments with a parameter
schema, and a scripted runner that plays the part of `frugal serve` (completes a run and
publishes its result artifact, or fails it with a message and an error log line).
The same calls against the served pipelines are in tests/e2e/test_rest.py."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import ArtifactCreate, LogCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Completed, Failed, Running

from flows.orchestration.rest_client import RestCaller
from tasks.core.errors import CallError, CallTimeout, DeploymentNotFound, ParametersRejected, RunFailed

pytestmark = [pytest.mark.usefixtures("prefect"), pytest.mark.slow]

SCHEMA = {
    "type": "object",
    "title": "Parameters",
    "properties": {
        "prompt": {"type": "string", "position": 0, "title": "prompt"},
        "max_tokens": {"type": "integer", "position": 1, "title": "max_tokens", "default": 256},
    },
    "required": ["prompt"],
}
RESULT = {"output": {"text": "Paris.", "cache": "miss"}, "nodes": {}}


@pytest.fixture(scope="module")
def client() -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as prefect_client:
        yield prefect_client


@pytest.fixture(scope="module")
def flow_name(client: SyncPrefectClient) -> str:
    """A flow of this module's own (the harness is shared) with a deployment `answer` with a parameter schema."""
    name = f"answer-{uuid4().hex[:8]}"
    flow_id = client.create_flow_from_name(name)
    client.create_deployment(flow_id, name="answer", parameter_openapi_schema=SCHEMA, enforce_parameter_schema=True)
    return name


def deployment_id(client: SyncPrefectClient, flow_name: str) -> UUID:
    return client.read_deployment_by_name(f"{flow_name}/answer").id


def runs_of(client: SyncPrefectClient, flow_name: str) -> list[FlowRun]:
    by_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id(client, flow_name)]))
    return client.read_flow_runs(deployment_filter=by_deployment, flow_run_filter=FlowRunFilter())


class ScriptedRunner:
    """Takes the next Scheduled run of the deployment (in a thread) and does `finish(client, run)` to it."""

    def __init__(self, client: SyncPrefectClient, flow_name: str, finish: Callable[[SyncPrefectClient, FlowRun], None]):
        self.seen = {run.id for run in runs_of(client, flow_name)}
        self.flow_name, self.finish = flow_name, finish
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with get_client(sync_client=True) as client:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    new = [r for r in runs_of(client, self.flow_name) if r.id not in self.seen]
                    if new:
                        client.set_flow_run_state(new[0].id, Running(), force=True)
                        self.finish(client, new[0])
                        return
                    time.sleep(0.05)
        except BaseException as exc:  # shown by the test
            self.error = exc

    def __enter__(self) -> ScriptedRunner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(timeout=60)
        assert self.error is None, self.error


def complete(client: SyncPrefectClient, run: FlowRun) -> None:
    client.create_artifact(ArtifactCreate(type="result", flow_run_id=run.id, data=RESULT))
    client.set_flow_run_state(run.id, Completed(), force=True)


def fail(client: SyncPrefectClient, run: FlowRun) -> None:
    error = "tasks.core.errors.StepError: node 'key': 'dict object' has no attribute 'missing'"
    line = f"Traceback (most recent call last):\n  ...\n{error}"
    client.create_logs(
        [LogCreate(name="prefect.flow_runs", level=logging.ERROR, message=line, timestamp=datetime.now(UTC), flow_run_id=run.id)]
    )
    client.set_flow_run_state(run.id, Failed(message="Flow run encountered an exception: StepError: node 'key'"), force=True)


def test_call_finds_creates_waits_and_reads_the_result_artifact(client, flow_name):
    with ScriptedRunner(client, flow_name, complete), RestCaller() as caller:
        called = caller.call(f"{flow_name}/answer", {"prompt": "hi", "max_tokens": 5}, timeout=60)
    assert called.state == "COMPLETED" and called.result == RESULT
    assert called.deployment == f"{flow_name}/answer"
    assert called.url == f"{caller.api_url.removesuffix('/api')}/runs/flow-run/{called.flow_run_id}"
    run = client.read_flow_run(UUID(called.flow_run_id))
    assert run.parameters == {"prompt": "hi", "max_tokens": 5} and run.deployment_id == deployment_id(client, flow_name)
    assert set(called.timings) == {"find_ms", "create_ms", "wait_ms", "total_ms"}
    assert called.timings["total_ms"] >= called.timings["wait_ms"] > 0


def test_the_call_returns_once_the_result_is_published_before_the_run_is_completed(client, flow_name):
    """`frugal serve` publishes the result artifact when the pipeline is done, a moment before the
    engine sets Completed: the caller answers as soon as the artifact is there."""

    def publish_then_linger(client: SyncPrefectClient, run: FlowRun) -> None:
        client.create_artifact(ArtifactCreate(type="result", flow_run_id=run.id, data=RESULT))
        time.sleep(3)
        client.set_flow_run_state(run.id, Completed(), force=True)

    with ScriptedRunner(client, flow_name, publish_then_linger), RestCaller() as caller:
        called = caller.call(f"{flow_name}/answer", {"prompt": "hi"}, timeout=60)
        assert called.result == RESULT and called.state == "COMPLETED"
        assert called.timings["wait_ms"] < 2500  # not held up by the lingering run
        run = client.read_flow_run(UUID(called.flow_run_id))
        assert run.state is not None and run.state.type == StateType.RUNNING


def test_a_completed_run_without_a_result_artifact_is_an_error(client, flow_name):
    def complete_silently(client: SyncPrefectClient, run: FlowRun) -> None:
        client.set_flow_run_state(run.id, Completed(), force=True)

    with ScriptedRunner(client, flow_name, complete_silently), RestCaller() as caller:
        with pytest.raises(CallError, match=r"completed but published no result artifact; is the deployment a frugal-flows"):
            caller.call(f"{flow_name}/answer", {"prompt": "hi"}, timeout=60)


def test_a_bare_deployment_name_is_found_when_only_one_flow_has_it(client, flow_name):
    with RestCaller() as caller:
        assert caller.find("answer").name == f"{flow_name}/answer"
        other = client.create_flow_from_name(f"other-{uuid4().hex[:8]}")
        client.create_deployment(other, name="answer")
        try:
            with pytest.raises(DeploymentNotFound, match=r"deployment name 'answer' is ambiguous: .*give FLOW/DEPLOYMENT"):
                RestCaller().find("answer")
        finally:
            for deployment in client.read_deployments(limit=200):
                if deployment.flow_id == other:
                    client.delete_deployment(deployment.id)


def test_no_wait_returns_the_scheduled_run(client, flow_name):
    with RestCaller() as caller:
        called = caller.call(f"{flow_name}/answer", {"prompt": "later"}, wait=False)
    assert called.state == "SCHEDULED" and called.result is None and "wait_ms" not in called.timings
    run = client.read_flow_run(UUID(called.flow_run_id))
    assert run.state is not None and run.state.type == StateType.SCHEDULED and run.parameters == {"prompt": "later"}


def test_unknown_deployment_lists_the_known_ones(flow_name):
    with RestCaller() as caller:
        with pytest.raises(DeploymentNotFound, match=rf"unknown deployment 'answr' at http://.*; known: .*{flow_name}/answer"):
            caller.call("answr", {})
        with pytest.raises(DeploymentNotFound, match=rf"unknown deployment 'x/answer'.*known: .*{flow_name}/answer"):
            caller.call("x/answer", {})


def test_parameters_refused_by_the_server_or_the_schema(client, flow_name):
    before = len(runs_of(client, flow_name))
    with RestCaller() as caller:
        with pytest.raises(ParametersRejected, match=r"refused the parameters: .*'x' is not of type 'integer'"):
            caller.call(f"{flow_name}/answer", {"prompt": "hi", "max_tokens": "x"})
        with pytest.raises(ParametersRejected, match=r"refused the parameters: .*'prompt' is a required property"):
            caller.call(f"{flow_name}/answer", {"max_tokens": 3})
        with pytest.raises(ParametersRejected, match=r"has no input 'colour' \(inputs: prompt, max_tokens\)"):
            caller.call(f"{flow_name}/answer", {"prompt": "hi", "colour": "red"})
    assert len(runs_of(client, flow_name)) == before  # nothing was created


def test_a_failed_run_says_why(client, flow_name):
    with ScriptedRunner(client, flow_name, fail), RestCaller() as caller:
        with pytest.raises(RunFailed) as failed:
            caller.call(f"{flow_name}/answer", {"prompt": "hi"}, timeout=60)
    message = str(failed.value)
    assert "ended Failed: Flow run encountered an exception: StepError: node 'key'" in message
    assert message.endswith("(last error: tasks.core.errors.StepError: node 'key': 'dict object' has no attribute 'missing')")


def test_a_run_nobody_picks_up_times_out_with_a_hint(flow_name):
    with RestCaller() as caller:
        with pytest.raises(CallTimeout, match=r"is still Scheduled after 0.2s: nothing picked it up; is `frugal serve`"):
            caller.call(f"{flow_name}/answer", {"prompt": "hi"}, timeout=0.2)
        with pytest.raises(CallError, match=r"timeout must be 0 or more seconds, got -5"):
            caller.call(f"{flow_name}/answer", {"prompt": "hi"}, timeout=-5)


def test_an_unreachable_api_says_how_to_fix_it():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    with pytest.raises(CallError, match=r"cannot reach the Prefect API at http://127.0.0.1:\d+/api .*PREFECT_API_URL"):
        RestCaller(closed, httpx_settings={"timeout": 2}).find("answer")


def test_inputs_follow_the_schema_order_and_types(flow_name):
    with RestCaller() as caller:
        assert caller.find(f"{flow_name}/answer").inputs == {"prompt": "string", "max_tokens": "integer"}
