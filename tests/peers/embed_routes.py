"""Embedding endpoints: Ollama's /api/embed and OpenAI's /v1/embeddings.

Vectors are deterministic: each word hashed into one of `DIM` buckets with a sign, so
texts sharing words are close and the same text always gets the same vector.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .wire import count_tokens, error_response

if TYPE_CHECKING:
    from .model_peer import ModelPeer

DIM = 64


def vector(text: str) -> list[float]:
    v = [0.0] * DIM
    for word in text.lower().split():
        digest = hashlib.sha256(word.encode()).digest()
        v[digest[0] % DIM] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


def _inputs(body: Any) -> list[str] | None:
    raw = body.get("input") if isinstance(body, dict) else None
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return raw
    return None


async def ollama_embed(peer: ModelPeer, request: Request) -> Response:
    body, early = await peer.admit(request, "ollama")
    if early is not None:
        return early
    texts = _inputs(body)
    model = body.get("model") if isinstance(body, dict) else None
    if not model or texts is None:
        return error_response("ollama", 400, "model and input are required")
    started = time.monotonic_ns()
    return JSONResponse(
        {
            "model": model,
            "embeddings": [vector(t) for t in texts],
            "total_duration": time.monotonic_ns() - started,
            "load_duration": 0,
            "prompt_eval_count": sum(count_tokens(t) for t in texts),
        }
    )


async def openai_embeddings(peer: ModelPeer, request: Request) -> Response:
    body, early = await peer.admit(request, "openai")
    if early is not None:
        return early
    texts = _inputs(body)
    model = body.get("model") if isinstance(body, dict) else None
    if not model or texts is None:
        return error_response("openai", 400, "'model' and 'input' are required")
    tokens = sum(count_tokens(t) for t in texts)
    return JSONResponse(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode(vector(t), body)} for i, t in enumerate(texts)],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def encode(values: list[float], body: dict[str, Any]) -> list[float] | str:
    """Floats, or base64 of little-endian float32 when the body asks `encoding_format: base64` (the openai client does)."""
    if body.get("encoding_format") == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
    return values


ROUTES = [
    ("/api/embed", ollama_embed, ["POST"]),
    ("/v1/embeddings", openai_embeddings, ["POST"]),
]
