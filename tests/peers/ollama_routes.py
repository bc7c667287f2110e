"""Ollama's HTTP API: /api/version, /api/tags, /api/show, /api/chat, /api/generate.

Chat and generate stream NDJSON unless the body says ``"stream": false`` (as Ollama
does). Durations are nanoseconds; counts are whitespace-split words.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .wire import count_tokens, error_response, pieces, prompt_tokens, rfc3339_now, truncate

if TYPE_CHECKING:
    from .model_peer import ModelPeer

_MODIFIED_AT = "2025-01-01T00:00:00.000000000Z"


def _details() -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "1.2B",
        "quantization_level": "Q8_0",
    }


def _error(status: int, message: str) -> Response:
    return error_response("ollama", status, message)


def _check_model(peer: ModelPeer, body: Any) -> tuple[str, Response | None]:
    if not isinstance(body, dict):
        return "", _error(400, "invalid character in request body: expected a JSON object")
    model = body.get("model") or body.get("name")
    if not isinstance(model, str) or not model:
        return "", _error(400, "model is required")
    if not peer.knows_ollama_model(model):
        return model, _error(404, f"model '{model}' not found, try pulling it first")
    return model, None


async def version(peer: ModelPeer, request: Request) -> Response:
    _, early = await peer.admit(request, "ollama")
    return early or JSONResponse({"version": peer.ollama_version})


async def tags(peer: ModelPeer, request: Request) -> Response:
    _, early = await peer.admit(request, "ollama")
    if early is not None:
        return early
    models = [
        {
            "name": name,
            "model": name,
            "modified_at": _MODIFIED_AT,
            "size": 1_321_098_329,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": _details(),
        }
        for name in peer.ollama_models
    ]
    return JSONResponse({"models": models})


async def show(peer: ModelPeer, request: Request) -> Response:
    body, early = await peer.admit(request, "ollama")
    model, early = (None, early) if early is not None else _check_model(peer, body)
    if early is not None:
        return early
    return JSONResponse(
        {
            "modelfile": f"FROM {model}\n",
            "parameters": 'stop "<|eot_id|>"',
            "template": "{{ .Prompt }}",
            "details": _details(),
            "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
            "capabilities": ["completion"],
            "modified_at": _MODIFIED_AT,
        }
    )


async def chat(peer: ModelPeer, request: Request) -> Response:
    return await _complete(peer, request, "chat")


async def generate(peer: ModelPeer, request: Request) -> Response:
    return await _complete(peer, request, "generate")


async def _complete(peer: ModelPeer, request: Request, kind: str) -> Response:
    started = time.perf_counter_ns()
    body, early = await peer.admit(request, "ollama")
    model, early = (None, early) if early is not None else _check_model(peer, body)
    if early is not None:
        return early
    key = "messages" if kind == "chat" else "prompt"

    def frame(text: str, **extra: Any) -> dict[str, Any]:
        head: dict[str, Any] = {"model": model, "created_at": rfc3339_now()}
        if kind == "chat":
            return {**head, "message": {"role": "assistant", "content": text}, **extra}
        return {**head, "response": text, **extra}

    if not body.get(key):  # Ollama only loads the model when there is nothing to answer
        return JSONResponse(frame("", done=True, done_reason="load"))
    answer, early = await peer.answer("ollama", body)
    if early is not None:
        return early
    options = body.get("options") or {}
    text, cut = truncate(answer, options.get("num_predict") if isinstance(options, dict) else None)
    n_prompt, n_eval = prompt_tokens(body), count_tokens(text)
    load, prompt_eval, evaluation = 1_000_000, 250_000 * max(n_prompt, 1), 500_000 * max(n_eval, 1)
    final: dict[str, Any] = {"done": True, "done_reason": "length" if cut else "stop"}
    if kind == "generate":
        final["context"] = list(range(1, n_prompt + n_eval + 1))
    final.update(
        total_duration=max(time.perf_counter_ns() - started, load + prompt_eval + evaluation),
        load_duration=load,
        prompt_eval_count=n_prompt,
        prompt_eval_duration=prompt_eval,
        eval_count=n_eval,
        eval_duration=evaluation,
    )
    if body.get("stream", True) is False:
        return JSONResponse(frame(text, **final))

    async def lines() -> AsyncIterator[bytes]:
        for piece in pieces(text):
            yield (json.dumps(frame(piece, done=False)) + "\n").encode()
        yield (json.dumps(frame("", **final)) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


ROUTES = [
    ("/api/version", version, ["GET"]),
    ("/api/tags", tags, ["GET"]),
    ("/api/show", show, ["POST"]),
    ("/api/chat", chat, ["POST"]),
    ("/api/generate", generate, ["POST"]),
]
