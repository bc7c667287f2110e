"""Embedders behind one seam, chosen by settings (`FRUGAL_EMBEDDER=bundled|ollama|openai`).

    embedder = configured_embedder()          # loaded once per process, then reused
    vectors = embedder.embed(["a prompt"])    # (1, dim) float32, unit length
    vectors = remembered(embedder, ["a prompt"])   # the same, a recently embedded text not embedded again
    vectors = await remembered_async(embedder, ["a prompt"])   # from the event loop: calls shared with
                                                               # other requests (`batching`)

`bundled_embedder()` is the in-process one every fallback lands on. Loading is blocking
(the bundled weights take ~1 s): async callers run these in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading

from tasks.core.settings import EmbedderSettings, get_settings

from .base import Embedder, EmbedderUnavailable, normalised
from .batching import Batcher, batcher_for
from .bundled import BUNDLED_ID, BundledEmbedder
from .http import OllamaEmbedder, OpenAIEmbedder
from .memo import forget_remembered, remembered, remembered_async

__all__ = [
    "BUNDLED_ID",
    "Batcher",
    "DEFAULT_MODELS",
    "BundledEmbedder",
    "Embedder",
    "EmbedderUnavailable",
    "OllamaEmbedder",
    "OpenAIEmbedder",
    "batcher_for",
    "bundled_embedder",
    "bundled_embedder_async",
    "configured_embedder",
    "make_embedder",
    "normalised",
    "forget_remembered",
    "remembered",
    "remembered_async",
]

DEFAULT_MODELS = {"ollama": "nomic-embed-text", "openai": "text-embedding-3-small"}

_lock = threading.Lock()
_loaded: dict[tuple[object, ...], Embedder] = {}


def make_embedder(config: EmbedderSettings) -> Embedder:
    """A new embedder for `config` (the bundled one shares the process's single copy)."""
    if config.kind == "bundled":
        return bundled_embedder()
    settings = get_settings()
    model = config.model or DEFAULT_MODELS[config.kind]
    if config.kind == "ollama":
        host = config.host or next(iter(settings.slm.ollama_hosts()), "http://127.0.0.1:11434")
        return OllamaEmbedder(host, model, timeout=config.timeout)
    base_url = config.base_url or settings.llm.openai_base_url or "https://api.openai.com/v1"
    key = config.api_key or settings.llm.openai_api_key
    return OpenAIEmbedder(base_url, model, key.get_secret_value() if key else None, timeout=config.timeout)


def bundled_embedder() -> Embedder:
    """The in-process USE multilingual v3, weights loaded on the first call of the process only."""
    with _lock:
        embedder = _loaded.get(("bundled",))
        if embedder is None:
            embedder = _loaded[("bundled",)] = BundledEmbedder(runtime=get_settings().embedder.runtime).load()
        return embedder


async def bundled_embedder_async() -> Embedder:
    """`bundled_embedder()` from the event loop: the first load (~1 s) runs on a worker thread."""
    embedder = _loaded.get(("bundled",))
    return embedder if embedder is not None else await asyncio.to_thread(bundled_embedder)


def configured_embedder(config: EmbedderSettings | None = None) -> Embedder:
    """The embedder the settings name, made once per distinct configuration and process."""
    config = config or get_settings().embedder
    if config.kind == "bundled":
        return bundled_embedder()
    key = (config.kind, config.model, config.host, config.base_url, config.api_key, config.timeout)
    with _lock:
        embedder = _loaded.get(key)
        if embedder is None:
            embedder = _loaded[key] = make_embedder(config)
        return embedder
