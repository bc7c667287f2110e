"""Cache-hit latency of the `answer` pipeline, against its floors, in one run.

    python tests/benchmarks/bench_cache_hit.py [--n 2000] [--n-flows 30] [--bare-tasks 2]
        [--redis redis://127.0.0.1:6379/15] [--prefect-api-url URL]        (`make bench`)

Prints p50 / p95 of:
  floor        sha256 of a 2 KB request + one raw Redis GET (redis.asyncio, pooled)
  inline       the answer pipeline's cache-hit path, inline, on Redis
  orchestrated the same as a Prefect flow run: 2 task runs (key, lookup); the 4 skipped
               nodes are listed in the run's artifact, not made task runs
  bare flow    a bare async Prefect flow with as many trivial task runs (--bare-tasks)
and the ratios inline/floor (target <= 2) and orchestrated/bare (target <= 1.25).
Each pair is measured interleaved (batches of floor and inline samples in turn;
one orchestrated run and one bare run in turn), so the machine's drift hits both.
Orchestrated runs use a temporary Prefect server on SQLite (the test harness),
or the server given by --prefect-api-url. The SQLite server stalls for ~2 s on
some flow runs of 6+ task runs while it records events; on PostgreSQL runs are
steady, so quote orchestrated figures from a PostgreSQL-backed server.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import hashlib
import os
import statistics
import tempfile
import time
import uuid


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def row(name: str, values: list[float]) -> tuple[float, float]:
    p50, p95 = statistics.median(values), pct(values, 0.95)
    unit, scale = ("µs", 1e6) if p50 < 1e-3 else ("ms", 1e3)
    print(f"{name:<28} n={len(values):<6} p50={p50 * scale:9.1f} {unit}   p95={p95 * scale:9.1f} {unit}")
    return p50, p95


async def floor_and_inline(url: str, prompt: str, n: int, batch: int = 100) -> tuple[list[float], list[float]]:
    """The floor and the inline hit, in alternating batches on one event loop: drift on a shared
    machine (its speed moves by ±20 % over minutes) then hits both alike."""
    import redis.asyncio as aioredis

    from flows.orchestration.flow import run_inline

    first = await run_inline("answer", {"prompt": prompt})
    assert first.output["cache"] in ("miss", "hit"), first.output
    check = await run_inline("answer", {"prompt": prompt})
    assert check.output["cache"] == "hit", check.output
    client = aioredis.Redis.from_url(url)
    key = "bench:floor:" + hashlib.sha256(prompt.encode()).hexdigest()
    await client.set(key, prompt.encode())
    for _ in range(batch):  # warm both paths
        await client.get(key)
        await run_inline("answer", {"prompt": prompt})
    floor_times: list[float] = []
    inline_times: list[float] = []
    while len(floor_times) < n:
        for _ in range(min(batch, n - len(floor_times))):
            t = time.perf_counter()
            k = "bench:floor:" + hashlib.sha256(prompt.encode()).hexdigest()
            await client.get(k)
            floor_times.append(time.perf_counter() - t)
        for _ in range(min(batch, n - len(inline_times))):
            t = time.perf_counter()
            await run_inline("answer", {"prompt": prompt})
            inline_times.append(time.perf_counter() - t)
    await client.delete(key)
    await client.aclose()
    return floor_times, inline_times


async def orchestrated(prompt: str, n: int) -> list[float]:
    from flows.orchestration.flow import run_pipeline

    result = await run_pipeline("answer", {"prompt": prompt})
    assert result["output"]["cache"] == "hit", result["output"]
    times = []
    for _ in range(n):
        t = time.perf_counter()
        await run_pipeline("answer", {"prompt": prompt})
        times.append(time.perf_counter() - t)
    return times


def bare_flow(tasks: int):
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    @task(cache_policy=NO_CACHE, persist_result=False)
    async def step(x: int) -> int:
        return x + 1

    @flow(name=f"bare-{tasks}-tasks")
    async def bare() -> int:
        x = 0
        for i in range(tasks):
            x = await step.with_options(name=f"step{i}", task_run_name=f"step{i}")(x)
        return x

    return bare


async def bare(n: int, tasks: int) -> list[float]:
    flow_fn = bare_flow(tasks)
    await flow_fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        await flow_fn()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--n", type=int, default=2000, help="samples for floor and inline")
    parser.add_argument("--n-flows", type=int, default=30, help="samples for each orchestrated row")
    parser.add_argument("--bare-tasks", type=int, default=2, help="task runs of the bare flow (as many as a hit makes)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument(
        "--prefect-api-url",
        default=None,
        help="a running Prefect server (e.g. one on PostgreSQL); default: a temporary server on SQLite",
    )
    args = parser.parse_args()

    os.environ["FRUGAL_CACHE_URL"] = args.redis
    os.environ["FRUGAL_CACHE_PREFIX"] = f"bench{uuid.uuid4().hex[:8]}"
    if "FRUGAL_DATA_DIR" not in os.environ:  # a folder of its own, removed when the benchmark ends
        data_dir = tempfile.TemporaryDirectory(prefix="frugal-bench-")
        atexit.register(data_dir.cleanup)
        os.environ["FRUGAL_DATA_DIR"] = data_dir.name
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # read when Prefect is first imported, below
    prompt = ("Summarise the following note in one sentence. " * 50)[:2048]

    print(f"answer pipeline, cache-hit path, 2 KB prompt, Redis {args.redis}")
    f, i = asyncio.run(floor_and_inline(args.redis, prompt, args.n))
    f50, _ = row("floor: sha256 + Redis GET", f)
    i50, _ = row("inline cache hit", i)

    import contextlib

    from prefect.testing.utilities import prefect_test_harness

    if args.prefect_api_url:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        server: contextlib.AbstractContextManager[object] = temporary_settings({PREFECT_API_URL: args.prefect_api_url})
        print(f"Prefect server: {args.prefect_api_url}")
    else:
        server = prefect_test_harness(server_startup_timeout=120)
        print("Prefect server: temporary (SQLite)")
    with server:

        async def both() -> tuple[list[float], list[float]]:
            o_times: list[float] = []
            b_times: list[float] = []
            # interleave so drift on a shared machine hits both alike
            for _ in range(args.n_flows):
                o_times += await orchestrated(prompt, 1)
                b_times += await bare(1, args.bare_tasks)
            return o_times, b_times

        o, b = asyncio.run(both())
    o50, _ = row("orchestrated cache hit", o)
    b50, _ = row(f"bare flow, {args.bare_tasks} task runs", b)
    print(f"inline / floor        = {i50 / f50:5.2f}x  (target <= 2)")
    print(f"orchestrated / bare   = {o50 / b50:5.2f}x  (target <= 1.25)")


if __name__ == "__main__":
    main()
