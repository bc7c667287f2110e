"""A batch on a real Dask cluster loses nothing and pays nothing twice when a worker dies.

A `dask scheduler` and two `dask worker` processes run as separate process groups, as separate
machines would, with the environment a worker needs (the FRUGAL_* settings of the flow, the
shared Redis on db 15, the model stand-in's address, Prefect's API). The model stand-in
(`tests.peers.serve_peer`, its own process, 250 ms per answer) counts what it receives and what it
answers. The flow runs in this process with FRUGAL_BATCH_RUNNER=dask and the scheduler's address.

In the middle of the batch, once both workers are running chunks, one worker (its nanny and its
worker process) is killed with SIGKILL. Dask's scheduler hands its chunks to the other worker,
which runs them again: documents answered before the kill are prompt-cache hits; documents that
were in flight on the dead worker wait for their lease to lapse and are asked again.

What a real provider would bill: every request it received and processed, including one whose
client died before reading the answer. The stand-in answers a request only if its client is still
connected after its 250 ms (`answered`), so a request in flight on the killed worker is received
but not answered. The test asserts: every document is in the index, ok; `answered` equals the
number of distinct documents (at most the requests in flight at the kill more, for an answer that
reached the worker in the instant before it died, before it was stored: the one window where a
provider bills twice); `received` is at most the distinct documents plus the requests in flight at
the kill; and the rerun makes no model call at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import API_KEY, REDIS_URL
from tests.peers.serve_peer import spawn
from tests.prefect_server import BIN, PROJECT, free_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect")]

DOCUMENTS = 80
CHAT = "/api/chat"  # short documents go to the small model (Ollama's wire format)


@dataclass
class Cluster:
    address: str
    workers: dict[str, subprocess.Popen[bytes]]
    peer: str
    folder: Path

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.peer + "/_peer/stats", timeout=10).json())

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.folder.glob("*.log")))


def _wait(check: Any, what: str, timeout: float, cluster: Cluster | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout:g}s\n{cluster.logs() if cluster else ''}")
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH

    store = redis.Redis.from_url(REDIS_URL)
    try:
        store.ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis is not running at {REDIS_URL}: start it (`make redis`) or set FRUGAL_TEST_REDIS_URL")
    prefix = os.environ["FRUGAL_CACHE_PREFIX"]
    processes: list[subprocess.Popen[bytes]] = []
    peer, peer_url = spawn(tmp_path, delay=0.25, name="stand-in")
    settings = {
        "FRUGAL_SLM_PROVIDER": "ollama",
        "OLLAMA_HOST": peer_url,
        "FRUGAL_LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": peer_url + "/v1",
        "OPENAI_API_KEY": API_KEY,
        "FRUGAL_LLM_MODEL": "gpt-test",
        "FRUGAL_CACHE_URL": REDIS_URL,
        "FRUGAL_CACHE_PREFIX": prefix,
        "FRUGAL_CACHE_LEASE_SECONDS": "3",  # a dead worker's leases lapse quickly
        "FRUGAL_FILE_ROOTS": str(tmp_path),  # the documents and summaries: "shared storage"
        "FRUGAL_BATCH_CHUNK_SIZE": "4",
        "FRUGAL_BATCH_CONCURRENCY": "2",
        "FRUGAL_BATCH_CHUNKS_IN_FLIGHT": "4",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FRUGAL_", "OLLAMA_", "OPENAI_", "DASK_"))}
    env = {
        **base,
        **settings,
        "FRUGAL_DATA_DIR": str(tmp_path / "worker-data"),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_LOCAL_STORAGE_PATH": str(PREFECT_LOCAL_STORAGE_PATH.value()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [str(BIN / "dask"), *args], cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        processes.append(process)
        return process

    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard", "--dashboard-address", ":0")
        for name in ("worker-a", "worker-b"):
            workers[name] = start(
                name, "worker", address, "--nworkers", "1", "--nthreads", "1", "--name", name, "--no-dashboard", "--no-nanny"
            )
        cluster = Cluster(address, workers, peer_url, tmp_path)
        from distributed import Client

        with Client(address, timeout=60) as client:
            _wait(lambda: len(client.scheduler_info()["workers"]) == 2, "both workers joining the scheduler", 90, cluster)
        monkeypatch.setenv("FRUGAL_BATCH_RUNNER", "dask")
        monkeypatch.setenv("FRUGAL_BATCH_DASK_ADDRESS", address)
        yield cluster
    finally:
        peer.terminate()
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*processes, peer]:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        for key in store.scan_iter(f"{prefix}:*"):
            store.delete(key)
        store.close()


def write_docs(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"doc{i:03d}.txt").write_text(f"Document {i}. " + " ".join(f"w{i}x{j}" for j in range(15)) + ".")
    return root


async def test_a_worker_killed_mid_batch_loses_nothing_and_pays_nothing_twice(cluster: Cluster, tmp_path: Path) -> None:
    from distributed import Client

    from flows.orchestration.flow import run_pipeline

    source = write_docs(tmp_path / "in", DOCUMENTS)
    out = tmp_path / "out"
    inputs = {"source": str(source), "destination": str(out), "namespace": f"dask-{uuid.uuid4().hex[:8]}"}
    seen_busy: set[str] = set()
    at_kill: dict[str, Any] = {}

    def watch_and_kill() -> None:
        """Kill worker-a (SIGKILL, its whole process group) once both workers ran chunks, a quarter
        of the documents were answered, and the stand-in holds a request."""
        with Client(cluster.address, timeout=30) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                # asked afresh: the client's cached scheduler_info() is refreshed in the background
                # without the workers, and a read between the two missed their names
                identity = client.sync(client.scheduler.identity, n_workers=-1)
                names = {address: w.get("name") for address, w in identity["workers"].items()}
                for address, keys in client.processing().items():
                    if keys:
                        seen_busy.add(str(names.get(address, address)))
                stats = cluster.stats()
                asked = stats["by_path"].get(CHAT, 0) > stats["answered"]  # a request is in flight
                if seen_busy >= {"worker-a", "worker-b"} and stats["answered"] >= DOCUMENTS // 4 and asked:
                    os.killpg(cluster.workers["worker-a"].pid, signal.SIGKILL)
                    after = cluster.stats()
                    at_kill.update(
                        received=after["by_path"].get(CHAT, 0), answered=stats["answered"], answered_after=after["answered"]
                    )
                    return
                time.sleep(0.05)

    killer = asyncio.create_task(asyncio.to_thread(watch_and_kill))
    state = await run_pipeline("nightly-summaries", inputs, return_state=True)
    await killer
    assert state.is_completed(), f"{state.message}\n{cluster.logs()}"
    assert at_kill, f"the batch ended before both workers were busy ({seen_busy}): {cluster.stats()}"
    assert cluster.workers["worker-a"].wait(10) == -signal.SIGKILL
    assert seen_busy == {"worker-a", "worker-b"}

    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"doc{i:03d}" for i in range(DOCUMENTS)]
    assert {r["status"] for r in rows} == {"ok"}, [r for r in rows if r["status"] != "ok"]
    stats = cluster.stats()
    received = stats["by_path"].get(CHAT, 0)
    in_flight = at_kill["received"] - at_kill["answered"]  # asked of the stand-in, not yet answered, at the kill
    distinct = stats["distinct_prompts"]
    print(
        f"\ndocuments {DOCUMENTS}, distinct prompts answered {distinct}, answered {stats['answered']}, "
        f"received {received}, in flight at the kill {in_flight} (answered by then {at_kill['answered']})"
    )
    assert distinct == DOCUMENTS
    assert DOCUMENTS <= stats["answered"] <= DOCUMENTS + in_flight, stats["duplicates"]
    assert received <= DOCUMENTS + in_flight

    rerun = await run_pipeline("nightly-summaries", inputs, return_state=True)
    assert rerun.is_completed(), rerun.message
    again = cluster.stats()
    assert again["by_path"].get(CHAT, 0) == received, "the rerun asked the model again"
    assert again["answered"] == stats["answered"]

    # one connection to the scheduler per batch, however many chunks asked for it at once; the
    # surviving worker was warmed up for the batch (flows.orchestration.dask_warmup)
    scheduler_log = (tmp_path / "scheduler.log").read_text(errors="replace")
    assert scheduler_log.count("Receive client connection: PrefectDaskClient") == 2, scheduler_log[-3000:]
    assert "Starting Worker plugin frugal-warm-up" in (tmp_path / "worker-b.log").read_text(errors="replace")
