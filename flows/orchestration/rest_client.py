"""Call a deployed pipeline over Prefect's REST API, through Prefect's own client.

    with RestCaller("http://127.0.0.1:4200/api") as caller:
        called = caller.call("answer", {"prompt": "What is the capital of France?"})
        called.result["output"]["text"]

What it does, with `prefect.client.orchestration.get_client(sync_client=True)` (so the API URL,
key, auth string, TLS settings and the client's own retries of 429/503 are Prefect's):

1. find the deployment: `read_deployment_by_name("flow/deployment")`, or for a bare name
   `read_deployments` filtered by name (one match wanted);
2. create a flow run with the pipeline's inputs as its parameters
   (`create_flow_run_from_deployment`); the server checks them against the deployment's
   parameter schema; unknown inputs are refused here first, against the same schema;
3. wait for the output: poll the run's `result` artifact (`read_artifacts`; see
   `flows.orchestration.run_artifact` for why an artifact and not the persisted result) every
   50 ms for 2 s, then up to every 500 ms, and the run's state every fourth poll, to stop at
   once on a failed run. The artifact is published when the pipeline has finished, before the
   engine sets the run's Completed state: waiting for it instead of polling the state until
   Completed, then reading the artifact, saves the Completed state's round trip, the poll that
   notices it and the artifact's read (bench_rest.py, old and new interleaved on a 2-core
   machine: a cache hit's p50 359-460 -> 242-315 ms). Polls every 25 ms were slower (they load
   the server the run needs). `wait_for_flow_run`'s event stream would cost a websocket per call.

Errors are `CallError`s that say what went wrong: unknown deployment (with the known
ones), parameters refused (the server's validation message), run failed (its state
message and its last error log line), timeout (the state the run was left in).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    DeploymentFilter,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterId,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterLevel,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import ArtifactSort, LogSort
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks.core.errors import CallError, CallTimeout, DeploymentNotFound, ParametersRejected, RunFailed

DEFAULT_API_URL = "http://127.0.0.1:4200/api"
FAILED_STATES = frozenset({StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})
RESULT_ARTIFACT_TYPE = "result"
#: JSON-schema type of a parameter → the input type `frugal call` converts `key=value` to
SCHEMA_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "array": "list",
    "object": "object",
}


@dataclass
class Deployment:
    id: UUID
    name: str  # flow/deployment
    schema: dict[str, Any]

    @property
    def inputs(self) -> dict[str, str]:
        """Input name → input type (string, integer, number, boolean, list, object)."""
        props = self.schema.get("properties") or {}
        ordered = sorted(props.items(), key=lambda item: item[1].get("position", len(props)))  # the server may reorder keys
        return {k: SCHEMA_TYPES.get(str(v.get("type")), "string") for k, v in ordered}


@dataclass
class CallResult:
    deployment: str
    flow_run_id: str
    state: str
    url: str
    #: the pipeline's run result (`output`, one report per node), when waited for
    result: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _detail(exc: httpx.HTTPStatusError) -> str:
    try:
        body = exc.response.json()
    except ValueError:
        return exc.response.text.strip()[:500] or exc.response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return str(detail)


class RestCaller:
    """Calls deployments with Prefect's client. `api_url` (default: Prefect's PREFECT_API_URL setting,
    else http://127.0.0.1:4200/api); `httpx_settings` go to the client (e.g. a `timeout`)."""

    def __init__(self, api_url: str | None = None, *, httpx_settings: dict[str, Any] | None = None) -> None:
        self.api_url = (api_url or PREFECT_API_URL.value() or DEFAULT_API_URL).rstrip("/")
        with temporary_settings({PREFECT_API_URL: self.api_url}):  # never a temporary ephemeral server
            self._client: SyncPrefectClient = get_client(sync_client=True, httpx_settings=httpx_settings)
        self._found: dict[str, Deployment] = {}
        self._entered = False

    @property
    def client(self) -> SyncPrefectClient:
        """Prefect's client, opened on first use (`with RestCaller() as caller` closes it)."""
        if not self._entered:
            try:
                self._client.__enter__()
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
            self._entered = True
        return self._client

    def __enter__(self) -> RestCaller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._entered:
            self._entered = False
            self._client.__exit__(None, None, None)

    def _unreachable(self, exc: Exception) -> CallError:
        return CallError(
            f"cannot reach the Prefect API at {self.api_url} ({type(exc).__name__}: {exc}); "
            "start it (`prefect server start`) or set PREFECT_API_URL"
        )

    def _api(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """One client call; transport and HTTP errors become `CallError`s naming `what`."""
        try:
            return call(*args, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        except httpx.HTTPStatusError as exc:
            raise CallError(f"{what}: HTTP {exc.response.status_code}: {_detail(exc)}") from exc

    # -- deployments -------------------------------------------------------------------------

    def deployment_names(self) -> list[str]:
        """Every deployment as `flow/deployment`."""
        deployments = self._api("listing deployments", self.client.read_deployments, limit=200)
        flow_ids = sorted({d.flow_id for d in deployments}, key=str)
        flows = self._api("listing flows", self.client.read_flows, flow_filter=FlowFilter(id=FlowFilterId(any_=flow_ids)))
        flow_names = {f.id: f.name for f in flows} if flow_ids else {}
        return sorted(f"{flow_names.get(d.flow_id, '?')}/{d.name}" for d in deployments)

    def _not_found(self, name: str) -> DeploymentNotFound:
        known = self.deployment_names()
        hint = "is `frugal serve` running, or did you run `prefect deploy --all`?"
        return DeploymentNotFound(f"unknown deployment '{name}' at {self.api_url}; known: {', '.join(known) or f'none ({hint})'}")

    def find(self, name: str) -> Deployment:
        """A deployment by `flow/deployment`, or by deployment name alone when only one has it."""
        found = self._found.get(name)
        if found is not None:
            return found
        if "/" in name:
            try:
                body = self._api(f"reading deployment '{name}'", self.client.read_deployment_by_name, name)
            except (ObjectNotFound, ValueError) as exc:  # ValueError: more than one '/'
                raise self._not_found(name) from exc
            full = name
        else:
            by_name = DeploymentFilter(name=DeploymentFilterName(any_=[name]))
            matches = self._api(f"finding deployment '{name}'", self.client.read_deployments, deployment_filter=by_name)
            if not matches:
                raise self._not_found(name)
            flows = self._api(
                "reading flows",
                self.client.read_flows,
                flow_filter=FlowFilter(id=FlowFilterId(any_=[m.flow_id for m in matches])),
            )
            if len(matches) > 1:
                names = sorted(f"{f.name}/{name}" for f in flows)
                raise DeploymentNotFound(f"deployment name '{name}' is ambiguous: {', '.join(names)}; give FLOW/DEPLOYMENT")
            body, full = matches[0], f"{flows[0].name}/{name}"
        found = self._found[name] = Deployment(body.id, full, dict(body.parameter_openapi_schema or {}))
        return found

    # -- flow runs ---------------------------------------------------------------------------

    def create_run(self, deployment: Deployment, parameters: dict[str, Any]) -> FlowRun:
        """A flow run of the deployment; refuses unknown inputs, relays the server's validation errors."""
        known = deployment.inputs
        unknown = sorted(set(parameters) - set(known))
        if known and unknown:
            raise ParametersRejected(
                f"deployment '{deployment.name}' has no input {', '.join(map(repr, unknown))} (inputs: {', '.join(known)})"
            )
        try:
            run: FlowRun = self.client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            if status in (409, 422):
                raise ParametersRejected(f"deployment '{deployment.name}' refused the parameters: {_detail(exc)}") from exc
            if status == 404:
                self._found.clear()
                raise self._not_found(deployment.name) from exc
            raise CallError(f"creating a run of '{deployment.name}': HTTP {status}: {_detail(exc)}") from exc
        return run

    def read_run(self, run_id: UUID) -> FlowRun:
        run: FlowRun = self._api(f"reading flow run {run_id}", self.client.read_flow_run, run_id)
        return run

    def wait(self, run_id: UUID, timeout: float, *, first_poll: float = 0.05, max_poll: float = 0.5) -> dict[str, Any]:
        """Poll until the run has published its result; return it. `RunFailed` if the run ends
        otherwise, `CallTimeout` after `timeout` s.

        The `result` artifact every `first_poll` s for the first 2 s, then less and less often, up
        to every `max_poll` s; the run's state every fourth poll and at the deadline.
        """
        started = time.monotonic()
        deadline = started + timeout
        interval = first_poll
        polls = 0
        while True:
            published = self._result_of(run_id)
            if published is not None:
                return published
            polls += 1
            timed_out = time.monotonic() >= deadline
            if polls % 4 == 0 or timed_out:
                run = self.read_run(run_id)
                kind = run.state.type if run.state is not None else None
                if kind == StateType.COMPLETED:  # final: its result artifact, if it has one, is there now
                    return self.output(run_id)
                if kind in FAILED_STATES:
                    raise RunFailed(self._failure(run))
                if timed_out:
                    hint = ""
                    if kind in (StateType.SCHEDULED, None):
                        hint = ": nothing picked it up; is `frugal serve` (or a worker of its work pool) running?"
                    state_name = (run.state.name if run.state is not None else None) or kind
                    raise CallTimeout(f"flow run {run.name} ({run_id}) is still {state_name} after {timeout:g}s{hint}")
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            if time.monotonic() - started > 2.0:
                interval = min(max_poll, interval * 1.5)

    def _failure(self, run: FlowRun) -> str:
        state = run.state
        ended = (state.name or state.type.value) if state is not None else "?"
        text = f"flow run {run.name} ({run.id}) ended {ended}: {(state.message if state is not None else '') or ''}"
        logs = self._api(
            "reading the run's logs",
            self.client.read_logs,
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]), level=LogFilterLevel(ge_=40)),
            sort=LogSort.TIMESTAMP_DESC,
            limit=1,
        )
        if logs:
            last = str(logs[0].message).strip().splitlines()
            errors = [line for line in last if "Error" in line or "error" in line]
            text += f" (last error: {(errors or last or [''])[-1].strip()[:500]})"
        return text.strip()

    def _result_of(self, run_id: UUID) -> dict[str, Any] | None:
        """The run's result (output + node reports) from its `result` artifact, if published yet."""
        artifacts = self._api(
            "reading the run's result artifact",
            self.client.read_artifacts,
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), type=ArtifactFilterType(any_=[RESULT_ARTIFACT_TYPE])
            ),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
        if not artifacts or not isinstance(artifacts[0].data, dict):
            return None
        return dict(artifacts[0].data)

    def output(self, run_id: UUID) -> dict[str, Any]:
        """The result of a completed run, from its `result` artifact."""
        published = self._result_of(run_id)
        if published is None:
            raise CallError(
                f"flow run {run_id} completed but published no result artifact; "
                "is the deployment a frugal-flows pipeline flow (flows/orchestration/pipeline_flows.py)?"
            )
        return published

    def ui_url(self, run_id: UUID) -> str:
        base = self.api_url[: -len("/api")] if self.api_url.endswith("/api") else self.api_url
        return f"{base}/runs/flow-run/{run_id}"

    def call(self, name: str, parameters: dict[str, Any], *, wait: bool = True, timeout: float = 300.0) -> CallResult:
        """Find, create, (wait, read the output): the whole REST round trip."""
        if timeout < 0:
            raise CallError(f"timeout must be 0 or more seconds, got {timeout:g}")
        started = time.perf_counter()
        deployment = self.find(name)
        found = time.perf_counter()
        run = self.create_run(deployment, parameters)
        created = time.perf_counter()
        state = run.state.type.value if run.state is not None else "None"
        called = CallResult(deployment.name, str(run.id), state, self.ui_url(run.id))
        called.timings = {"find_ms": (found - started) * 1000, "create_ms": (created - found) * 1000}
        if not wait:
            return called
        called.result = self.wait(run.id, timeout)
        called.state = StateType.COMPLETED.value  # its pipeline finished; Prefect records the state a moment later
        done = time.perf_counter()
        called.timings.update(wait_ms=(done - created) * 1000, total_ms=(done - started) * 1000)
        return called
