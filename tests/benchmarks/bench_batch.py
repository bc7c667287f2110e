"""Nightly batch summarisation: throughput and per-item overhead, cold and all-cached, against a naive map.

    .venv/bin/python tests/benchmarks/bench_batch.py [--n 10000] [--baseline-n 1000] [--concurrency 32]
        [--chunk-size 500] [--delay 0.02] [--redis redis://127.0.0.1:6379/15] [--prefect-api-url URL]
        [--workers 2] [--stand-in lean|starlette] [--no-profile] [--skip orchestrated,naive] [--sharded-clients K]

Not a test: it prints figures and asserts nothing. What it does, in one process:

1. Writes N small .txt documents (40-60 words each, every 50th one 650 words, so it goes to the
   large model) to a temporary directory.
2. Starts the model stand-in in a process of its own (`python -m tests.peers.serve_peer --server
   lean`, answering after --delay seconds: the peer's chat routes on a bare HTTP server, so that on
   a machine of 2 CPUs the stand-in takes ~0.1 ms of CPU per answer from the batch instead of the
   Starlette peer's ~0.35; `--stand-in starlette` for that one) and points both tiers at it: the small tier as Ollama, the large
   one as OpenAI. Its ceiling at --concurrency is concurrency / delay (32 / 0.02 s = 1,600 items/s);
   it also measures what the project's HTTP client (httpx) gets out of it at that concurrency, with
   nothing else to do, which is the ceiling a batch can reach on this machine.
3. Runs `nightly-summaries` on the documents, the prompt cache on Redis under a fresh prefix:
   inline (`run_inline`) cold in one process, then again (every document a cache hit); inline cold
   again under a fresh prefix with FRUGAL_BATCH_WORKERS=--workers (this process and workers - 1
   chunk workers, started during that run); then orchestrated (the `run_pipeline` Prefect flow, one
   task run per chunk, with the same workers) cold under another fresh prefix, then again.
4. Last (its threads and Prefect client state stay resident, raising later peaks), runs the
   baseline: a naive Prefect flow that `.map`s one task per document (each runs
   `summarise-document` inline for its document) over the first --baseline-n documents, all cached,
   with 32 threads, and extrapolates its per-item cost to N items.
5. Prints, per run: wall time, items/s, wall time per item, CPU time per item (the chunk workers'
   included; their part, and the stand-in's CPU per item, which is not ours but competes for the
   same CPUs, in parentheses), model calls, peak RSS (each run's own high-water mark; the workers' apart); the
   ratios against the targets; and where each run's CPU time went (py-spy, sampling the process
   from outside; --no-profile to skip). Each run (and the ceiling) starts once the machine is quiet
   (at most 15 % of its CPU busy over half a second, waiting up to a minute): what the previous run
   left behind, a Prefect server still taking in its task runs and events, must not slow the next.
6. With --sharded-clients K, before the baseline, an experiment: the cold inline run again with each model endpoint served
   by K HTTP clients in turn instead of one (each provider keeps one per event loop), to show what the pool's
   per-request scan of its connections costs.

The Prefect server is a loopback `prefect server start` on a fresh PostgreSQL database (the SQLite
server stalls under load), created and dropped by the script, unless --prefect-api-url gives one.
Redis keys under the run's prefixes are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT))

from machine import cpu_seconds_of, peak_rss_mb, reset_peak_rss, wait_until_quiet  # noqa: E402  beside this file
from profiling import BIN, RATE, py_spy, summarise_profile  # noqa: E402

from tasks.providers import ChatCall, get_provider, register_provider  # noqa: E402
from tasks.providers.ollama import OllamaProvider  # noqa: E402
from tasks.providers.openai import OpenAIProvider  # noqa: E402

WORDS = (
    "the quarterly report shows revenue growth across regions while costs rose slightly due to new hires "
    "and cloud spending customers praised support response times but asked for better documentation of "
    "the billing api the team plans to ship the new dashboard next month after a security review"
).split()


# -- set-up ---------------------------------------------------------------------------------------


def make_documents(folder: Path, n: int, long_every: int = 50) -> int:
    """N .txt files, distinct texts; every `long_every`-th one is long (> long_words: the large model)."""
    rng = random.Random(7)
    folder.mkdir(parents=True)
    long_docs = 0
    for i in range(n):
        count = 650 if long_every and i % long_every == long_every - 1 else rng.randint(40, 60)
        long_docs += count == 650
        words = " ".join(rng.choice(WORDS) for _ in range(count))
        (folder / f"doc-{i:06d}.txt").write_text(f"Document {i}. {words}.\n", encoding="utf-8")
    return long_docs


def file_create_cost(folder: Path, n: int = 300) -> tuple[float, float]:
    """Microseconds of wall and CPU time to create, write, close and rename a small file in `folder`
    (what writing one summary costs the file system)."""
    folder.mkdir(parents=True, exist_ok=True)
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        tmp = folder / f".f{i}.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            out.write("# a summary\n" * 10)
        os.replace(tmp, folder / f"f{i}.md")
    wall, cpu = (time.perf_counter() - started) / n * 1e6, (time.process_time() - cpu) / n * 1e6
    shutil.rmtree(folder)
    return wall, cpu


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def stand_in(delay: float, folder: Path, server: str = "lean") -> Iterator[str]:
    """The model stand-in in its own process; yields its URL."""
    from tests.peers.serve_peer import spawn

    process, url = spawn(folder, delay, server)
    try:
        PEER_PIDS[:] = [process.pid]
        yield url
    finally:
        PEER_PIDS.clear()
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def prefect_server(folder: Path, api_url: str | None, needed: bool = True) -> Iterator[str]:
    """A loopback Prefect server on a fresh PostgreSQL database (dropped afterwards), or the given one."""
    if api_url or not needed:
        yield api_url or ""
        return
    import asyncpg
    import httpx

    database = f"frugal_bench_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{database}"'))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(folder / "server-home"),
        PREFECT_API_DATABASE_CONNECTION_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    log = (folder / "prefect-server.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not start: {(folder / 'prefect-server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with contextlib.suppress(Exception):
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


# -- measuring ------------------------------------------------------------------------------------


def worker_pids() -> list[int]:
    """This process's chunk workers (FRUGAL_BATCH_WORKERS > 1)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == me:
                    if b"flows.engine.chunk_workers" in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
    return found


def workers_cpu_seconds() -> float:
    """CPU time the chunk workers have used so far."""
    return cpu_seconds_of(worker_pids())


#: the model stand-in's process, whose CPU each run reports (on a machine of few CPUs it competes with the batch)
PEER_PIDS: list[int] = []


def items_in_workers() -> int:
    """Items the chunk workers of this process have answered so far."""
    from flows.engine.chunk_workers import idle_workers

    return sum(worker.items for worker in idle_workers())


def workers_peak_rss_mb(reset: bool = False) -> float:
    peak = 0.0
    for pid in worker_pids():
        with contextlib.suppress(OSError, ValueError):
            if reset:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
    return peak


def peer_stats(url: str) -> dict[str, Any]:
    import httpx

    return dict(httpx.get(url + "/_peer/stats", timeout=10).json())


@dataclass
class Measured:
    name: str
    items: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    model_calls: int
    cache: dict[str, int] = field(default_factory=dict)
    note: str = ""
    profile: Path | None = None
    workers_peak_rss_mb: float = 0.0
    workers_cpu_seconds: float = 0.0
    peer_cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.items / self.seconds

    @property
    def ms_per_item(self) -> float:
        return self.seconds / self.items * 1000

    @property
    def cpu_ms_per_item(self) -> float:
        return self.cpu_seconds / self.items * 1000

    def line(self) -> str:
        cache = ", ".join(f"{k} {v}" for k, v in sorted(self.cache.items()))
        return (
            f"{self.name:<34} {self.items:>6} items {self.seconds:8.2f} s {self.rate:8.0f} items/s "
            f"{self.ms_per_item:7.3f} ms/item  cpu {self.cpu_ms_per_item:6.3f} ms/item"
            + (f" (workers {self.workers_cpu_seconds / self.items * 1000:.3f})" if self.workers_cpu_seconds else "")
            + f" (stand-in {self.peer_cpu_seconds / self.items * 1000:.3f})  "
            f"model calls {self.model_calls:>6}  peak RSS {self.peak_rss_mb:5.0f} MB"
            + (f" (each worker {self.workers_peak_rss_mb:.0f} MB)" if self.workers_peak_rss_mb else "")
            + f"  cache: {cache}{self.note}"
        )


@contextlib.contextmanager
def measure(name: str, items: int, peer_url: str, out: list[Measured], profile: Path | None = None) -> Iterator[Measured]:
    """Time a run, once the machine is quiet; with `profile`, sample it with py-spy into that file."""
    wait_until_quiet()
    result = Measured(name, items, 0.0, 0.0, 0.0, 0, profile=profile)
    with py_spy(profile):
        before = peer_stats(peer_url)["answered"]
        reset_peak_rss()
        workers_peak_rss_mb(reset=True)
        started, cpu, workers_cpu = time.perf_counter(), time.process_time(), workers_cpu_seconds()
        peer_cpu = cpu_seconds_of(PEER_PIDS)
        yield result
        result.seconds = time.perf_counter() - started
        result.workers_cpu_seconds = workers_cpu_seconds() - workers_cpu
        result.cpu_seconds = time.process_time() - cpu + result.workers_cpu_seconds  # the workers' too
        result.peer_cpu_seconds = cpu_seconds_of(PEER_PIDS) - peer_cpu
        result.peak_rss_mb = peak_rss_mb()
        result.workers_peak_rss_mb = workers_peak_rss_mb()
        result.model_calls = peer_stats(peer_url)["answered"] - before
    out.append(result)
    print(result.line(), flush=True)


# -- the runs -------------------------------------------------------------------------------------


async def client_ceiling(url: str, concurrency: int, n: int) -> tuple[float, float]:
    """Ollama chat requests through the project's Ollama provider (its httpx client), nothing else: (items/s, cpu ms/request)."""
    provider = get_provider("ollama", endpoint=url)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with semaphore:
            await provider.complete(
                ChatCall(model="bench", messages=[{"role": "user", "content": f"ceiling {i}"}], max_tokens=64, temperature=0)
            )

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - started), (time.process_time() - cpu) / n * 1000


class _ClientRing:
    """Stands in for a provider's per-loop client: `k` clients of this loop, used in turn."""

    def __init__(self, k: int, limits: Any) -> None:
        self.k, self.limits = k, limits
        self.cycle: Iterator[Any] | None = None

    def get(self) -> Any:
        import httpx

        if self.cycle is None:
            self.cycle = itertools.cycle([httpx.AsyncClient(timeout=60.0, limits=self.limits) for _ in range(self.k)])
        return next(self.cycle)

    async def aclose(self) -> None:
        """The experiment's clients live as long as the process."""


@contextlib.contextmanager
def sharded_clients(k: int, concurrency: int) -> Iterator[None]:
    """An experiment: each endpoint served by a ring of `k` HTTP clients (used in turn) instead of one.

    httpcore's pool scans every connection of a client on each request and release (with a
    getpeername and a poll per idle connection); at 32 connections that costs ~2 ms of CPU per
    request. With k clients each scan covers concurrency / k connections. The providers are
    swapped through the registry, the seam an extension uses.
    """
    import httpx

    size = max(2, -(-concurrency // k) * 2)
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)

    def ringed(factory: Any) -> Any:
        def make(settings: Any, endpoint: str | None) -> Any:
            provider = factory(settings, endpoint)
            provider.clients = _ClientRing(k, limits)
            return provider

        return make

    register_provider("ollama", ringed(OllamaProvider.from_settings))
    register_provider("openai", ringed(OpenAIProvider.from_settings))
    try:
        yield
    finally:
        register_provider("ollama", OllamaProvider.from_settings)
        register_provider("openai", OpenAIProvider.from_settings)


def batch_inputs(docs: Path, destination: Path) -> dict[str, Any]:
    return {"source": str(docs), "destination": str(destination), "namespace": "bench"}


def check(output: dict[str, Any], n: int, name: str) -> dict[str, int]:
    if output.get("documents") != n or output.get("failed"):
        raise SystemExit(f"{name}: expected {n} documents and no failure, got {output}")
    return dict(output.get("cache") or {})


def naive_flow(concurrency: int) -> Any:
    """The baseline: one Prefect task run per document, `task.map`."""
    from prefect import flow, task, unmapped
    from prefect.cache_policies import NO_CACHE
    from prefect.futures import wait
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.engine.executor import execute
    from flows.engine.runners import InlineRunner
    from flows.language import catalog

    @task(name="summarise-one", cache_policy=NO_CACHE, persist_result=False)
    async def summarise_one(item: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        result = await execute(catalog.load("summarise-document"), {**inputs, **item}, InlineRunner())
        return dict(result.output)

    @flow(name="naive-map", task_runner=ThreadPoolTaskRunner(max_workers=concurrency))
    async def naive(items: list[dict[str, Any]], inputs: dict[str, Any]) -> dict[str, int]:
        futures = summarise_one.map(items, unmapped(inputs))
        wait(futures)
        return dict(Counter(f.result()["cache"] for f in futures))

    return naive


def documents(docs: Path, n: int) -> list[dict[str, Any]]:
    from tasks.steps.documents import describe_source
    from tasks.steps.sources import iter_items

    items = []
    for item in iter_items("bench", describe_source(str(docs))):
        items.append(item)
        if len(items) == n:
            break
    return items


async def run_all(args: argparse.Namespace, docs: Path, work: Path, peer: str, prefixes: list[str]) -> list[Measured]:
    from flows.orchestration.flow import run_inline, run_pipeline

    results: list[Measured] = []
    n = args.n
    skip = set(args.skip.split(",")) if args.skip else set()

    wait_until_quiet()
    rate, cpu_ms = await client_ceiling(peer, args.concurrency, args.ceiling_n)
    ideal = args.concurrency / args.delay
    print(
        f"stand-in ceiling: {ideal:,.0f} items/s in theory ({args.concurrency} / {args.delay:g} s); "
        f"{rate:,.0f} requests/s measured through the project's HTTP client alone "
        f"({cpu_ms:.2f} ms client CPU per request, {args.ceiling_n} requests at concurrency {args.concurrency})",
        flush=True,
    )

    def profile(name: str) -> Path | None:
        return work / f"profile-{name}.txt" if args.profile else None

    inline_inputs = batch_inputs(docs, work / "out-inline")
    os.environ["FRUGAL_CACHE_PREFIX"] = prefixes[0]
    os.environ["FRUGAL_BATCH_WORKERS"] = "1"
    with measure("inline, cold, 1 process", n, peer, results, profile("inline-cold")) as m:
        m.cache = check((await run_inline("nightly-summaries", inline_inputs)).output, n, m.name)
    with measure("inline, all cached", n, peer, results, profile("inline-hit")) as m:
        m.cache = check((await run_inline("nightly-summaries", inline_inputs)).output, n, m.name)
    processes = f"{args.workers} processes"
    os.environ["FRUGAL_BATCH_WORKERS"] = str(args.workers)
    before_workers = items_in_workers()
    if args.workers > 1:  # the workers start in this run: their start-up (~2 s) is part of it
        os.environ["FRUGAL_CACHE_PREFIX"] = prefixes[3]
        with measure(f"inline, cold, {processes}", n, peer, results, profile("inline-cold-workers")) as m:
            out = (await run_inline("nightly-summaries", batch_inputs(docs, work / "out-workers"))).output
            m.cache = check(out, n, m.name)
            m.note = f"  (workers ran {items_in_workers() - before_workers} items)"

    if "orchestrated" not in skip:
        flow_inputs = batch_inputs(docs, work / "out-flow")
        os.environ["FRUGAL_CACHE_PREFIX"] = prefixes[1]
        with measure(f"orchestrated (Prefect flow), cold, {processes}", n, peer, results, profile("flow-cold")) as m:
            m.cache = check((await run_pipeline("nightly-summaries", flow_inputs))["output"], n, m.name)
        with measure("orchestrated, all cached", n, peer, results, profile("flow-hit")) as m:
            m.cache = check((await run_pipeline("nightly-summaries", flow_inputs))["output"], n, m.name)

    if args.sharded_clients:
        os.environ["FRUGAL_CACHE_PREFIX"] = prefixes[2]
        k = args.sharded_clients
        with sharded_clients(k, args.concurrency):
            rate, cpu_ms = await client_ceiling(peer, args.concurrency, args.ceiling_n)
            print(f"  experiment: the stand-in through {k} HTTP clients per endpoint: {rate:,.0f} req/s, {cpu_ms:.2f} ms CPU/req")
            with measure(f"inline, cold, {k} HTTP clients", n, peer, results, profile("inline-cold-sharded")) as m:
                out = (await run_inline("nightly-summaries", batch_inputs(docs, work / "out-sharded"))).output
                m.cache = check(out, n, m.name)

    if "naive" not in skip:
        os.environ["FRUGAL_CACHE_PREFIX"] = prefixes[0]  # every document cached by the inline run
        # each task of the naive map opens its own Redis connection on its own event loop, among 32
        # threads fighting for the GIL: a generous cache timeout keeps its look-ups hits (a cache call
        # that times out is a miss that calls the model, which would only make the baseline slower)
        os.environ["FRUGAL_CACHE_TIMEOUT"] = "5"
        items = documents(docs, args.baseline_n)
        flow_fn = naive_flow(args.concurrency)
        with measure("naive .map, all cached", len(items), peer, results) as m:
            m.cache = await flow_fn(items, {"destination": str(work / "out-naive"), "namespace": "bench"})
        if len(items) < n:
            m.note = f"  (first {len(items)} documents; x{n / len(items):g} = {m.seconds * n / len(items):.1f} s for {n})"
            print(f"  naive .map extrapolated to {n} documents: {m.seconds * n / len(items):.1f} s", flush=True)
    return results


def report(args: argparse.Namespace, results: list[Measured]) -> None:
    by = {r.name: r for r in results}
    ideal = args.concurrency / args.delay
    naive = by.get("naive .map, all cached")
    print()
    print("targets")
    for r in results:
        if "cold" in r.name:
            print(f"  {r.name:<36} {r.rate:7.0f} items/s = {r.rate / ideal:5.1%} of the stand-in's ceiling (target >= 50%)")
    for name in ("inline, all cached", "orchestrated, all cached"):
        if name in by:
            r = by[name]
            print(
                f"  {name:<36} {r.seconds:7.2f} s for {r.items} items, {r.ms_per_item:.3f} ms/item (target <= 10 s, <= 1 ms/item)"
            )
            if naive is not None:
                print(f"  {'':<36} {naive.ms_per_item / r.ms_per_item:7.1f}x faster per item than the naive .map (target >= 25x)")
    if naive is not None:
        print(f"  {'naive .map, all cached':<36} {naive.ms_per_item:7.3f} ms/item")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of the process over all runs: {peak:.0f} MB (target <= 500 MB)")
    for r in results:
        if r.profile is not None:
            print()
            print(f"profile of the run '{r.name}' (py-spy, {RATE} samples/s, {r.profile.name}):")
            print(summarise_profile(r.profile))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="documents")
    parser.add_argument("--baseline-n", type=int, default=1_000, help="documents through the naive .map (extrapolated to --n)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="FRUGAL_BATCH_WORKERS for the multi-process cold runs")
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds the stand-in takes per answer")
    parser.add_argument(
        "--stand-in",
        choices=["lean", "starlette"],
        default="lean",
        help="the stand-in's HTTP server: lean (~0.1 ms CPU per answer) or the Starlette peer (~0.35 ms)",
    )
    parser.add_argument("--ceiling-n", type=int, default=2_000, help="requests for the HTTP-client ceiling")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--prefect-api-url", default=None, help="a running Prefect server; default: a fresh one on PostgreSQL")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="do not sample the runs with py-spy")
    parser.add_argument("--skip", default="", help="comma-separated: orchestrated, naive")
    parser.add_argument(
        "--sharded-clients",
        type=int,
        default=0,
        metavar="K",
        help="also run inline cold with K HTTP clients per endpoint (an experiment)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="frugal-bench-batch-"))
    docs = work / "docs"
    long_docs = make_documents(docs, args.n)
    run_tag = uuid.uuid4().hex[:8]
    prefixes = [f"benchbatch{run_tag}i", f"benchbatch{run_tag}o", f"benchbatch{run_tag}s", f"benchbatch{run_tag}w"]
    print(
        f"nightly-summaries on {args.n} documents ({args.n - long_docs} short -> small model, {long_docs} long -> large model), "
        f"concurrency {args.concurrency}, chunks of {args.chunk_size}, stand-in {args.delay * 1000:g} ms per answer, "
        f"Redis {args.redis}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    wall, cpu = file_create_cost(work / "calibrate")
    print(f"this machine: creating + renaming one small file in {work} costs {wall:.0f} us ({cpu:.0f} us CPU)", flush=True)
    import redis

    skip = set(args.skip.split(",")) if args.skip else set()
    try:
        with (
            stand_in(args.delay, work, args.stand_in) as peer,
            prefect_server(work, args.prefect_api_url, needed=not {"orchestrated", "naive"} <= skip) as api,
        ):
            os.environ.update(
                FRUGAL_SLM_PROVIDER="ollama",
                OLLAMA_HOST=peer,
                FRUGAL_LLM_PROVIDER="openai",
                OPENAI_BASE_URL=peer + "/v1",
                OPENAI_API_KEY="sk-bench-0123456789",
                FRUGAL_LLM_MODEL="gpt-4o-mini",  # a priced model: the ledger records costs, as in production
                FRUGAL_CACHE_URL=args.redis,
                FRUGAL_DATA_DIR=str(work / "data"),
                FRUGAL_FILE_ROOTS=str(work),  # the documents and summaries live in the temporary folder
                FRUGAL_BATCH_CONCURRENCY=str(args.concurrency),
                FRUGAL_BATCH_CHUNK_SIZE=str(args.chunk_size),
                **({"PREFECT_API_URL": api} if api else {}),
                PREFECT_HOME=str(work / "client-home"),
                PREFECT_LOCAL_STORAGE_PATH=str(work / "results"),
                PREFECT_SERVER_ANALYTICS_ENABLED="false",
                PREFECT_LOGGING_LEVEL="WARNING",
            )
            print(f"Prefect server: {api}", flush=True)
            results = asyncio.run(run_all(args, docs, work, peer, prefixes))
        report(args, results)
    finally:
        from flows import ledger

        ledger.flush(10)
        client = redis.Redis.from_url(args.redis)
        for prefix in prefixes:
            for key in client.scan_iter(f"{prefix}:*", count=1000):
                client.delete(key)
        client.close()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
