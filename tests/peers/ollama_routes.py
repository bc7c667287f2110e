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

from .wire import count_tokens, error_response, logprob_entries, pieces, prompt_tokens, rfc3339_now, truncate

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


def frame(model: str | None, kind: str, text: str, **extra: Any) -> dict[str, Any]:
    """One NDJSON frame of a chat or generate answer (or the whole answer, with ``done``)."""
    head: dict[str, Any] = {"model": model, "created_at": rfc3339_now()}
    if kind == "chat":
        return {**head, "message": {"role": "assistant", "content": text}, **extra}
    return {**head, "response": text, **extra}


def final_fields(body: dict[str, Any], text: str, cut: bool, started_ns: int, kind: str) -> dict[str, Any]:
    """The last frame's ``done`` fields: reason, counts and durations (nanoseconds)."""
    n_prompt, n_eval = prompt_tokens(body), count_tokens(text)
    load, prompt_eval, evaluation = 1_000_000, 250_000 * max(n_prompt, 1), 500_000 * max(n_eval, 1)
    final: dict[str, Any] = {"done": True, "done_reason": "length" if cut else "stop"}
    if kind == "generate":
        final["context"] = list(range(1, n_prompt + n_eval + 1))
    final.update(
        total_duration=max(time.perf_counter_ns() - started_ns, load + prompt_eval + evaluation),
        load_duration=load,
        prompt_eval_count=n_prompt,
        prompt_eval_duration=prompt_eval,
        eval_count=n_eval,
        eval_duration=evaluation,
    )
    return final


def answer_text(body: dict[str, Any], answer: str) -> tuple[str, bool]:
    """The answer cut at ``options.num_predict`` words: (text, cut)."""
    options = body.get("options") or {}
    return truncate(answer, options.get("num_predict") if isinstance(options, dict) else None)


def logprobs_of(body: dict[str, Any], text: str, chosen: float) -> dict[str, Any]:
    """``{"logprobs": [...]}`` when the request asked for them (``logprobs: true``; Ollama 0.12.11+), else {}."""
    if not body.get("logprobs"):
        return {}
    return {"logprobs": logprob_entries(text, chosen, int(body.get("top_logprobs") or 0))}


def ndjson(
    model: str | None, kind: str, text: str, final: dict[str, Any], body: dict[str, Any] | None = None, chosen: float = 0.0
) -> list[bytes]:
    """A streamed answer's lines: its pieces (with their log-probabilities when asked), then the final frame."""
    lines = [
        (json.dumps(frame(model, kind, piece, done=False, **logprobs_of(body or {}, piece, chosen))) + "\n").encode()
        for piece in pieces(text)
    ]
    return [*lines, (json.dumps(frame(model, kind, "", **final)) + "\n").encode()]


async def _complete(peer: ModelPeer, request: Request, kind: str) -> Response:
    started = time.perf_counter_ns()
    body, early = await peer.admit(request, "ollama")
    model, early = (None, early) if early is not None else _check_model(peer, body)
    if early is not None:
        return early
    key = "messages" if kind == "chat" else "prompt"
    if not body.get(key):  # Ollama only loads the model when there is nothing to answer
        return JSONResponse(frame(model, kind, "", done=True, done_reason="load"))
    answer, early = await peer.answer("ollama", body)
    if early is not None:
        return early
    text, cut = answer_text(body, answer)
    final = final_fields(body, text, cut, started, kind)
    if body.get("stream", True) is False:
        return JSONResponse(frame(model, kind, text, **final, **logprobs_of(body, text, peer.token_logprob)))

    async def lines() -> AsyncIterator[bytes]:
        for line in ndjson(model, kind, text, final, body, peer.token_logprob):
            yield line

    return StreamingResponse(lines(), media_type="application/x-ndjson")


ROUTES = [
    ("/api/version", version, ["GET"]),
    ("/api/tags", tags, ["GET"]),
    ("/api/show", show, ["POST"]),
    ("/api/chat", chat, ["POST"]),
    ("/api/generate", generate, ["POST"]),
]
