"""How fast is the in-process small model, and what does the adapter cost?

    .venv/bin/python tests/benchmarks/bench_local_model.py [--runs 5]

Compares LocalModel.complete with a bare xllamacpp.Server built with the same
settings (1 thread, n_ctx 2048, one slot), on the same prompt (max_tokens 64,
temperature 0), alternating the two so machine noise hits both alike. Run 1 of
each side evaluates the prompt; later runs reuse llama.cpp's prompt cache, as
repeated calls in a pipeline do. Then times the constrained label call
(JSON schema with an enum) that a classification node makes.

Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import xllamacpp

from tasks.providers.llama_cpp import LocalModel, find_bundled_model

PROMPT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
MAX_TOKENS = 64
LABEL_SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": ["positive", "negative", "neutral"]}},
    "required": ["label"],
}
REVIEWS = [
    "I loved this blender, it crushes ice in seconds and is easy to clean!",
    "Terrible. It broke after one day and support never answered.",
    "The case arrived on Tuesday. It is blue and fits the phone.",
]


def raw_server(path: Path) -> xllamacpp.Server:
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = 2048
    params.n_parallel = 1
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.fit_params = False
    params.verbosity = 1
    return xllamacpp.Server(params)


def fmt(values: list[float]) -> str:
    return f"median {statistics.median(values):7.1f}  min {min(values):7.1f}  max {max(values):7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side (default 5)")
    args = parser.parse_args()

    path = find_bundled_model()
    print(f"model   {path.name} ({path.stat().st_size / 1e6:.0f} MB)")
    print(f"xllamacpp {xllamacpp.__version__}; {xllamacpp.get_system_info().strip()}")
    print(f"prompt  {PROMPT[0]['content']!r}, max_tokens={MAX_TOKENS}, temperature=0, n_threads=1, n_ctx=2048")
    print()

    t0 = time.perf_counter()
    local = LocalModel(path)
    local.load()
    local_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw = raw_server(path)
    raw_load = time.perf_counter() - t0
    print(f"load    LocalModel {local_load * 1000:.0f} ms   raw Server {raw_load * 1000:.0f} ms")

    request = {"messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "seed": 0, "cache_prompt": True}
    local_tps, raw_tps, raw_engine_tps, local_ms, raw_ms = [], [], [], [], []
    print()
    print("run  side        tokens   wall ms   tok/s (wall)   tok/s (llama.cpp decode)")
    for i in range(1, args.runs + 1):
        t0 = time.perf_counter()
        out = local.complete(PROMPT, max_tokens=MAX_TOKENS, temperature=0)
        wall = time.perf_counter() - t0
        tps = out.usage.output_tokens / wall
        print(f"{i:>3}  LocalModel  {out.usage.output_tokens:>6}  {wall * 1000:8.1f}  {tps:13.1f}")

        t0 = time.perf_counter()
        result = raw.handle_chat_completions(dict(request))
        raw_wall = time.perf_counter() - t0
        n = result["usage"]["completion_tokens"]
        engine = result["timings"]["predicted_per_second"]
        print(f"{i:>3}  raw Server  {n:>6}  {raw_wall * 1000:8.1f}  {n / raw_wall:13.1f}   {engine:10.1f}")
        if i > 1:  # run 1 includes evaluating the prompt; the rest hit the prompt cache
            local_tps.append(tps)
            local_ms.append(wall * 1000)
            raw_tps.append(n / raw_wall)
            raw_ms.append(raw_wall * 1000)
            raw_engine_tps.append(engine)
        if i == 1 and out.text != result["choices"][0]["message"]["content"]:
            print("     (note: the two sides answered differently)")

    if local_tps:
        print()
        print(f"warm runs 2..{args.runs}:")
        print(f"  LocalModel tok/s  {fmt(local_tps)}   wall ms {fmt(local_ms)}")
        print(f"  raw Server tok/s  {fmt(raw_tps)}   wall ms {fmt(raw_ms)}")
        print(f"  llama.cpp decode tok/s (raw) {fmt(raw_engine_tps)}")
        overhead = statistics.median(local_ms) - statistics.median(raw_ms)
        print(f"  adapter overhead (median wall difference): {overhead:+.1f} ms per call")

    print()
    print("constrained label call (json_schema enum, max_tokens=24):")
    latencies = []
    for round_ in range(2):
        for review in REVIEWS:
            messages = [
                {"role": "system", "content": "Classify the sentiment of the product review. Answer in JSON."},
                {"role": "user", "content": review},
            ]
            t0 = time.perf_counter()
            out = local.complete(messages, max_tokens=24, temperature=0, json_schema=LABEL_SCHEMA)
            wall = (time.perf_counter() - t0) * 1000
            latencies.append(wall)
            text = " ".join(out.text.split())
            print(
                f"  round {round_ + 1}  {wall:7.1f} ms  in {out.usage.input_tokens:>3} out {out.usage.output_tokens:>3}"
                f"  {out.finish_reason:<6} {text}  <- {review[:40]!r}"
            )
    print(f"  latency ms {fmt(latencies)}  (round 1 includes first-time prompt evaluation)")

    local.close()
    del raw
    sentiment_end_to_end()


def sentiment_end_to_end() -> None:
    """The `sentiment` pipeline inline, cache bypassed by a fresh namespace per call: the whole request."""
    import asyncio
    import os
    import tempfile
    import uuid

    os.environ.setdefault("FRUGAL_DATA_DIR", tempfile.mkdtemp(prefix="frugal-bench-"))
    os.environ["FRUGAL_SLM_PROVIDER"] = "local"
    from flows.orchestration.flow import run_inline

    async def one(review: str) -> tuple[float, str, str]:
        t0 = time.perf_counter()
        result = await run_inline("sentiment", {"text": review, "namespace": uuid.uuid4().hex})
        return (time.perf_counter() - t0) * 1000, result.output["label"], result.output["route"]

    async def run() -> list[float]:
        await one("warm-up review")
        times = []
        for round_ in range(2):
            for review in REVIEWS:
                ms, label, route = await one(review)
                times.append(ms)
                print(f"  round {round_ + 1}  {ms:7.1f} ms  {label:<8} {route:<5} <- {review[:40]!r}")
        return times

    print()
    print("sentiment pipeline end to end, inline, cache miss (fresh namespace), local model:")
    print(f"  latency ms {fmt(asyncio.run(run()))}")


if __name__ == "__main__":
    main()
