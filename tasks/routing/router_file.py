"""The router file: a versioned JSON document holding everything a trained router needs.

    {"format": 1, "version": "20261203T060000Z-3f2a9c1b", "created_at": ..., "data": {sha256, files, counts},
     "heads": [{"embedder": "bundled/use-multilingual-v3", "cheap_features": false, "c": 3.0,
                "weights": [...], "bias": ..., "threshold": 0.31, "target": {"max_risk": 0.05},
                "calibrated_on": "...", "curve": [{threshold, risk, large_share, accuracy}, ...],
                "examples": {"text": [...], "label": [...], "vectors": "<base64 float16>"}}]}

One head per embedder it was trained with, so a router can fall back to the bundled
embedder when a server embedder is down. `load_router` re-reads a file only when its
mtime or size changed, so a worker picks up a new version without a restart; writers
replace the file atomically. Requests ask with `within=RECHECK_SECONDS`: the file is
looked at (where it is, and a stat) at most once a second, not on every request (two
syscalls and the settings' paths: 10 us a miss on an idle core, 1.9 % of the gateway's
event-loop CPU on all-new prompts at concurrency 32, sampled). A missing, unreadable or
malformed file is a `RouterFileError` naming it.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.core.errors import ConfigError
from tasks.core.settings import get_settings

from .curve import CurvePoint
from .features import CHEAP_FEATURES, cheap_matrix
from .logistic import Logistic

FORMAT = 1
PACKAGED = Path(__file__).with_name("default_router.json")


class RouterFileError(ConfigError):
    """A router file is missing, unreadable or malformed."""


class Examples(BaseModel):
    """The labelled training prompts, kept for the decision's reason (nearest examples)."""

    model_config = ConfigDict(extra="forbid")

    text: list[str]
    label: list[str]
    vectors: str = Field(description="base64 of a float16 (n, dim) array, row-major")


class Head(BaseModel):
    """A classifier over one embedder's vectors (plus cheap features when `cheap_features`)."""

    model_config = ConfigDict(extra="forbid")

    embedder: str
    dim: int
    cheap_features: bool = False
    feature_names: list[str] = Field(default_factory=list)
    feature_mean: list[float] = Field(default_factory=list)
    feature_std: list[float] = Field(default_factory=list)
    c: float
    weights: list[float]
    bias: float
    threshold: float = Field(ge=0.0, le=1.0)
    target: dict[str, float] = Field(default_factory=dict)
    calibrated_on: str = ""
    curve: list[CurvePoint] = Field(default_factory=list)
    cross_validation: dict[str, Any] = Field(default_factory=dict)
    examples: Examples

    @cached_property
    def model(self) -> Logistic:
        return Logistic(weights=np.asarray(self.weights, dtype=np.float64), bias=self.bias)

    @cached_property
    def example_vectors(self) -> np.ndarray:
        raw = np.frombuffer(base64.b64decode(self.examples.vectors), dtype=np.float16)
        return raw.reshape(len(self.examples.text), self.dim).astype(np.float32)

    def features(self, vectors: np.ndarray, texts: list[str]) -> np.ndarray:
        """The classifier's input rows for `texts` embedded as `vectors`."""
        if not self.cheap_features:
            return np.asarray(vectors, dtype=np.float64)
        cheap = (cheap_matrix(texts) - np.asarray(self.feature_mean)) / np.asarray(self.feature_std)
        return np.hstack([np.asarray(vectors, dtype=np.float64), cheap])

    def probability(self, vectors: np.ndarray, texts: list[str]) -> np.ndarray:
        return self.model.probability(self.features(vectors, texts))


def pack_vectors(vectors: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype=np.float16).tobytes()).decode("ascii")


class RouterDoc(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")

    format: int
    version: str
    created_at: str
    data: dict[str, object] = Field(default_factory=dict)
    heads: list[Head] = Field(min_length=1)

    def head(self, embedder: str) -> Head | None:
        return next((h for h in self.heads if h.embedder == embedder), None)

    def check(self) -> None:
        for head in self.heads:
            expected = head.dim + (len(CHEAP_FEATURES) if head.cheap_features else 0)
            if len(head.weights) != expected:
                raise ValueError(f"head {head.embedder} has {len(head.weights)} weights, expected {expected}")
            if len(head.examples.text) != len(head.examples.label):
                raise ValueError(f"head {head.embedder} has examples without labels")
            if head.example_vectors.shape[0] != len(head.examples.text):
                raise ValueError(f"head {head.embedder} has {head.example_vectors.shape[0]} example vectors")


@dataclass(frozen=True)
class LoadedRouter:
    path: Path
    doc: RouterDoc


_cache: dict[Path, tuple[tuple[int, int], LoadedRouter]] = {}
_cache_lock = threading.Lock()
RECHECK_SECONDS = 1.0  # how stale a request's router may be: a new version is used within a second
_recent: dict[tuple[object, ...], tuple[float, LoadedRouter]] = {}  # (asked, where the settings point) -> (looked at, router)


def default_router_path() -> Path:
    """FRUGAL_ROUTER_FILE, else FRUGAL_DATA_DIR/router.json if it exists, else the packaged router."""
    settings = get_settings()
    if settings.router.file is not None:
        return settings.router.file
    trained = settings.engine.data_dir / "router.json"
    return trained if trained.exists() else PACKAGED


def parse_router(path: Path, raw: bytes) -> RouterDoc:
    try:
        doc = RouterDoc.model_validate_json(raw)
        if doc.format != FORMAT:
            raise ValueError(f"format {doc.format}; this version reads format {FORMAT}")
        doc.check()
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "the document"
        raise RouterFileError(
            f"router file {path} is not a valid router ({where}: {error['msg']}); retrain it with `frugal router train`"
        ) from exc
    except ValueError as exc:
        raise RouterFileError(f"router file {path} is not a valid router ({exc}); retrain it with `frugal router train`") from exc
    return doc


def load_router(path: Path | str | None = None, *, within: float = 0.0) -> LoadedRouter:
    """The router in `path` (default `default_router_path()`), re-read only when the file changed;
    with `within`, the file is not looked at again for that many seconds after it was."""
    if within <= 0:
        return _load(path)
    settings = get_settings()
    asked = (path, settings.router.file, settings.engine.data_dir)
    now = time.monotonic()
    seen = _recent.get(asked)
    if seen is not None and now - seen[0] < within:
        return seen[1]
    loaded = _load(path)
    if len(_recent) >= 64:  # a few routers per process; forget them all rather than grow
        _recent.clear()
    _recent[asked] = (now, loaded)
    return loaded


def _load(path: Path | str | None) -> LoadedRouter:
    file = Path(path) if path is not None else default_router_path()
    try:
        stat = os.stat(file)
    except OSError as exc:
        raise RouterFileError(
            f"router file {file} cannot be read ({exc.strerror}); set FRUGAL_ROUTER_FILE or run `frugal router train`"
        ) from exc
    stamp = (stat.st_mtime_ns, stat.st_size)
    hit = _cache.get(file)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    with _cache_lock:
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise RouterFileError(f"router file {file} cannot be read ({exc.strerror})") from exc
        loaded = LoadedRouter(path=file, doc=parse_router(file, raw))
        _cache[file] = (stamp, loaded)
        return loaded


def save_router(doc: RouterDoc, path: Path) -> Path:
    """Write `doc` to `path` atomically (a reader sees the old file or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(doc.model_dump_json(indent=1), encoding="utf-8")
    os.replace(temporary, path)
    return path
