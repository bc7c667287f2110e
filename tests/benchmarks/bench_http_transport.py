"""The providers' HTTP transport: httpx's own against aiohttp (FRUGAL_HTTP_TRANSPORT), same run.

    .venv/bin/python tests/benchmarks/bench_http_transport.py [--n 320] [--delay 0.05] [--rounds 2]

A loopback stand-in (`tests/peers/lean_server.py`, a process of its own) answers OpenAI chat
completions after --delay seconds; one client (`tasks.providers.transport.make_client`, as the
providers make it) sends --n requests with 1 and with 32 in flight, the two transports
interleaved, --rounds times. Printed per run: requests/s and the client process's CPU per
request. Not a test: it prints figures and asserts nothing; the first line is the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.peers.serve_peer import spawn  # noqa: E402

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}


async def run(url: str, transport: str, in_flight: int, n: int) -> tuple[float, float]:
    """(requests/s, client CPU ms per request) for `n` requests, `in_flight` at once."""
    from tasks.providers.transport import make_client

    os.environ["FRUGAL_HTTP_TRANSPORT"] = transport
    async with make_client(30.0) as client:

        async def worker(k: int) -> None:
            for _ in range(k):
                response = await client.post(url + "/v1/chat/completions", json=BODY, headers={"authorization": "Bearer sk-x"})
                response.raise_for_status()
                response.json()

        await asyncio.gather(*(worker(3) for _ in range(in_flight)))  # connections opened, code warm
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(n // in_flight) for _ in range(in_flight)))
        wall, used = time.perf_counter() - started, time.process_time() - cpu
    done = n // in_flight * in_flight
    return done / wall, used / done * 1000


async def main(url: str, args: argparse.Namespace) -> None:
    for round_ in range(1, args.rounds + 1):
        for in_flight in (1, 32):
            for transport in ("httpx", "aiohttp"):
                n = args.n if in_flight > 1 else max(20, args.n // 8)
                rate, cpu = await run(url, transport, in_flight, n)
                print(
                    f"round {round_}  {transport:8s} {in_flight:3d} in flight: {rate:7.1f} requests/s, "
                    f"client CPU {cpu:6.3f} ms/request",
                    flush=True,
                )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=320, help="requests per run with 32 in flight (an eighth of it with 1)")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds the stand-in takes per answer")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} (2 cores); stand-in answers in {args.delay * 1000:.0f} ms", flush=True)
    process, url = spawn(Path(tempfile.mkdtemp(prefix="bench-http-")), args.delay, server="lean", name="stand-in")
    try:
        asyncio.run(main(url, args))
    finally:
        process.terminate()
        process.wait(10)


if __name__ == "__main__":
    cli()
