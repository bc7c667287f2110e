"""A nightly batch on Dask against a provider's rate limit: 1, 2 and 4 `dask worker` processes, the
in-process runner as the baseline, and the all-cached rerun of 10,000 documents.

    .venv/bin/python tests/benchmarks/bench_dask_batch.py

    options: [--n 400] [--workers 1,2,4] [--threads 2] [--rpm 600] [--latency 0.3] [--concurrency 8]
        [--chunk-size 100] [--cached-n 10000] [--redis redis://127.0.0.1:6379/13]
        [--prefect-api-url URL] [--deadline 580] [--no-preload]
    a small run: ... bench_dask_batch.py --n 60 --workers 1,2 --cached-n 500

Not a test: it prints figures and asserts nothing. Everything runs on this machine, on loopback:

1. The model stand-in in a process of its own (`python -m tests.peers.serve_peer --rpm RPM
   --delay LATENCY`): OpenAI's wire format, a 429 with `retry-after` beyond RPM requests a minute
   (a bucket holding one second's worth), each admitted request answered after LATENCY seconds;
   FRUGAL_LIMITS={"openai/gpt-4o-mini": {"rpm": RPM}} so our limiter paces the calls, its bucket
   on the shared Redis. The batch is `nightly-summaries` with `long_words=1`: every document goes
   to the large model, the rate-limited one (the stand-in limits OpenAI's routes, not Ollama's).
2. A loopback Prefect server on a fresh PostgreSQL database (127.0.0.1:5432, created and dropped
   here; `--prefect-api-url` to use a running one), the shared Redis on a db of its own (--redis,
   db 13: flushed at the start and at the end), and a `dask scheduler` process. The scheduler and
   the workers start as the README says, with `--preload flows.orchestration.dask_warmup` (the
   imports a chunk needs, done when each process starts); `--no-preload` starts them bare, and the
   first Dask run then waits for the scheduler to import Prefect and the project.
3. The rate-limited runs, --n documents each (distinct texts of 40-60 words), each under a fresh
   cache namespace (cold): first the baseline, the orchestrated flow with FRUGAL_BATCH_RUNNER=
   inprocess (chunks in the flow's process); then FRUGAL_BATCH_RUNNER=dask on the scheduler with
   1, then 2, then 4 `dask worker --nthreads THREADS` processes (workers are added between runs, each
   warmed up: the project imported, before the clock starts). Chunks of --chunk-size documents,
   --concurrency in flight per chunk, 2 chunks in flight per worker.
4. The all-cached rerun of --cached-n documents (short ones, to the small model): the prompt cache
   is filled by an inline run with the stand-in answering at once, then timed: inline; orchestrated
   on Dask with the most workers (every document a prompt-cache hit on a worker); the same again
   (each chunk's task run served from Prefect's result cache, written by the previous run: the
   workers share PREFECT_LOCAL_STORAGE_PATH with the flow).

Printed per run: documents, wall time, documents/s, that rate as a share of the allowed rate
(RPM / 60 a second is the ceiling; N calls cannot beat N / ((N - 1) / rate + latency)), the lead-in
(from the run's start to its first model call) and the tail (from the last answer to the run's end), CPU per
document of our processes (the flow's process + the Dask scheduler + the workers, from /proc), and
apart the Prefect server's and the stand-in's, model calls, the 429s the stand-in refused, items
failed (and of those, by a 429), Redis commands per document (the server's count: other clients of
the same Redis server add to it). The first line prints the load average: on a busy machine the
wall times are upper bounds. Bounded: --deadline seconds for the whole script (the default run
takes 6-9 minutes on 2 CPUs); every process it starts is stopped at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT))

import httpx  # noqa: E402
import psutil  # noqa: E402
from bench_batch import SERVER_PIDS, free_port, make_documents, prefect_server  # noqa: E402  beside this file
from machine import wait_until_quiet  # noqa: E402
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings  # noqa: E402

BIN = Path(sys.executable).parent
MODEL = "gpt-4o-mini"


# -- processes ------------------------------------------------------------------------------------


def cpu_seconds(processes: list[psutil.Process], children: bool = False) -> float:
    """CPU time (user + system) these processes (and, with `children`, their live descendants) have used so far."""
    total = 0.0
    for process in processes:
        family = [process]
        if children:
            with contextlib.suppress(psutil.Error):
                family += process.children(recursive=True)
        for p in family:
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                total += times.user + times.system
    return total


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each process group, then SIGKILL to whatever did not exit in 15 s."""
    for process in reversed(processes):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    for process in reversed(processes):
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@dataclass
class Dask:
    """A `dask scheduler` and `dask worker` processes, each a process group of its own, as on separate machines."""

    folder: Path
    env: dict[str, str]
    address: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: int = 0
    #: threads per worker process: with 2, a worker starts its next chunk while a chunk's last items finish
    threads: int = 1
    #: started as the README says: `--preload flows.orchestration.dask_warmup` (the imports a chunk needs, at start)
    preload: bool = True

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        preload = ["--preload", "flows.orchestration.dask_warmup"] if self.preload else []
        with (self.folder / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [str(BIN / "dask"), *args, *preload],
                cwd=PROJECT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(self.folder.glob("*.log")))

    def start_scheduler(self) -> None:
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self._start(
            "scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard", "--dashboard-address", ":0"
        )

    def grow(self, workers: int) -> None:
        """Start workers until there are `workers`; return once they joined and imported the project."""
        from distributed import Client

        while self.workers < workers:
            self.workers += 1
            name = f"worker-{self.workers}"
            self._start(
                name, "worker", self.address, "--nworkers", "1", "--nthreads", str(self.threads), "--name", name,
                "--no-dashboard", "--no-nanny", "--host", "127.0.0.1",
            )  # fmt: skip
        with Client(self.address, timeout=60) as client:
            deadline = time.monotonic() + 120
            while len(client.scheduler_info()["workers"]) < workers:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                    raise RuntimeError(f"{workers} Dask workers did not join the scheduler\n{self.logs()}")
                time.sleep(0.2)
            # what a worker imports for its first chunk, done before the clock starts: a nightly run
            # of millions of documents pays it once per worker, not per document
            client.run(exec, "import flows.orchestration.dask_chunks, flows.engine.job_runner, tasks.steps")

    def pids(self) -> list[psutil.Process]:
        return [psutil.Process(p.pid) for p in self.processes if p.poll() is None]

    def close(self) -> None:
        # a Dask client left open in this process (one the task runner kept) would try to reconnect
        # to the stopped scheduler for 30 s at exit, logging an error each time: closed first
        import gc

        from distributed import Client

        for client in [o for o in gc.get_objects() if isinstance(o, Client)]:
            with contextlib.suppress(Exception):
                if client.status not in ("closed", "closing"):
                    client.close(timeout=5)
        stop(self.processes)


@contextlib.contextmanager
def stand_in(folder: Path, latency: float, rpm: float) -> Iterator[tuple[str, psutil.Process]]:
    from tests.peers.serve_peer import spawn

    process, url = spawn(folder, latency, server="starlette", name="stand-in", rpm=rpm)
    try:
        yield url, psutil.Process(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def peer(url: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    if body is None and path.endswith("stats"):
        return dict(httpx.get(url + path, timeout=10, trust_env=False).json())
    return dict(httpx.post(url + path, json=body or {}, timeout=10, trust_env=False).json())


# -- runs -----------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    documents: int
    seconds: float
    cpu: float  # the flow's process + the Dask scheduler + the workers
    flow_cpu: float  # the flow's process alone: one process per batch, whatever the workers
    prefect_cpu: float
    stand_in_cpu: float
    calls: int
    refused: int
    failed: int
    failed_by_429: int
    cache: dict[str, int]
    limited: bool  # through the rate-limited provider: its rate is the figure
    busy_rate: float = 0.0  # calls/s from the stand-in's first answer to its last
    busy_cpu: float = 0.0  # CPU seconds per call of our processes over the same span
    lead_in: float = 0.0  # seconds from the run's start to the stand-in's first answer (less its latency)
    tail: float = 0.0  # seconds from the stand-in's last answer to the run's end
    redis_commands: int = 0  # commands the Redis server processed during the run (all its clients)

    @property
    def rate(self) -> float:
        return self.documents / self.seconds


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    url: str
    stand_in: psutil.Process
    prefect: psutil.Process | None
    dask: Dask
    redis: Any  # redis.Redis: its commands are counted per run
    rows: list[Row] = field(default_factory=list)

    def redis_commands(self) -> int:
        return int(self.redis.info("stats")["total_commands_processed"])

    async def run(
        self, name: str, runner: str, source: Path, namespace: str, inputs: dict[str, Any] | None = None, limited: bool = False
    ) -> Row:
        from flows.orchestration.flow import run_inline, run_pipeline

        os.environ["FRUGAL_BATCH_RUNNER"] = "dask" if runner == "dask" else "inprocess"
        values = {
            "source": str(source),
            "destination": str(self.work / "out" / namespace),
            "namespace": namespace,
            **(inputs or {}),
        }
        wait_until_quiet(timeout=self.args.quiet_timeout)  # the Prefect server done with the last run's events
        peer(self.url, "/_peer/reset")
        ours = [psutil.Process(), *(self.dask.pids() if runner == "dask" else [])]
        others = [self.prefect] if self.prefect else []
        # this process's children are the servers and Dask processes: counted apart, never with it
        cpu, prefect_cpu, stand_in_cpu = cpu_seconds(ours), cpu_seconds(others, True), cpu_seconds([self.stand_in])
        flow_cpu = cpu_seconds(ours[:1])
        commands = self.redis_commands()
        started = time.perf_counter()
        with Answers(self.url, ours) as answers:
            if runner == "inline":
                output = (await run_inline("nightly-summaries", values)).output
            else:
                output = (await run_pipeline("nightly-summaries", values))["output"]
            seconds = time.perf_counter() - started
            ended = time.perf_counter()
        commands = self.redis_commands() - commands
        stats = peer(self.url, "/_peer/stats")
        failures = output.get("failures") or []
        row = Row(
            name=name,
            documents=int(output.get("documents") or 0),
            seconds=seconds,
            cpu=cpu_seconds(ours) - cpu,
            flow_cpu=cpu_seconds(ours[:1]) - flow_cpu,
            prefect_cpu=cpu_seconds(others, True) - prefect_cpu,
            stand_in_cpu=cpu_seconds([self.stand_in]) - stand_in_cpu,
            calls=int(stats["answered"]),
            refused=int(stats["refused"]),
            failed=int(output.get("failed") or 0),
            failed_by_429=sum("429" in json.dumps(f) or "rate limit" in json.dumps(f).lower() for f in failures),
            cache=dict(output.get("cache") or {}),
            limited=limited,
            busy_rate=answers.rate(),
            busy_cpu=answers.cpu_per_call(),
            lead_in=answers.first_at(started) - started - self.args.latency,
            tail=ended - answers.last_at(ended),
            redis_commands=commands,
        )
        self.rows.append(row)
        print(line(row, self.args), flush=True)
        for failure in failures[:2]:
            print(f"    e.g. {json.dumps(failure)[:300]}", flush=True)
        return row


class Answers:
    """The stand-in's answer count and our processes' CPU time, sampled every 0.1 s in a thread while a
    run lasts: the rate the provider saw and the CPU per call between its first answer and its last,
    without the batch's start and end (what a batch of millions of documents pays per document)."""

    def __init__(self, url: str, processes: list[psutil.Process]) -> None:
        self.url = url
        self.processes = processes
        self.samples: list[tuple[float, int, float]] = []  # (time, answered, CPU seconds)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        with httpx.Client(trust_env=False, timeout=5) as client:
            while not self._done.wait(0.1):
                with contextlib.suppress(httpx.HTTPError):
                    answered = int(client.get(self.url + "/_peer/stats").json()["answered"])
                    self.samples.append((time.perf_counter(), answered, cpu_seconds(self.processes)))

    def __enter__(self) -> Answers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(10)

    def _window(self) -> tuple[tuple[float, int, float], tuple[float, int, float]] | None:
        """The first sample with an answer and the first with the final count."""
        if not self.samples or self.samples[-1][1] == 0:
            return None
        final = self.samples[-1][1]
        first = next(s for s in self.samples if s[1] > 0)
        last = next(s for s in self.samples if s[1] == final)
        return (first, last) if last[1] > first[1] else None

    def first_at(self, default: float) -> float:
        """When the first answer was seen (to the sampling's 0.1 s: halfway between two samples)."""
        before = default
        for at, answered, _ in self.samples:
            if answered:
                return (before + at) / 2
            before = at
        return default

    def last_at(self, default: float) -> float:
        """When the last answer was seen (halfway between the sample before the final count and the first with it)."""
        window = self._window()
        if window is None:
            return default
        final = window[1]
        earlier = [at for at, answered, _ in self.samples if answered < final[1]]
        return (earlier[-1] + final[0]) / 2 if earlier else final[0]

    def rate(self) -> float:
        """Calls a second while the provider was busy."""
        window = self._window()
        return (window[1][1] - window[0][1]) / (window[1][0] - window[0][0]) if window else 0.0

    def cpu_per_call(self) -> float:
        """CPU seconds of our processes per call while the provider was busy."""
        window = self._window()
        return (window[1][2] - window[0][2]) / (window[1][1] - window[0][1]) if window else 0.0


LEGEND = (
    "  (of allowed: docs/s over the whole run / the allowed rate; calls/s and cpu/call: from the stand-in's first answer to\n"
    "   its last, CPU ms of our processes per call; lead, tail: seconds from the run's start to the first model call (its\n"
    "   answer less the stand-in's latency) and from the last answer to the run's end, +-0.1 s; cpu ms/doc: the whole\n"
    "   run, our processes = the flow's + the Dask scheduler's + the workers'; flow: the flow's process alone; prefect,\n"
    "   stand-in: those processes' CPU ms/doc;\n"
    "   429s: refused by the stand-in; redis: commands per document the Redis server processed, from all its clients)"
)


def header() -> str:
    return (
        f"{'run':<44} {'docs':>6} {'wall s':>7} {'docs/s':>7} {'of allowed':>10} {'calls/s':>7} {'cpu/call':>8} "
        f"{'lead':>5} {'tail':>5} "
        f"{'cpu ms/doc':>10} {'flow':>6} "
        f"{'prefect':>8} {'stand-in':>8} {'calls':>6} {'429s':>5} {'failed':>6} {'by 429':>6} {'redis':>6}  cache"
    )


def line(r: Row, args: argparse.Namespace) -> str:
    allowed = args.rpm / 60
    share = f"{r.rate / allowed:10.1%}" if r.limited else f"{'-':>10}"
    busy = f"{r.busy_rate:>7.2f} {r.busy_cpu * 1000:>8.2f}" if r.limited else f"{'-':>7} {'-':>8}"
    ends = f"{r.lead_in:>5.1f} {r.tail:>5.1f}" if r.limited else f"{'-':>5} {'-':>5}"
    cache = ", ".join(f"{k} {v}" for k, v in sorted(r.cache.items()))
    per = 1000 / max(r.documents, 1)
    return (
        f"{r.name:<44} {r.documents:>6} {r.seconds:>7.1f} {r.rate:>7.1f} {share} {busy} {ends} "
        f"{r.cpu * per:>10.2f} {r.flow_cpu * per:>6.2f} "
        f"{r.prefect_cpu * per:>8.2f} {r.stand_in_cpu * per:>8.2f} {r.calls:>6} {r.refused:>5} {r.failed:>6} "
        f"{r.failed_by_429:>6} {r.redis_commands / max(r.documents, 1):>6.1f}  {cache}"
    )


async def run_all(bench: Bench, docs: Path, cached_docs: Path | None) -> None:
    args = bench.args
    tag = uuid.uuid4().hex[:6]
    limited = {"long_words": 1}  # every document to the large model: the provider with the rate limit
    print(header(), flush=True)
    print(LEGEND, flush=True)
    os.environ["FRUGAL_BATCH_CHUNKS_IN_FLIGHT"] = "2"
    await bench.run("in process (baseline), cold", "inprocess", docs, f"base{tag}", limited, limited=True)
    for workers in args.worker_counts:
        bench.dask.grow(workers)
        os.environ["FRUGAL_BATCH_CHUNKS_IN_FLIGHT"] = str(2 * workers * args.threads)
        threads = f" x {args.threads} threads" if args.threads > 1 else ""
        name = f"dask, {workers} worker{'s' if workers > 1 else ''}{threads}, cold"
        await bench.run(name, "dask", docs, f"dask{workers}{tag}", limited, limited=True)

    if cached_docs is None:
        return
    n = args.cached_n
    workers = max(args.worker_counts)
    os.environ.update(
        FRUGAL_BATCH_CHUNK_SIZE=str(args.cached_chunk_size),
        FRUGAL_BATCH_CONCURRENCY=str(args.cached_concurrency),
        FRUGAL_BATCH_CHUNKS_IN_FLIGHT=str(2 * workers),
    )
    namespace = f"hits{tag}"
    print(f"\nall cached: filling the prompt cache with {n} documents (inline, the stand-in answering at once) ...", flush=True)
    peer(bench.url, "/_peer/config", {"delay": 0.0})
    started = time.perf_counter()
    filled = await bench.run(f"fill the cache ({n}, inline, cold)", "inline", cached_docs, namespace)
    bench.rows.remove(filled)
    print(f"  (filled in {time.perf_counter() - started:.0f} s)", flush=True)
    await bench.run(f"inline, all cached ({n})", "inline", cached_docs, namespace)
    await bench.run(f"dask {workers} workers, all cached ({n})", "dask", cached_docs, namespace)
    before = await cached_task_runs()
    await bench.run(f"dask {workers} workers, chunks from results ({n})", "dask", cached_docs, namespace)
    chunks = -(-n // args.cached_chunk_size)
    deadline = time.monotonic() + 15  # the server records task run states from events, a moment later
    while (served := await cached_task_runs() - before) < chunks and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    print(f"  chunks served from Prefect's results (task runs in state Cached): {served} of {chunks}", flush=True)


async def cached_task_runs() -> int:
    """Task runs in the state Cached on the Prefect server (its REST API: the client has no count of task runs)."""
    from prefect.settings import PREFECT_API_URL

    async with httpx.AsyncClient(base_url=str(PREFECT_API_URL.value()), trust_env=False, timeout=10) as client:
        found = await client.post("/task_runs/count", json={"task_runs": {"state": {"name": {"any_": ["Cached"]}}}})
        found.raise_for_status()
        return int(found.json())


def report(bench: Bench) -> None:
    args = bench.args
    allowed = args.rpm / 60
    best = args.n / ((args.n - 1) / allowed + args.latency)
    print()
    print(f"targets (allowed rate {allowed:g}/s; {args.n} calls cannot beat {best:.2f}/s = {best / allowed:.1%} of it)")
    for r in bench.rows:
        if r.limited:
            ok = r.rate / allowed >= 0.9 and not r.failed_by_429
            print(
                f"  {r.name:<44} {r.rate / allowed:6.1%} of the allowed rate end to end ({r.busy_rate / allowed:.1%} from "
                f"the first answer to the last), {r.failed_by_429} failed by 429 (target >= 90 %, 0): "
                f"{'met' if ok else 'NOT met'}"
            )
        elif "all cached" in r.name or "from results" in r.name:
            print(f"  {r.name:<44} {r.seconds:6.1f} s (target <= 10 s): {'met' if r.seconds <= 10 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400, help="documents per rate-limited run (at 600 rpm: ~40 s each)")
    parser.add_argument("--workers", default="1,2,4", help="Dask worker processes, run after run (comma-separated, growing)")
    parser.add_argument("--threads", type=int, default=2, help="threads per `dask worker` process (--nthreads)")
    parser.add_argument("--rpm", type=float, default=600, help="the stand-in's limit, and FRUGAL_LIMITS's")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds the stand-in takes per answer")
    parser.add_argument("--concurrency", type=int, default=8, help="FRUGAL_BATCH_CONCURRENCY of the rate-limited runs")
    parser.add_argument("--chunk-size", type=int, default=100, help="FRUGAL_BATCH_CHUNK_SIZE of the rate-limited runs")
    parser.add_argument("--cached-n", type=int, default=10_000, help="documents of the all-cached rerun (0: skip it)")
    parser.add_argument("--cached-chunk-size", type=int, default=500, help="FRUGAL_BATCH_CHUNK_SIZE of the all-cached runs")
    parser.add_argument("--cached-concurrency", type=int, default=64, help="FRUGAL_BATCH_CONCURRENCY of the all-cached runs")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="a Redis db of its own: flushed at start and end")
    parser.add_argument("--prefect-api-url", default=None, help="a running Prefect server; default: a fresh one on PostgreSQL")
    parser.add_argument("--quiet-timeout", type=float, default=10.0, help="seconds each run waits at most for a quiet machine")
    parser.add_argument("--deadline", type=float, default=580.0, help="seconds the whole script may take; then it stops")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs of every process)")
    parser.add_argument(
        "--no-preload",
        action="store_true",
        help="start the scheduler and workers without --preload flows.orchestration.dask_warmup: the first Dask "
        "batch then waits for the scheduler to import Prefect and the project (once per scheduler process)",
    )
    args = parser.parse_args()
    args.worker_counts = sorted(int(w) for w in args.workers.split(",") if w)
    if not args.redis.startswith(("redis://127.0.0.1", "redis://localhost")):
        raise SystemExit("--redis: loopback only (redis://127.0.0.1:6379/DB): the benchmark flushes that db")

    def out_of_time(signum: int, frame: object) -> None:
        raise TimeoutError(f"the benchmark ran past --deadline {args.deadline:g} s: stopping")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(args.deadline))
    load = os.getloadavg()
    print(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs; stand-in {args.rpm:g} requests/min "
        f"({args.rpm / 60:g}/s), {args.latency * 1000:g} ms per answer; {args.n} documents per run, chunks of {args.chunk_size}, "
        f"{args.concurrency} in flight per chunk, 2 chunks in flight per worker; Redis {args.redis}",
        flush=True,
    )
    import redis

    store = redis.Redis.from_url(args.redis)
    store.flushdb()
    work = Path(tempfile.mkdtemp(prefix="frugal-bench-dask-"))
    docs = work / "docs"
    make_documents(docs, args.n, long_every=0)
    cached_docs = None
    if args.cached_n:
        cached_docs = work / "cached-docs"
        make_documents(cached_docs, args.cached_n, long_every=0)
    (work / "logs").mkdir()
    dask = Dask(work / "logs", {}, threads=args.threads, preload=not args.no_preload)
    try:
        with (
            stand_in(work / "logs", args.latency, args.rpm) as (url, stand_in_process),
            prefect_server(work / "logs", args.prefect_api_url) as api,
        ):
            settings = {
                "FRUGAL_SLM_PROVIDER": "ollama",
                "OLLAMA_HOST": url,
                "FRUGAL_LLM_PROVIDER": "openai",
                "OPENAI_BASE_URL": url + "/v1",
                "OPENAI_API_KEY": "sk-bench-0123456789",
                "FRUGAL_LLM_MODEL": MODEL,
                "FRUGAL_LIMITS": json.dumps({f"openai/{MODEL}": {"rpm": args.rpm}}),
                "FRUGAL_LLM_MAX_RETRY_SECONDS": "120",
                "FRUGAL_CACHE_URL": args.redis,
                "FRUGAL_CACHE_PREFIX": f"benchdask{uuid.uuid4().hex[:6]}",
                "FRUGAL_FILE_ROOTS": str(work),  # the documents and summaries: "shared storage"
                "FRUGAL_BATCH_CONCURRENCY": str(args.concurrency),
                "FRUGAL_BATCH_CHUNK_SIZE": str(args.chunk_size),
                "NO_PROXY": "127.0.0.1,localhost",
            }
            prefect = {
                "PREFECT_API_URL": api,
                "PREFECT_LOCAL_STORAGE_PATH": str(work / "results"),  # shared by the flow and the workers
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING",
            }
            base = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("PREFECT_", "FRUGAL_", "OLLAMA_", "OPENAI_", "ANTHROPIC_", "DASK_"))
            }
            dask.env = {
                **base,
                **settings,
                **prefect,
                "FRUGAL_DATA_DIR": str(work / "worker-data"),
                "PREFECT_HOME": str(work / "worker-home"),
                "PYTHONUNBUFFERED": "1",
            }
            os.environ.update(settings, **prefect, FRUGAL_DATA_DIR=str(work / "data"), PREFECT_HOME=str(work / "client-home"))
            dask.start_scheduler()
            os.environ["FRUGAL_BATCH_DASK_ADDRESS"] = dask.address
            server = psutil.Process(SERVER_PIDS[0]) if SERVER_PIDS else None  # not ours when --prefect-api-url
            print(f"Prefect server {api}, Dask scheduler {dask.address}", flush=True)
            bench = Bench(args, work, url, stand_in_process, server, dask, store)
            # Prefect read its settings when the project's modules imported it, before the server started
            with temporary_settings(
                updates={PREFECT_API_URL: api, PREFECT_HOME: work / "client-home", PREFECT_LOCAL_STORAGE_PATH: work / "results"}
            ):
                try:
                    asyncio.run(run_all(bench, docs, cached_docs))
                finally:
                    report(bench)
    finally:
        signal.alarm(0)
        dask.close()
        with contextlib.suppress(Exception):
            from flows import ledger

            ledger.flush(10)
        store.flushdb()
        store.close()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
