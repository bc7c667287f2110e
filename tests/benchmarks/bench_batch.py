"""Nightly batch summarisation: throughput and per-item overhead, cold and all-cached, against a naive map.

    .venv/bin/python tests/benchmarks/bench_batch.py [--n 2000] [--baseline-n 500] [--concurrency 32]
        [--chunk-size 500] [--delay 0.3] [--redis redis://127.0.0.1:6379/15] [--prefect-api-url URL]
        [--stand-in lean|starlette] [--no-profile] [--skip orchestrated,naive] [--quiet-timeout 60]

    a small run: ... bench_batch.py --n 200 --baseline-n 50 --no-profile

Not a test: it prints figures and asserts nothing. What it does, in one process:

1. Writes N small .txt documents (40-60 words each, every 50th one 650 words, so it goes to the
   large model) to a temporary directory.
2. Starts the model stand-in in a process of its own (`python -m tests.peers.serve_peer --server
   lean`, answering after --delay seconds, 0.3 s by default: about what a small hosted model takes
   for a short summary; the peer's chat routes on a bare HTTP server, so that on a machine of 2 CPUs
   the stand-in takes little CPU from the batch; `--stand-in starlette` for the Starlette peer) and
   points both tiers at it: the small tier as Ollama, the large one as OpenAI. Its ceiling at
   --concurrency is concurrency / delay (32 / 0.3 s = 107 items/s); it also measures what the
   project's HTTP client (httpx) gets out of it at that concurrency with nothing else to do, which is
   the ceiling a batch can reach on this machine.
3. Runs `nightly-summaries` on the documents (the batch runs in this process: one semaphore of
   --concurrency items in flight, `flows.engine.batch`), the prompt cache on Redis under a fresh
   prefix: inline (`run_inline`) cold, then again (every document a cache hit); then orchestrated
   (the `run_pipeline` Prefect flow, one task run per chunk) cold under another fresh prefix, then
   again.
4. Last (its threads and Prefect client state stay resident, raising later peaks), runs the
   baseline: a naive Prefect flow that `.map`s one task per document (each runs
   `summarise-document` inline for its document) over the first --baseline-n documents, all cached,
   with --concurrency threads, and extrapolates its per-item cost to N items.
5. Prints, per run: wall time, items/s, wall time per item, CPU time per item of this process (and,
   in parentheses, the stand-in's, which is not ours but competes for the same CPUs), model calls,
   peak RSS (each run's own high-water mark); the ratios against the targets; and, unless
   --no-profile, where each run's CPU time went (py-spy, sampling the process from outside). Each
   run (and the ceiling) starts once the machine is quiet (at most 15 % of its CPU busy over half a
   second, waiting up to --quiet-timeout seconds): what the previous run left behind, a Prefect
   server still taking in its task runs and events, must not slow the next. On a machine busy with
   other work the figures are noisy: the first line prints the load average.

The Prefect server is a loopback `prefect server start` on a fresh PostgreSQL database (the SQLite
server stalls under load), created and dropped by the script, unless --prefect-api-url gives one;
with `--skip orchestrated,naive` no server is started.
Redis keys under the run's prefixes are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings  # noqa: E402
from profiling import BIN, RATE, py_spy, summarise_profile  # noqa: E402

from tasks.providers import ChatCall, get_provider  # noqa: E402

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


#: the Prefect server's process (its own process group), while `prefect_server` runs one
SERVER_PIDS: list[int] = []


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
    SERVER_PIDS[:] = [process.pid]
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
        SERVER_PIDS.clear()
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with contextlib.suppress(Exception):
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


# -- measuring ------------------------------------------------------------------------------------


#: the model stand-in's process, whose CPU each run reports (on a machine of few CPUs it competes with the batch)
PEER_PIDS: list[int] = []


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
            f" (stand-in {self.peer_cpu_seconds / self.items * 1000:.3f})  "
            f"model calls {self.model_calls:>6}  peak RSS {self.peak_rss_mb:5.0f} MB  cache: {cache}{self.note}"
        )


@contextlib.contextmanager
def measure(
    name: str, items: int, peer_url: str, out: list[Measured], profile: Path | None = None, quiet_timeout: float = 60.0
) -> Iterator[Measured]:
    """Time a run, once the machine is quiet; with `profile`, sample it with py-spy into that file."""
    wait_until_quiet(timeout=quiet_timeout)
    result = Measured(name, items, 0.0, 0.0, 0.0, 0, profile=profile)
    with py_spy(profile):
        before = peer_stats(peer_url)["answered"]
        reset_peak_rss()
        started, cpu = time.perf_counter(), time.process_time()
        peer_cpu = cpu_seconds_of(PEER_PIDS)
        yield result
        result.seconds = time.perf_counter() - started
        result.cpu_seconds = time.process_time() - cpu
        result.peer_cpu_seconds = cpu_seconds_of(PEER_PIDS) - peer_cpu
        result.peak_rss_mb = peak_rss_mb()
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

    wait_until_quiet(timeout=args.quiet_timeout)
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

    def timed(name: str, items: int, profile_name: str | None = None) -> contextlib.AbstractContextManager[Measured]:
        return measure(name, items, peer, results, profile(profile_name) if profile_name else None, args.quiet_timeout)

    inline_inputs = batch_inputs(docs, work / "out-inline")
    os.environ["FRUGAL_CACHE_PREFIX"] = prefixes[0]
    with timed("inline, cold", n, "inline-cold") as m:
        m.cache = check((await run_inline("nightly-summaries", inline_inputs)).output, n, m.name)
    with timed("inline, all cached", n, "inline-hit") as m:
        m.cache = check((await run_inline("nightly-summaries", inline_inputs)).output, n, m.name)

    if "orchestrated" not in skip:
        flow_inputs = batch_inputs(docs, work / "out-flow")
        os.environ["FRUGAL_CACHE_PREFIX"] = prefixes[1]
        with timed("orchestrated (Prefect flow), cold", n, "flow-cold") as m:
            m.cache = check((await run_pipeline("nightly-summaries", flow_inputs))["output"], n, m.name)
        with timed("orchestrated, all cached", n, "flow-hit") as m:
            m.cache = check((await run_pipeline("nightly-summaries", flow_inputs))["output"], n, m.name)
            if m.cache.get("miss"):  # each chunk's task run served from Prefect's result cache (`chunk_key`):
                m.note = "  (chunks from Prefect's result cache, no prompt-cache look-up: the cold run's tally)"

    if "naive" not in skip:
        os.environ["FRUGAL_CACHE_PREFIX"] = prefixes[0]  # every document cached by the inline run
        # each task of the naive map opens its own Redis connection on its own event loop, among 32
        # threads fighting for the GIL: a generous cache timeout keeps its look-ups hits (a cache call
        # that times out is a miss that calls the model, which would only make the baseline slower)
        os.environ["FRUGAL_CACHE_TIMEOUT"] = "5"
        items = documents(docs, args.baseline_n)
        flow_fn = naive_flow(args.concurrency)
        with timed("naive .map, all cached", len(items)) as m:
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
    parser.add_argument("--n", type=int, default=2_000, help="documents (e.g. 200 for a quick run)")
    parser.add_argument("--baseline-n", type=int, default=500, help="documents through the naive .map (extrapolated to --n)")
    parser.add_argument("--concurrency", type=int, default=32, help="FRUGAL_BATCH_CONCURRENCY: items in flight at once")
    parser.add_argument("--chunk-size", type=int, default=500, help="FRUGAL_BATCH_CHUNK_SIZE: items per chunk (task run)")
    parser.add_argument("--delay", type=float, default=0.3, help="seconds the stand-in takes per answer (a model call's latency)")
    parser.add_argument(
        "--stand-in",
        choices=["lean", "starlette"],
        default="lean",
        help="the stand-in's HTTP server: lean (~0.1 ms CPU per answer) or the Starlette peer (~0.35 ms)",
    )
    parser.add_argument("--ceiling-n", type=int, default=320, help="requests for the HTTP-client ceiling")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--prefect-api-url", default=None, help="a running Prefect server; default: a fresh one on PostgreSQL")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="do not sample the runs with py-spy")
    parser.add_argument("--skip", default="", help="comma-separated: orchestrated, naive")
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=60.0,
        help="seconds each run waits at most for the machine to be quiet (0: start at once)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="frugal-bench-batch-"))
    docs = work / "docs"
    long_docs = make_documents(docs, args.n)
    run_tag = uuid.uuid4().hex[:8]
    prefixes = [f"benchbatch{run_tag}i", f"benchbatch{run_tag}o"]
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
            # Prefect read its settings when the project's modules imported it, before the server started
            with temporary_settings(
                updates={
                    **({PREFECT_API_URL: api} if api else {}),
                    PREFECT_HOME: work / "client-home",
                    PREFECT_LOCAL_STORAGE_PATH: work / "results",
                }
            ):
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
