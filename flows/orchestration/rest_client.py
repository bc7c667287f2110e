"""Call a deployed pipeline over Prefect's REST API with nothing but httpx.

    with RestCaller("http://127.0.0.1:4200/api") as caller:
        called = caller.call("answer", {"prompt": "What is the capital of France?"})
        called.result["output"]["text"]

What it does, request by request (the README shows the same with curl):

1. find the deployment: `GET /deployments/name/{flow}/{deployment}`, or for a bare name
   `POST /deployments/filter` by name (one match wanted);
2. create a flow run with the pipeline's inputs as its parameters:
   `POST /deployments/{id}/create_flow_run`; the server checks them against the
   deployment's parameter schema (types, required inputs); unknown inputs are refused here,
   before the request, against the same schema;
3. poll `GET /flow_runs/{id}` until the run is final (every 50 ms for 2 s, then up to every 500 ms);
4. read the output: the run's `result` artifact (`POST /artifacts/filter`; see
   `flows.orchestration.run_artifact` for why an artifact and not the persisted result).

Errors are `CallError`s that say what went wrong: unknown deployment (with the known
ones), parameters refused (the server's validation message), run failed (its state
message and its last error log line), timeout (the state the run was left in).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tasks.core.errors import CallError, CallTimeout, DeploymentNotFound, ParametersRejected, RunFailed

DEFAULT_API_URL = "http://127.0.0.1:4200/api"
FAILED_STATES = frozenset({"FAILED", "CRASHED", "CANCELLED"})
RESULT_ARTIFACT_TYPE = "result"
#: retries of a request the server answered 429 or 503 (0.2 s, doubled each time: 6.2 s in all)
RETRIES = 5
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
    id: str
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


def api_url_from_env() -> str:
    return os.environ.get("PREFECT_API_URL") or DEFAULT_API_URL


def _auth_headers() -> dict[str, str]:
    if os.environ.get("PREFECT_API_KEY"):
        return {"Authorization": f"Bearer {os.environ['PREFECT_API_KEY']}"}
    if os.environ.get("PREFECT_API_AUTH_STRING"):
        import base64

        return {"Authorization": "Basic " + base64.b64encode(os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()}
    return {}


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return str(detail)


class RestCaller:
    """A small client of Prefect's REST API for calling deployments. Pass `http` to inject a client."""

    def __init__(self, api_url: str | None = None, *, http: httpx.Client | None = None, timeout: float = 30.0) -> None:
        self.api_url = (api_url or api_url_from_env()).rstrip("/")
        self._owns_http = http is None
        self.http = http or httpx.Client(base_url=self.api_url, timeout=timeout, headers=_auth_headers())
        self._found: dict[str, Deployment] = {}

    def __enter__(self) -> RestCaller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API request; 429 and 503 (a busy server, e.g. SQLite locked) are retried like Prefect's client does."""
        for attempt in range(RETRIES + 1):
            try:
                response = self.http.request(method, self.api_url + path, **kwargs)
            except httpx.TransportError as exc:
                raise CallError(
                    f"cannot reach the Prefect API at {self.api_url} ({type(exc).__name__}: {exc}); "
                    "start it (`prefect server start`) or set PREFECT_API_URL"
                ) from exc
            if response.status_code not in (429, 503) or attempt == RETRIES:
                return response
            retry_after = response.headers.get("retry-after", "")
            time.sleep(float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.is_error:
            raise CallError(f"{method} {path}: HTTP {response.status_code}: {_detail(response)}")
        return response.json()

    # -- deployments -------------------------------------------------------------------------

    def deployment_names(self) -> list[str]:
        """Every deployment as `flow/deployment`."""
        deployments = self._json("POST", "/deployments/filter", json={"limit": 200})
        flow_ids = sorted({d["flow_id"] for d in deployments})
        flows = self._json("POST", "/flows/filter", json={"flows": {"id": {"any_": flow_ids}}}) if flow_ids else []
        flow_names = {f["id"]: f["name"] for f in flows}
        return sorted(f"{flow_names.get(d['flow_id'], '?')}/{d['name']}" for d in deployments)

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
            flow_name, _, dep_name = name.partition("/")
            response = self._request("GET", f"/deployments/name/{flow_name}/{dep_name}")
            if response.status_code == 404:
                raise self._not_found(name)
            if response.is_error:
                raise CallError(f"reading deployment '{name}': HTTP {response.status_code}: {_detail(response)}")
            body, full = response.json(), name
        else:
            matches = self._json("POST", "/deployments/filter", json={"deployments": {"name": {"any_": [name]}}})
            if not matches:
                raise self._not_found(name)
            if len(matches) > 1:
                flows = self._json("POST", "/flows/filter", json={"flows": {"id": {"any_": [m["flow_id"] for m in matches]}}})
                names = sorted(f"{f['name']}/{name}" for f in flows)
                raise DeploymentNotFound(f"deployment name '{name}' is ambiguous: {', '.join(names)}; give FLOW/DEPLOYMENT")
            body = matches[0]
            flow = self._json("GET", f"/flows/{body['flow_id']}")
            full = f"{flow['name']}/{name}"
        found = self._found[name] = Deployment(str(body["id"]), full, body.get("parameter_openapi_schema") or {})
        return found

    # -- flow runs ---------------------------------------------------------------------------

    def create_run(self, deployment: Deployment, parameters: dict[str, Any]) -> dict[str, Any]:
        """A flow run of the deployment; refuses unknown inputs, relays the server's validation errors."""
        known = deployment.inputs
        unknown = sorted(set(parameters) - set(known))
        if known and unknown:
            raise ParametersRejected(
                f"deployment '{deployment.name}' has no input {', '.join(map(repr, unknown))} (inputs: {', '.join(known)})"
            )
        response = self._request("POST", f"/deployments/{deployment.id}/create_flow_run", json={"parameters": parameters})
        if response.status_code in (409, 422):
            raise ParametersRejected(f"deployment '{deployment.name}' refused the parameters: {_detail(response)}")
        if response.status_code == 404:
            self._found.clear()
            raise self._not_found(deployment.name)
        if response.is_error:
            raise CallError(f"creating a run of '{deployment.name}': HTTP {response.status_code}: {_detail(response)}")
        return dict(response.json())

    def read_run(self, run_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/flow_runs/{run_id}"))

    def wait(self, run_id: str, timeout: float, *, first_poll: float = 0.05, max_poll: float = 0.5) -> dict[str, Any]:
        """Poll until the run is final; raise `RunFailed` unless it completed, `CallTimeout` after `timeout` s.

        Every `first_poll` s for the first 2 s (an in-process cache hit completes in a few hundred ms),
        then less and less often, up to every `max_poll` s.
        """
        started = time.monotonic()
        deadline = started + timeout
        interval = first_poll
        while True:
            run = self.read_run(run_id)
            state = run.get("state") or {}
            kind = state.get("type")
            if kind == "COMPLETED":
                return run
            if kind in FAILED_STATES:
                raise RunFailed(self._failure(run))
            if time.monotonic() >= deadline:
                hint = ""
                if kind in ("SCHEDULED", None):
                    hint = ": nothing picked it up; is `frugal serve` (or a worker of its work pool) running?"
                raise CallTimeout(
                    f"flow run {run['name']} ({run_id}) is still {state.get('name') or kind} after {timeout:g}s{hint}"
                )
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            if time.monotonic() - started > 2.0:
                interval = min(max_poll, interval * 1.5)

    def _failure(self, run: dict[str, Any]) -> str:
        state = run.get("state") or {}
        ended = state.get("name") or state.get("type")
        text = f"flow run {run['name']} ({run['id']}) ended {ended}: {state.get('message') or ''}"
        logs = self._json(
            "POST",
            "/logs/filter",
            json={"logs": {"flow_run_id": {"any_": [run["id"]]}, "level": {"ge_": 40}}, "sort": "TIMESTAMP_DESC", "limit": 1},
        )
        if logs:
            last = str(logs[0].get("message", "")).strip().splitlines()
            errors = [line for line in last if "Error" in line or "error" in line]
            text += f" (last error: {(errors or last or [''])[-1].strip()[:500]})"
        return text.strip()

    def output(self, run_id: str) -> dict[str, Any]:
        """The run's result (output + node reports) from its `result` artifact."""
        artifacts = self._json(
            "POST",
            "/artifacts/filter",
            json={
                "artifacts": {"flow_run_id": {"any_": [run_id]}, "type": {"any_": [RESULT_ARTIFACT_TYPE]}},
                "sort": "CREATED_DESC",
                "limit": 1,
            },
        )
        if not artifacts:
            raise CallError(
                f"flow run {run_id} completed but published no result artifact; "
                "is the deployment a frugal-flows pipeline flow (flows/orchestration/pipeline_flows.py)?"
            )
        return dict(artifacts[0]["data"])

    def ui_url(self, run_id: str) -> str:
        base = self.api_url[: -len("/api")] if self.api_url.endswith("/api") else self.api_url
        return f"{base}/runs/flow-run/{run_id}"

    def call(self, name: str, parameters: dict[str, Any], *, wait: bool = True, timeout: float = 300.0) -> CallResult:
        """Find, create, (wait, read the output): the whole REST round trip."""
        started = time.perf_counter()
        deployment = self.find(name)
        found = time.perf_counter()
        run = self.create_run(deployment, parameters)
        created = time.perf_counter()
        called = CallResult(deployment.name, str(run["id"]), str((run.get("state") or {}).get("type")), self.ui_url(run["id"]))
        called.timings = {"find_ms": (found - started) * 1000, "create_ms": (created - found) * 1000}
        if not wait:
            return called
        final = self.wait(called.flow_run_id, timeout)
        done = time.perf_counter()
        called.state = str(final["state"]["type"])
        called.result = self.output(called.flow_run_id)
        read = time.perf_counter()
        called.timings.update(wait_ms=(done - created) * 1000, output_ms=(read - done) * 1000, total_ms=(read - started) * 1000)
        return called
