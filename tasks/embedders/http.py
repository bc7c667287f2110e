"""Embedders over HTTP: Ollama's `/api/embed` and any OpenAI-compatible `/v1/embeddings`.

Both own a blocking `httpx.Client` (injectable, for tests and shared pools) and translate
every transport error, non-2xx status or malformed body into `EmbedderUnavailable`, once,
here. Keys are sent in headers only and never appear in an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
from pydantic import BaseModel, ValidationError

from .base import EmbedderUnavailable, normalised


class _OllamaEmbedReply(BaseModel):
    embeddings: list[list[float]]


class _OpenAIItem(BaseModel):
    index: int
    embedding: list[float]


class _OpenAIEmbedReply(BaseModel):
    data: list[_OpenAIItem]


def _post(client: httpx.Client, url: str, body: dict[str, Any], source: str, headers: dict[str, str]) -> Any:
    try:
        response = client.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise EmbedderUnavailable(f"{source} at {url} did not answer: {type(exc).__name__}") from exc
    if response.status_code in (401, 403):  # the body may echo part of the key: never repeat it
        raise EmbedderUnavailable(
            f"{source} at {url} refused the API key (HTTP {response.status_code}): set FRUGAL_EMBEDDER_API_KEY or OPENAI_API_KEY"
        )
    if response.status_code >= 400:
        raise EmbedderUnavailable(f"{source} at {url} answered HTTP {response.status_code}: {response.text[:200]}")
    try:
        return response.json()
    except ValueError as exc:
        raise EmbedderUnavailable(f"{source} at {url} answered something that is not JSON") from exc


class OllamaEmbedder:
    """`POST {host}/api/embed {"model", "input": [...]}` -> `{"embeddings": [[...], ...]}`."""

    def __init__(self, host: str, model: str, *, timeout: float = 10.0, client: httpx.Client | None = None) -> None:
        self.host = host.rstrip("/")
        if "://" not in self.host:
            self.host = "http://" + self.host
        self.model = model
        self.id = f"ollama/{model}"
        self._client = client or httpx.Client(timeout=timeout)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = list(texts)
        url = f"{self.host}/api/embed"
        reply = _post(self._client, url, {"model": self.model, "input": items}, "Ollama", {})
        try:
            rows = _OllamaEmbedReply.model_validate(reply).embeddings
        except ValidationError as exc:
            raise EmbedderUnavailable(f"Ollama at {url} answered without 'embeddings'") from exc
        return normalised(rows, len(items), f"Ollama model {self.model}")


class OpenAIEmbedder:
    """`POST {base_url}/embeddings {"model", "input": [...]}` -> `{"data": [{"index", "embedding"}, ...]}`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.id = f"openai/{model}"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(timeout=timeout)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = list(texts)
        url = f"{self.base_url}/embeddings"
        reply = _post(
            self._client,
            url,
            {"model": self.model, "input": items, "encoding_format": "float"},
            "the embeddings API",
            self._headers,
        )
        try:
            data = sorted(_OpenAIEmbedReply.model_validate(reply).data, key=lambda item: item.index)
        except ValidationError as exc:
            raise EmbedderUnavailable(f"the embeddings API at {url} answered without 'data'") from exc
        return normalised([item.embedding for item in data], len(items), f"embeddings model {self.model}")
