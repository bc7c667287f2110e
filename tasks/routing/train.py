"""Training and calibrating a router, deterministically.

`train` picks the regularisation and whether the cheap features join the embedding by
k-fold cross-validation inside the training prompts (folds by `group`, so near-duplicates
of one template never sit on both sides), sets the threshold on the out-of-fold
probabilities to meet the target, and fits the final classifier on every training prompt.
The same prompts, embedder and options give the same file.

`calibrate` re-chooses the threshold of a trained router on other labelled prompts
(e.g. a held-out split) and keeps that data's whole trade-off curve.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from tasks.core.errors import InputError
from tasks.embedders import Embedder

from .curve import curve, pick
from .features import CHEAP_FEATURES, cheap_matrix
from .labels import Example, data_hash
from .logistic import fit
from .router_file import FORMAT, Examples, Head, RouterDoc, pack_vectors

C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
DEFAULT_TARGET = {"max_risk": 0.05}
BATCH = 32


def embed_all(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    parts = [embedder.embed(list(texts[i : i + BATCH])) for i in range(0, len(texts), BATCH)]
    return np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def folds_by_group(examples: Sequence[Example], k: int) -> np.ndarray:
    """Fold number of each example: groups (in first-seen order) dealt round-robin, so each group is in one fold."""
    groups: dict[str, int] = {}
    for index, example in enumerate(examples):
        group = str(example.meta.get("group") or f"#{index}")
        groups.setdefault(group, len(groups) % k)
    return np.asarray([groups[str(e.meta.get("group") or f"#{i}")] for i, e in enumerate(examples)])


def _design(vectors: np.ndarray, cheap: np.ndarray | None, rows: np.ndarray, scale: tuple[np.ndarray, np.ndarray] | None):
    if cheap is None or scale is None:
        return vectors[rows].astype(np.float64)
    return np.hstack([vectors[rows].astype(np.float64), (cheap[rows] - scale[0]) / scale[1]])


def _scale(cheap: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = cheap[rows].mean(axis=0)
    std = cheap[rows].std(axis=0)
    return mean, np.where(std > 1e-9, std, 1.0)


def out_of_fold(vectors: np.ndarray, cheap: np.ndarray | None, y: np.ndarray, folds: np.ndarray, c: float) -> np.ndarray:
    probabilities = np.zeros(len(y))
    for fold in np.unique(folds):
        fit_rows, held = np.where(folds != fold)[0], np.where(folds == fold)[0]
        scale = _scale(cheap, fit_rows) if cheap is not None else None
        model = fit(_design(vectors, cheap, fit_rows, scale), y[fit_rows], c)
        probabilities[held] = model.probability(_design(vectors, cheap, held, scale))
    return probabilities


def train(
    examples: Sequence[Example],
    embedder: Embedder,
    *,
    target: dict[str, float] | None = None,
    k: int = 5,
    grid: Sequence[float] = C_GRID,
    files: Sequence[str] = (),
) -> RouterDoc:
    """A router file with one head for `embedder`, trained on `examples`."""
    target = dict(target or DEFAULT_TARGET)
    labels = {e.label for e in examples}
    if labels != {"small", "large"}:
        raise InputError(f"training needs prompts labelled both small and large; got {sorted(labels) or 'none'}")
    texts = [e.prompt for e in examples]
    y = np.asarray([e.large for e in examples], dtype=np.float64)
    vectors = embed_all(embedder, texts)
    cheap_all = cheap_matrix(texts)
    groups = {str(e.meta.get("group") or f"#{i}") for i, e in enumerate(examples)}
    folds = folds_by_group(examples, max(2, min(k, len(groups))))
    trials = []
    for use_cheap in (False, True):
        for c in grid:
            p = out_of_fold(vectors, cheap_all if use_cheap else None, y, folds, c)
            accuracy = float(((p >= 0.5) == (y == 1)).mean())
            trials.append({"cheap_features": use_cheap, "c": c, "accuracy": round(accuracy, 4), "_p": p})
    best = max(trials, key=lambda t: (t["accuracy"], not t["cheap_features"], -float(t["c"])))  # type: ignore[arg-type]
    use_cheap, c = bool(best["cheap_features"]), float(best["c"])  # type: ignore[arg-type]
    points = curve(best["_p"], y == 1)  # type: ignore[arg-type]
    chosen = pick(points, **target)
    rows = np.arange(len(examples))
    scale = _scale(cheap_all, rows) if use_cheap else None
    model = fit(_design(vectors, cheap_all if use_cheap else None, rows, scale), y, c)
    digest = data_hash(examples)
    head = Head(
        embedder=embedder.id,
        dim=int(vectors.shape[1]),
        cheap_features=use_cheap,
        feature_names=list(CHEAP_FEATURES) if use_cheap else [],
        feature_mean=[float(v) for v in scale[0]] if scale else [],
        feature_std=[float(v) for v in scale[1]] if scale else [],
        c=c,
        weights=[float(w) for w in model.weights],
        bias=model.bias,
        threshold=chosen.threshold,
        target=target,
        calibrated_on=f"training prompts, {int(folds.max()) + 1}-fold cross-validation by group (out-of-fold probabilities)",
        curve=points,
        cross_validation={"folds": int(folds.max()) + 1, "trials": [{k: v for k, v in t.items() if k != "_p"} for t in trials]},
        examples=Examples(text=[t[:160] for t in texts], label=[e.label for e in examples], vectors=pack_vectors(vectors)),
    )
    return RouterDoc(
        format=FORMAT,
        version=_version(digest, head),
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        data={
            "sha256": digest,
            "files": list(files),
            "prompts": len(examples),
            "large": int(y.sum()),
            "small": int(len(y) - y.sum()),
        },
        heads=[head],
    )


def _version(digest: str, head: Head) -> str:
    weights = hashlib.sha256(np.asarray(head.weights).tobytes() + str(head.threshold).encode()).hexdigest()
    return f"{digest[:8]}-{weights[:8]}"


def calibrate(
    doc: RouterDoc, examples: Sequence[Example], embedder: Embedder, target: dict[str, float], source: str
) -> tuple[RouterDoc, Head]:
    """A copy of `doc` whose head for `embedder` has the threshold meeting `target` on `examples`."""
    head = doc.head(embedder.id)
    if head is None:
        raise InputError(f"the router has no head for embedder {embedder.id}; train one with that embedder first")
    if not any(e.large for e in examples):
        raise InputError("calibration needs prompts labelled large")
    texts = [e.prompt for e in examples]
    p = head.probability(embed_all(embedder, texts), texts)
    points = curve(p, np.asarray([e.large for e in examples]))
    chosen = pick(points, **target)
    new_head = head.model_copy(
        update={"threshold": chosen.threshold, "target": dict(target), "calibrated_on": source, "curve": points}
    )
    heads = [new_head if h.embedder == embedder.id else h for h in doc.heads]
    updated = doc.model_copy(update={"heads": heads, "version": _version(str(doc.data.get("sha256", "")), new_head)})
    return updated, new_head
