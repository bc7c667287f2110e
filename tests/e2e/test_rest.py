"""Deployments over REST, end to end: a real Prefect server on loopback, the pipelines deployed
from prefect.yaml and served by `frugal serve`, called with Prefect's client (`RestCaller`,
`frugal call`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flows.orchestration.rest_client import RestCaller
from tasks.core.errors import CallError, CallTimeout, DeploymentNotFound, ParametersRejected, RunFailed

pytestmark = pytest.mark.slow
FRUGAL = str(Path(sys.executable).parent / "frugal")


def frugal(served, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"PREFECT_API_URL": served.api_url}
    return subprocess.run([FRUGAL, *args], capture_output=True, text=True, env=env, timeout=120)


def task_runs(api_url: str, flow_run_id: str, expected: int) -> list[dict]:
    """The server records task runs from events, a moment after the flow run ends: poll."""
    for _ in range(100):
        runs = httpx.post(f"{api_url}/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}}).json()
        if len(runs) >= expected and all(r["state"] and r["state"]["type"] == "COMPLETED" for r in runs):
            break
        time.sleep(0.1)
    return runs


def test_serve_says_what_it_serves_and_where(served_prefect):
    lines = (served_prefect.folder / "serve.log").read_text().splitlines()
    ready = next(line for line in lines if line.startswith("serving "))
    assert "answer/answer" in ready and "fails/fails" in ready and f"at {served_prefect.api_url} " in ready


def test_prefect_yaml_deploys_typed_parameters(served_prefect):
    deployment = httpx.get(f"{served_prefect.api_url}/deployments/name/answer/answer").json()
    schema = deployment["parameter_openapi_schema"]
    assert schema["required"] == ["prompt"]
    props = schema["properties"]
    assert props["prompt"]["type"] == "string"
    assert props["prompt"]["description"] == "The question or instruction to answer."
    assert props["max_tokens"] == {**props["max_tokens"], "type": "integer", "default": 256}
    assert props["bypass_cache"]["type"] == "boolean"
    assert deployment["enforce_parameter_schema"] is True


def test_call_returns_the_output_then_a_cache_hit(served_prefect):
    with RestCaller(served_prefect.api_url) as caller:
        first = caller.call("answer", {"prompt": "What is the capital of France?", "namespace": "rest"}, timeout=120)
        second = caller.call("answer/answer", {"prompt": "What is the capital of France?", "namespace": "rest"}, timeout=120)
        assert first.state == second.state == "COMPLETED"
        assert first.result["output"]["text"] == "Paris."
        assert first.result["output"]["cache"] == "miss"
        assert second.result["output"] == {**first.result["output"], "cache": "hit"}
        assert second.result["nodes"]["lookup"]["status"] == "cache_hit"

        # each node that ran a task run named after its node id...
        ran = {n for n, r in first.result["nodes"].items() if r["status"] != "skipped"}
        runs = task_runs(served_prefect.api_url, first.flow_run_id, len(ran))
        assert {r["name"] for r in runs} == ran and {"key", "lookup", "route", "store"} <= ran
        # ...whose recorded inputs are the pipeline's edges: the UI's run graph has the pipeline's shape
        names = {r["id"]: r["name"] for r in runs}
        upstream = {
            r["name"]: {names[i["id"]] for v in r["task_inputs"].values() for i in v if i.get("id") in names} for r in runs
        }
        assert upstream["key"] == set() and upstream["lookup"] == {"key"} and upstream["route"] == {"lookup"}
        assert {"key", "lookup"} <= upstream["store"]
        # a cache hit: two task runs (key, lookup); the skipped nodes and the answer are in the run's Markdown artifact
        assert {r["name"] for r in task_runs(served_prefect.api_url, second.flow_run_id, 2)} == {"key", "lookup"}
        artifacts = httpx.post(
            f"{served_prefect.api_url}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [second.flow_run_id]}}}
        ).json()
        markdown = next(a["data"] for a in artifacts if a["type"] == "markdown")
        assert "**Path:** key → lookup (cache hit) → output" in markdown
        assert "**Skipped:** route, small, small_check, large, large_check, store" in markdown
        assert "### Output\n\n```\nParis.\n```" in markdown
        assert (
            "```mermaid" in markdown and "class n_route,n_small,n_small_check,n_large,n_large_check,n_store skipped" in markdown
        )


def test_call_errors_say_what_went_wrong(served_prefect):
    with RestCaller(served_prefect.api_url) as caller:
        with pytest.raises(DeploymentNotFound, match=r"unknown deployment 'nope'.*known: .*answer/answer"):
            caller.call("nope", {})
        with pytest.raises(ParametersRejected, match=r"'prompt' is a required property"):
            caller.call("answer", {"max_tokens": 3})
        with pytest.raises(ParametersRejected, match=r"'x' is not of type 'integer'"):
            caller.call("answer", {"prompt": "hi", "max_tokens": "x"})
        with pytest.raises(ParametersRejected, match=r"has no input 'colour'"):
            caller.call("answer", {"prompt": "hi", "colour": "red"})
        with pytest.raises(RunFailed, match=r"ended Failed: .*node 'key'.*missing"):
            caller.call("fails", {"data": {"present": 1}}, timeout=120)
        with pytest.raises(CallTimeout, match=r"is still Scheduled after 0s"):
            caller.call("answer", {"prompt": "a question nobody waits for"}, timeout=0)


def test_frugal_call_prints_the_answer_and_json(served_prefect):
    done = frugal(served_prefect, "call", "answer", "-i", "prompt=Name a colour.", "-i", "max_tokens=20")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Paris.\n"
    assert "cache=miss" in done.stderr and "flow_run=" in done.stderr

    done = frugal(served_prefect, "call", "answer", "-i", "prompt=Name a colour.", "-i", "max_tokens=20", "--json")
    called = json.loads(done.stdout)
    assert called["deployment"] == "answer/answer" and called["state"] == "COMPLETED"
    assert called["result"]["output"]["cache"] == "hit"

    done = frugal(served_prefect, "call", "answer", "-i", "prompt=Later.", "--no-wait")
    assert done.returncode == 0 and len(done.stdout.strip()) == 36, done.stderr

    done = frugal(served_prefect, "call", "answr", "-i", "prompt=x")
    assert done.returncode == 1 and "unknown deployment 'answr'" in done.stderr and "answer/answer" in done.stderr
    done = frugal(served_prefect, "call", "answer", "-i", "max_tokens=3")
    assert done.returncode == 1 and "'prompt' is a required property" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # one line, no traceback


def test_under_concurrent_load_no_cache_hit_becomes_a_model_call(served_prefect):
    """128 calls at concurrency 16, 70 % of them prompts already cached: a busy `frugal serve` must
    read each of those as a hit (a slow cache read is served, not taken for a down cache), so
    only the new prompts call a model."""
    from concurrent.futures import ThreadPoolExecutor

    namespace = "load-" + os.urandom(4).hex()
    warm = [f"Load test question {i}: what is the capital of country {i}?" for i in range(8)]
    with RestCaller(served_prefect.api_url) as caller:
        for prompt in warm:
            caller.call("answer", {"prompt": prompt, "namespace": namespace}, timeout=300)
    calls = [(warm[i % len(warm)], True) if i % 10 < 7 else (f"A new load-test question {i}?", False) for i in range(128)]

    refused = []

    def worker(share: list[tuple[str, bool]]) -> list[tuple[bool, str]]:
        seen = []
        with RestCaller(served_prefect.api_url) as caller:
            for prompt, cached in share:
                deadline = time.monotonic() + 600
                while True:  # a SQLite Prefect server refuses some creations at this load (503, after its client's retries)
                    try:
                        called = caller.call("answer", {"prompt": prompt, "namespace": namespace}, timeout=600)
                        break
                    except CallError as exc:
                        if "HTTP 503" not in str(exc) or time.monotonic() > deadline:
                            raise
                        refused.append(prompt)
                        time.sleep(1)
                assert called.state == "COMPLETED", called
                seen.append((cached, called.result["output"]["cache"]))
        return seen

    with ThreadPoolExecutor(16) as pool:
        outcomes = [o for seen in pool.map(worker, [calls[i::16] for i in range(16)]) for o in seen]
    assert len(outcomes) == 128
    assert [cache for cached, cache in outcomes if cached] == ["hit"] * 91  # none an error or a miss (a model call)
    assert [cache for cached, cache in outcomes if not cached] == ["miss"] * 37
    print(f"run creations the Prefect server refused with 503 and were sent again: {len(refused)}")
