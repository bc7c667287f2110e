"""Two Prefect workers, one Redis: nightly batches never pay twice for a document.

Everything runs as a platform engineer would run it, each in its own process: a
loopback `prefect server start` (SQLite in a temporary PREFECT_HOME), a process
work pool, `prefect deploy` of `nightly-summaries` (entrypoint
`flows/orchestration/flow.py:run_pipeline`, from this checkout) with a prefect.yaml of
the test's own, two `prefect worker start` processes (one flow run at a time
each), and the model stand-in (`tests.peers.serve_peer`), which counts the model
calls it answers per prompt. Runs are created over Prefect's REST API.

- Runs over overlapping document sets, one wave after another (runs in one wave
  have disjoint sets): every distinct document costs exactly one model call, and
  both workers ran flow runs.
- Two runs over the same new documents at the same time, one per worker: still
  one model call per document. Single-flight only covers one process; what
  covers two is the lease a miss takes on its request key in Redis (tasks/leases.py):
  the second run waits for the first one's answer. The stand-in holds each answer
  until the same prompt is asked twice (or a few seconds pass), so without the
  lease both runs would certainly ask, and pay, twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import REDIS_URL
from tests.prefect_server import BIN, PROJECT, ServedPrefect, free_port

pytestmark = pytest.mark.slow

POOL = "frugal-workers-test"
WORKERS = ("worker-a", "worker-b")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def api(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One call to the test's Prefect server, retried like Prefect's own client retries.

    A loaded SQLite-backed server answers 503 while its database is locked; Prefect's
    client retries those (PREFECT_CLIENT_RETRY_EXTRA_CODES aside, 429/502/503 are retried).
    """
    for attempt in range(8):
        response = httpx.request(method, url, timeout=30, **kwargs)
        if response.status_code not in (429, 502, 503) or attempt == 7:
            response.raise_for_status()
            return response
        time.sleep(0.25 * 2**attempt)
    raise AssertionError("unreachable")


def doc_text(i: int) -> str:
    return f"Document {i}. " + " ".join(f"w{i}x{j}" for j in range(15)) + "."


@dataclass
class Cluster:
    prefect: ServedPrefect
    peer: str
    deployment_id: str
    corpus: Path
    prefix: str

    def source(self, name: str, numbers: range) -> Path:
        """A directory holding documents `numbers` (same ids and texts wherever they appear)."""
        folder = self.corpus / name
        folder.mkdir(parents=True)
        for i in numbers:
            (folder / f"doc{i:03d}.txt").write_text(doc_text(i), encoding="utf-8")
        return folder

    def start_run(self, source: Path, destination: Path) -> str:
        inputs = {"source": str(source), "destination": str(destination), "namespace": "workers"}
        response = api(
            "POST",
            f"{self.prefect.api_url}/deployments/{self.deployment_id}/create_flow_run",
            json={"parameters": {"pipeline": "nightly-summaries", "inputs": inputs}},
        )
        return str(response.json()["id"])

    def wait(self, runs: list[str], timeout: float = 90) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [api("GET", f"{self.prefect.api_url}/flow_runs/{run}").json() for run in runs]
            if all((r.get("state") or {}).get("type") in TERMINAL for r in found):
                return found
            if time.monotonic() > deadline:
                states = {r["id"]: (r.get("state") or {}).get("type") for r in found}
                raise AssertionError(f"flow runs did not finish in {timeout:g}s: {states}\n{self.prefect.logs()}")
            time.sleep(0.5)

    def stand_in(self) -> dict[str, Any]:
        return dict(httpx.get(self.peer + "/_peer/stats", timeout=10).json())

    def configure(self, **settings: Any) -> None:
        httpx.post(self.peer + "/_peer/config", json=settings, timeout=10).raise_for_status()


def index_rows(destination: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (destination / "index.jsonl").read_text().splitlines()]


def assert_completed(runs: list[dict[str, Any]], cluster: Cluster) -> None:
    states = {r["id"]: (r["state"]["type"], r["state"].get("message")) for r in runs}
    assert all(r["state"]["type"] == "COMPLETED" for r in runs), f"{states}\n{cluster.prefect.logs()}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("workers")
    store = redis.Redis.from_url(REDIS_URL)
    try:
        store.ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis is not running at {REDIS_URL}: start it (`make redis`) or set FRUGAL_TEST_REDIS_URL")
    prefix = f"t{uuid.uuid4().hex[:12]}"

    port_file = folder / "peer.url"
    peer_log = (folder / "stand-in.log").open("wb")
    peer = subprocess.Popen(
        [sys.executable, "-m", "tests.peers.serve_peer", "--delay", "0.02", "--port-file", str(port_file)],
        cwd=PROJECT,
        stdout=peer_log,
        stderr=subprocess.STDOUT,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FRUGAL_", "OLLAMA_", "OPENAI_", "ANTHROPIC_"))}
    env = {
        **base,
        "PREFECT_HOME": str(folder / "prefect-home"),
        "PREFECT_API_URL": url + "/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOCAL_STORAGE_PATH": str(folder / "results"),
        "PYTHONUNBUFFERED": "1",
    }
    prefect = ServedPrefect(url, env, folder)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert peer.poll() is None and time.monotonic() < deadline, (folder / "stand-in.log").read_text()
            time.sleep(0.05)
        peer_url = port_file.read_text().strip()
        # what the flow runs see: both tiers on the stand-in, the prompt cache on the shared Redis
        env.update(
            FRUGAL_SLM_PROVIDER="ollama",
            OLLAMA_HOST=peer_url,
            FRUGAL_LLM_PROVIDER="openai",
            OPENAI_BASE_URL=peer_url + "/v1",
            OPENAI_API_KEY="sk-test-0123456789abcdef",
            FRUGAL_LLM_MODEL="gpt-test",
            FRUGAL_CACHE_URL=REDIS_URL,
            FRUGAL_CACHE_PREFIX=prefix,
            FRUGAL_DATA_DIR=str(folder / "data"),
            FRUGAL_FILE_ROOTS=str(tmp_path_factory.getbasetemp()),  # the tests' documents and summaries
            FRUGAL_BATCH_CONCURRENCY="8",
            FRUGAL_BATCH_CHUNK_SIZE="5",
        )
        prefect.start("server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port))
        prefect.wait_until(lambda: httpx.get(url + "/api/health", timeout=2).status_code == 200, "the Prefect server", 120)
        prefect.run("work-pool", str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process")
        deployment = folder / "prefect.yaml"
        deployment.write_text(
            textwrap.dedent(
                f"""
                name: frugal-flows-workers-test
                prefect-version: 3.9.1
                build: null
                push: null
                pull:
                  - prefect.deployments.steps.set_working_directory:
                      directory: {json.dumps(str(PROJECT))}
                deployments:
                  - name: nightly-summaries
                    entrypoint: flows/orchestration/flow.py:run_pipeline
                    parameters: {{pipeline: nightly-summaries}}
                    work_pool: {{name: {POOL}, work_queue_name: default}}
                """
            )
        )
        prefect.run(
            "deploy", str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", str(deployment), timeout=180
        )
        found = httpx.get(url + "/api/deployments/name/frugal-pipeline/nightly-summaries", timeout=10)
        found.raise_for_status()
        for name in WORKERS:  # one flow run at a time each, so concurrent runs land on both
            prefect.start(name, str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", name, "--limit", "1")

        def both_polling() -> bool:
            workers = httpx.post(f"{url}/api/work_pools/{POOL}/workers/filter", json={}, timeout=5).json()
            return {w["name"] for w in workers} >= set(WORKERS)

        prefect.wait_until(both_polling, "both workers to poll the pool", 60)
        yield Cluster(prefect, peer_url, str(found.json()["id"]), folder / "corpus", prefix)
    finally:
        prefect.stop()
        peer.terminate()
        peer.wait(10)
        for key in store.scan_iter(f"{prefix}:*"):
            store.delete(key)
        store.close()


def test_two_workers_share_one_redis_and_pay_once_per_document(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "out"
    waves = [
        # runs in one wave are concurrent, over disjoint sets; the next wave overlaps the earlier ones
        [("a", range(0, 12)), ("b", range(12, 24))],
        [("c", range(6, 18)), ("d", range(18, 36))],  # c: all cached; d: 18-23 cached, 24-35 new
    ]
    before = cluster.stand_in()["answered"]
    finished: list[dict[str, Any]] = []
    for wave in waves:
        runs = [cluster.start_run(cluster.source(name, numbers), out / name) for name, numbers in wave]
        done = cluster.wait(runs)
        assert_completed(done, cluster)
        finished += done

    stats = cluster.stand_in()
    assert stats["answered"] - before == 36, stats  # documents 0-35, one paid call each
    assert stats["duplicates"] == {}, stats
    paid = {text.split(".")[0] for text in stats["by_text"]}
    assert {f"Document {i}" for i in range(36)} <= paid

    cache = {name: sorted(row["cache"] for row in index_rows(out / name)) for name in "abcd"}
    assert cache["a"] == ["miss"] * 12 and cache["b"] == ["miss"] * 12
    assert cache["c"] == ["hit"] * 12
    assert cache["d"] == ["hit"] * 6 + ["miss"] * 12
    assert all(row["status"] == "ok" for name in "abcd" for row in index_rows(out / name))

    ran_on = {run["labels"].get("prefect.worker.name") for run in finished}
    assert ran_on == set(WORKERS), {run["id"]: run["labels"] for run in finished}


def test_concurrent_runs_over_the_same_new_documents_pay_once(cluster: Cluster, tmp_path: Path) -> None:
    # Each answer is held until its prompt was asked twice, at most HOLD seconds: without a
    # cross-process lease both runs miss and ask (and the hold releases both at once); with it, the
    # second run waits on the first one's lease and never asks, and the hold times out.
    hold = 8.0
    cluster.configure(hold_until=2, hold_seconds=hold)
    try:
        source = cluster.source("same", range(100, 106))
        before = cluster.stand_in()
        runs = [cluster.start_run(source, tmp_path / name) for name in ("x", "y")]
        done = cluster.wait(runs, timeout=120)
    finally:
        cluster.configure(hold_until=0)
    assert_completed(done, cluster)
    assert {run["labels"].get("prefect.worker.name") for run in done} == set(WORKERS)
    after = cluster.stand_in()
    paid = after["answered"] - before["answered"]
    assert paid == 6, f"6 new documents cost {paid} model calls: {after['duplicates']}"

    # Paying once proves something only if the second run looked while the first one's answers were
    # held: it then waited on the lease, so the runs overlapped by most of the hold.
    started = max(datetime.fromisoformat(run["start_time"]) for run in done)
    ended = min(datetime.fromisoformat(run["end_time"]) for run in done)
    if (ended - started).total_seconds() < hold / 2:
        pytest.skip(f"the second run started {started}, too late to race the first (it ended {ended})")
    cache = sorted(row["cache"] for name in ("x", "y") for row in index_rows(tmp_path / name))
    assert cache == ["hit"] * 6 + ["miss"] * 6  # one run paid, the other waited and was served its answers
