"""`RestCaller` against a scripted Prefect API (httpx.MockTransport): what each failure says.
The same calls against a real server are in tests/test_rest.py."""

from __future__ import annotations

import json

import httpx
import pytest

from flows.orchestration.rest_client import RestCaller
from tasks.core.errors import CallError, CallTimeout, DeploymentNotFound, ParametersRejected, RunFailed

API = "http://127.0.0.1:4999/api"
SCHEMA = {"properties": {"prompt": {"type": "string", "position": 0}, "max_tokens": {"type": "integer", "position": 1}}}
DEPLOYMENT = {"id": "d1", "name": "answer", "flow_id": "f1", "parameter_openapi_schema": SCHEMA}


class FakeApi:
    """Enough of Prefect's API for one deployment `answer/answer`; `states` are served in turn."""

    def __init__(self, states=("SCHEDULED", "RUNNING", "COMPLETED"), create_status=201, create_detail=None, busy=0):
        self.states = list(states)
        self.create_status, self.create_detail, self.busy = create_status, create_detail, busy
        self.requests: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api")
        self.requests.append((request.method, path))
        body = json.loads(request.content or b"{}")
        if path == "/deployments/name/answer/answer":
            return httpx.Response(200, json=DEPLOYMENT)
        if path.startswith("/deployments/name/"):
            return httpx.Response(404, json={"detail": "Deployment not found"})
        if path == "/deployments/filter":
            names = (body.get("deployments") or {}).get("name", {}).get("any_")
            return httpx.Response(200, json=[DEPLOYMENT] if names in (None, ["answer"]) else [])
        if path == "/flows/filter" or path == "/flows/f1":
            flow = {"id": "f1", "name": "answer"}
            return httpx.Response(200, json=[flow] if path.endswith("filter") else flow)
        if path == "/deployments/d1/create_flow_run":
            if self.busy:
                self.busy -= 1
                return httpx.Response(503, json={"exception_message": "Service Unavailable"})
            if self.create_status != 201:
                return httpx.Response(self.create_status, json={"detail": self.create_detail})
            return httpx.Response(201, json={"id": "r1", "name": "brave-fox", "state": {"type": "SCHEDULED"}})
        if path == "/flow_runs/r1":
            kind = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            state = {"type": kind, "name": kind.title(), "message": "Flow run encountered an exception: StepError: node 'key': x"}
            return httpx.Response(200, json={"id": "r1", "name": "brave-fox", "state": state})
        if path == "/logs/filter":
            return httpx.Response(200, json=[{"message": "Traceback ...\nflows.errors.StepError: node 'key': x"}])
        if path == "/artifacts/filter":
            return httpx.Response(200, json=[{"type": "result", "data": {"output": {"text": "Paris."}, "nodes": {}}}])
        return httpx.Response(404, json={"detail": f"no route {path}"})


def caller(api: FakeApi) -> RestCaller:
    return RestCaller(API, http=httpx.Client(transport=httpx.MockTransport(api)))


def test_call_finds_creates_polls_and_reads_the_result_artifact():
    api = FakeApi()
    called = caller(api).call("answer", {"prompt": "hi"})
    assert called.state == "COMPLETED" and called.result == {"output": {"text": "Paris."}, "nodes": {}}
    assert called.deployment == "answer/answer" and called.url == "http://127.0.0.1:4999/runs/flow-run/r1"
    assert ("POST", "/deployments/d1/create_flow_run") in api.requests
    assert api.requests[-1] == ("POST", "/artifacts/filter")
    assert set(called.timings) == {"find_ms", "create_ms", "wait_ms", "output_ms", "total_ms"}


def test_no_wait_returns_after_creating():
    api = FakeApi()
    called = caller(api).call("answer/answer", {"prompt": "hi"}, wait=False)
    assert called.state == "SCHEDULED" and called.result is None
    assert not any(path == "/flow_runs/r1" for _, path in api.requests)


def test_unknown_deployment_lists_the_known_ones():
    with pytest.raises(DeploymentNotFound, match=r"unknown deployment 'answr' at .*; known: answer/answer"):
        caller(FakeApi()).call("answr", {})
    with pytest.raises(DeploymentNotFound, match=r"unknown deployment 'x/answer'.*known: answer/answer"):
        caller(FakeApi()).call("x/answer", {})


def test_parameters_refused_by_the_server_or_the_schema():
    detail = "Error creating flow run: Validation failed for field 'max_tokens'. Failure reason: 'x' is not of type 'integer'"
    with pytest.raises(ParametersRejected, match=r"refused the parameters: .*'x' is not of type 'integer'"):
        caller(FakeApi(create_status=409, create_detail=detail)).call("answer", {"prompt": "hi", "max_tokens": "x"})
    api = FakeApi()
    with pytest.raises(ParametersRejected, match=r"has no input 'colour' \(inputs: prompt, max_tokens\)"):
        caller(api).call("answer", {"prompt": "hi", "colour": "red"})
    assert ("POST", "/deployments/d1/create_flow_run") not in api.requests


def test_a_failed_run_says_why():
    with pytest.raises(
        RunFailed, match=r"brave-fox \(r1\) ended Failed: .*StepError.*\(last error: flows.errors.StepError: node 'key': x\)"
    ):
        caller(FakeApi(states=("SCHEDULED", "FAILED"))).call("answer", {"prompt": "hi"})


def test_a_run_nobody_picks_up_times_out_with_a_hint():
    with pytest.raises(CallTimeout, match=r"still Scheduled after 0.2s: nothing picked it up; is `frugal serve`"):
        caller(FakeApi(states=("SCHEDULED",))).call("answer", {"prompt": "hi"}, timeout=0.2)


def test_a_busy_server_is_retried(monkeypatch):
    monkeypatch.setattr("flows.orchestration.rest_client.time.sleep", lambda seconds: None)
    assert caller(FakeApi(busy=2)).call("answer", {"prompt": "hi"}).state == "COMPLETED"


def test_an_unreachable_api_says_how_to_fix_it():
    with pytest.raises(CallError, match=r"cannot reach the Prefect API at http://127.0.0.1:1/api .*PREFECT_API_URL"):
        RestCaller("http://127.0.0.1:1/api", timeout=2).find("answer")


def test_inputs_follow_the_schema_order_and_types():
    deployment = caller(FakeApi()).find("answer")
    assert deployment.inputs == {"prompt": "string", "max_tokens": "integer"}
