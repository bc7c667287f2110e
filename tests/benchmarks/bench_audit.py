"""What the shadow audit costs the caller: small-model answers with audits off and with every one audited.

    python tests/benchmarks/bench_audit.py [--n 200] [--large-ms 200] [--redis redis://127.0.0.1:6379/15]

Runs the `answer` pipeline inline on distinct prompts (cache misses routed to the small model) against a
loopback model peer whose large-model replies take --large-ms. Interleaved batches of requests run with
FRUGAL_AUDIT_RATE=0 and =1; prints the caller's p50 / p95 for each, their ratio, and how many audits
(each a large call of --large-ms plus a judge call) were made meanwhile. The audit runs after the caller
has its answer, so the ratio stays near 1 although each audit takes longer than the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200, help="requests per setting")
    parser.add_argument("--large-ms", type=float, default=200.0, help="latency of the peer's large-model replies")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()

    from tests.peers.model_peer import ModelPeer

    async def respond(protocol: str, body: dict) -> str:
        if protocol == "ollama":
            return "four"
        await asyncio.sleep(args.large_ms / 1000)
        return '{"label": "agree"}' if "candidate answer" in str(body.get("messages")) else "4"

    peer = ModelPeer(ollama_models=[], responder=respond)
    with peer.serve() as server:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        os.environ.update(
            {
                "FRUGAL_SLM_PROVIDER": "ollama",
                "OLLAMA_HOST": server.url,
                "FRUGAL_LLM_PROVIDER": "openai",
                "OPENAI_BASE_URL": server.url + "/v1",
                "OPENAI_API_KEY": "sk-bench",
                "FRUGAL_LLM_MODEL": "gpt-4o-mini",
                "FRUGAL_CACHE_URL": args.redis,
                "FRUGAL_CACHE_PREFIX": prefix,
                "FRUGAL_AUDIT_BUDGET_USD": "100",
            }
        )
        from flows.ledger.audit import AUDITOR
        from flows.orchestration.flow import run_inline

        times: dict[str, list[float]] = {"0": [], "1": []}
        for i in range(10):  # warm up
            await run_inline("answer", {"prompt": f"warm {i} what is 2+2?"})
        for batch in range(args.n // 10):
            for rate in ("0", "1"):
                os.environ["FRUGAL_AUDIT_RATE"] = rate
                for j in range(10):
                    prompt = f"q{rate}-{batch}-{j} what is 2+2?"
                    started = time.perf_counter()
                    result = await run_inline("answer", {"prompt": prompt})
                    times[rate].append(time.perf_counter() - started)
                    assert result.output["route"] == "small", result.output
        queued_during = AUDITOR.counts.queued
        AUDITOR.drain(120)
        off, on = statistics.median(times["0"]), statistics.median(times["1"])
        print(f"large-model reply latency at the peer: {args.large_ms:.0f} ms (an audit of free text makes two such calls)")
        print(f"audits off   n={len(times['0'])}  p50={off * 1000:7.2f} ms  p95={pct(times['0'], 0.95) * 1000:7.2f} ms")
        print(f"every answer audited  n={len(times['1'])}  p50={on * 1000:7.2f} ms  p95={pct(times['1'], 0.95) * 1000:7.2f} ms")
        print(
            f"ratio audited/off (p50): {on / off:.2f}; audits queued {queued_during}, done {AUDITOR.counts.done}, "
            f"dropped {AUDITOR.counts.dropped}, failed {AUDITOR.counts.failed}"
        )
        import redis

        client = redis.Redis.from_url(args.redis)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


if __name__ == "__main__":
    asyncio.run(main())
