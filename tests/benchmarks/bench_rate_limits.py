"""Provider rate limits: a batch of calls against a stand-in that enforces a provider's limit, from
1, 2 and 4 processes sharing Redis, with the limiter (FRUGAL_LIMITS) and without it (the baseline).

    .venv/bin/python tests/benchmarks/bench_rate_limits.py [--n 240] [--rpm 600] [--latency 0.3]
        [--concurrency 16] [--processes 1,2,4] [--redis redis://127.0.0.1:6379/15]

Not a test: it prints figures and asserts nothing. What it does:

1. Starts the model stand-in in a process of its own (`python -m tests.peers.serve_peer --rpm RPM
   --delay LATENCY`): OpenAI's wire format, 429 with OpenAI's error JSON and ``retry-after`` beyond
   RPM requests a minute (a bucket holding one second's worth, as OpenAI enforces a minute's limit
   over shorter spans), each admitted request answered after LATENCY seconds.
2. For each process count P: P worker processes (this script with --worker) share --n distinct
   calls, each keeping --concurrency calls in flight, all starting at once:
   - limited: through the real call path (`answer_large`), FRUGAL_LIMITS={"openai/gpt-4o-mini":
     {"rpm": RPM}}, the buckets on the shared Redis (FRUGAL_CACHE_URL), a fresh prefix per run;
   - baseline: the same calls sent by the provider without the limiter (`provider.complete`, as
     before rate limits: 429s retried after their Retry-After, FRUGAL_LLM_MAX_ATTEMPTS=4 attempts).
3. Prints per run: wall time (first call to last answer), calls that succeeded, their rate as a
   share of the allowed rate (RPM / 60 a second; N calls cannot beat N / ((N - 1) / rate + latency)),
   the 429s the stand-in answered, the items that failed.

Each run is bounded: --n at the allowed rate is --n / (RPM / 60) seconds (24 s by default).
The machine's load average is printed first: other work on the machine shows in the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
MODEL = "gpt-4o-mini"


# -- a worker process -------------------------------------------------------------------------------


async def work(mode: str, first: int, count: int, concurrency: int, start_at: float) -> dict[str, Any]:
    from tasks.providers import get_provider
    from tasks.steps.call_llm import LlmRequest, answer_large, prepare_large

    await asyncio.sleep(max(start_at - time.time(), 0))
    numbers = iter(range(first, first + count))
    result: dict[str, Any] = {"ok": 0, "failed": 0, "errors": [], "started": time.time(), "ended": time.time()}

    async def one(i: int) -> None:
        request = LlmRequest(prompt=f"document {i}: summarise it", max_tokens=16)
        if mode == "limited":
            await answer_large(request)
        else:
            prepared = prepare_large(request)
            provider = get_provider(prepared.choice.provider, endpoint=prepared.choice.endpoint)
            await provider.complete(prepared.call)

    async def caller() -> None:
        for i in numbers:
            try:
                await one(i)
                result["ok"] += 1
            except Exception as exc:  # noqa: BLE001 - counted and shown
                result["failed"] += 1
                result["errors"] = [*result["errors"][-2:], f"{type(exc).__name__}: {str(exc)[:160]}"]
            result["ended"] = time.time()

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return result


def worker_main(args: argparse.Namespace) -> None:
    import logging

    logging.getLogger("frugal").setLevel(logging.ERROR)  # the retries' warnings: counted by the stand-in instead
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())
    print(json.dumps(asyncio.run(work(args.worker, args.first, args.count, args.concurrency, start_at))), flush=True)


# -- the driver -------------------------------------------------------------------------------------


def run(mode: str, processes: int, args: argparse.Namespace, url: str, folder: Path) -> dict[str, Any]:
    httpx.post(url + "/_peer/reset", trust_env=False).raise_for_status()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRUGAL_", "OPENAI_", "ANTHROPIC_", "OLLAMA_"))}
    env.update(
        FRUGAL_LLM_PROVIDER="openai",
        OPENAI_BASE_URL=url + "/v1",
        OPENAI_API_KEY="sk-bench-0000000000",
        FRUGAL_LLM_MODEL=MODEL,
        FRUGAL_CACHE_URL=args.redis,
        FRUGAL_CACHE_PREFIX=f"bench-limits-{uuid.uuid4().hex[:8]}",
        FRUGAL_DATA_DIR=str(folder / "data"),
        FRUGAL_LLM_MAX_RETRY_SECONDS="60",
        NO_PROXY="127.0.0.1,localhost",
    )
    if mode == "limited":
        env["FRUGAL_LIMITS"] = json.dumps({f"openai/{MODEL}": {"rpm": args.rpm}})
    share = [args.n // processes + (1 if i < args.n % processes else 0) for i in range(processes)]
    procs = []
    first = 0
    for count in share:
        command = [sys.executable, __file__, "--worker", mode, "--first", str(first), "--count", str(count)]
        procs.append(
            subprocess.Popen(
                [*command, "--concurrency", str(args.concurrency)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
        first += count
    results = []
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready", proc.stderr
        start_at = f"{time.time() + 0.5}\n".encode()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(start_at)
            proc.stdin.flush()
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"a worker failed: {err.decode()[-2000:]}")
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stats = httpx.get(url + "/_peer/stats", trust_env=False).json()
    ok = sum(r["ok"] for r in results)
    wall = max(r["ended"] for r in results) - min(r["started"] for r in results)
    allowed = args.rpm / 60
    return {
        "mode": mode,
        "processes": processes,
        "wall": wall,
        "ok": ok,
        "rate": ok / wall,
        "share": ok / wall / allowed,
        "refused": stats["refused"],
        "failed": sum(r["failed"] for r in results),
        "errors": [e for r in results for e in r["errors"]][:2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=240, help="calls per run")
    parser.add_argument("--rpm", type=float, default=600, help="the stand-in's limit, and ours")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds the stand-in takes per answer")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight per process")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--worker", choices=["limited", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return

    from tests.peers.serve_peer import spawn

    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    allowed = args.rpm / 60
    best = args.n / ((args.n - 1) / allowed + args.latency)
    print(
        f"stand-in: {args.rpm:g} requests/min ({allowed:g}/s), {args.latency:g} s per answer; {args.n} calls per run, "
        f"{args.concurrency} in flight per process; best possible {best / allowed:.1%} of the allowed rate"
    )
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as tmp:
        folder = Path(tmp)
        process, url = spawn(folder, args.latency, server="starlette", name="stand-in", rpm=args.rpm)
        try:
            print(f"{'run':<10} {'procs':>5} {'wall s':>7} {'ok':>5} {'calls/s':>8} {'of allowed':>10} {'429s':>6} {'failed':>6}")
            for processes in (int(p) for p in args.processes.split(",")):
                for mode in ("limited", "baseline"):
                    r = run(mode, processes, args, url, folder)
                    print(
                        f"{mode:<10} {processes:>5} {r['wall']:>7.1f} {r['ok']:>5} {r['rate']:>8.2f} "
                        f"{r['share']:>10.1%} {r['refused']:>6} {r['failed']:>6}",
                        flush=True,
                    )
                    for error in r["errors"]:
                        print(f"{'':<10} e.g. {error}")
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
