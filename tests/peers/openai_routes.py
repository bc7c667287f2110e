"""OpenAI's chat completions API: POST /v1/chat/completions (JSON or SSE), GET /v1/models."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .wire import count_tokens, error_response, logprob_entries, pieces, prompt_tokens, rand_id, request_id_headers, truncate

if TYPE_CHECKING:
    from .model_peer import ModelPeer

_FINGERPRINT = "fp_0e1f2a3b4c"


def _error(status: int, message: str, **fields: Any) -> Response:
    return error_response("openai", status, message, **fields)


def _validate(body: Any) -> Response | None:
    if not isinstance(body, dict):
        return _error(
            400,
            (
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                "sent was not valid JSON.)"
            ),
        )
    if not body.get("model"):
        return _error(400, "you must provide a model parameter")
    messages = body.get("messages")
    if messages is None:
        return _error(400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        return _error(
            400,
            ("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead."),
            param="messages",
            code="empty_array",
        )
    return None


def usage_of(n_prompt: int, n_completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": n_prompt,
        "completion_tokens": n_completion,
        "total_tokens": n_prompt + n_completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def answer_choice(body: dict[str, Any], answer: str) -> tuple[str, str]:
    """One choice: the answer cut at the request's token limit, and its finish reason."""
    text, cut = truncate(answer, body.get("max_completion_tokens") or body.get("max_tokens"))
    return text, "length" if cut else "stop"


def logprobs_of(body: dict[str, Any], text: str, chosen: float) -> dict[str, Any] | None:
    """A choice's ``logprobs`` object when the request asked for them (``logprobs: true``), else None."""
    if not body.get("logprobs"):
        return None
    return {"content": logprob_entries(text, chosen, int(body.get("top_logprobs") or 0)), "refusal": None}


def completion(
    head: dict[str, Any],
    choices: list[tuple[str, str]],
    usage: dict[str, Any],
    logprobs: list[dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """A whole (not streamed) chat completion object."""
    return {
        **head,
        "object": "chat.completion",
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": logprobs[i] if logprobs else None,
                "finish_reason": reason,
            }
            for i, (text, reason) in enumerate(choices)
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }


def head_of(body: dict[str, Any], served_model: str | None = None) -> dict[str, Any]:
    """An answer's id, time and model: the one asked for, or the one the server says it serves
    (llama.cpp's server names its model file)."""
    return {"id": rand_id("chatcmpl-", 29), "created": int(time.time()), "model": served_model or body["model"]}


async def chat_completions(peer: ModelPeer, request: Request) -> Response:
    body, early = await peer.admit(request, "openai")
    early = early or _validate(body)
    if early is None and body.get("top_logprobs") is not None and not body.get("logprobs"):
        early = _error(400, "Invalid value for 'top_logprobs': 'logprobs' must be set to true.", param="top_logprobs")
    if early is not None:
        return early
    choices: list[tuple[str, str]] = []  # (text, finish_reason), one per choice (``n``)
    for _ in range(body.get("n") or 1):
        answer, early = await peer.answer("openai", body)
        if early is not None:
            return early
        choices.append(answer_choice(body, answer))
    n_prompt = prompt_tokens(body)
    cached = peer.cache.openai(body) if peer.prompt_cache else 0
    usage = usage_of(n_prompt, sum(count_tokens(text) for text, _ in choices), cached)
    head = head_of(body, peer.served_model)
    headers = request_id_headers("openai")
    chosen = peer.token_logprob
    if not body.get("stream"):
        logprobs = [logprobs_of(body, text, chosen) for text, _ in choices]
        return JSONResponse(completion(head, choices, usage, logprobs), headers=headers)

    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(chunk_choices: list[dict[str, Any]], usage_value: Any = None) -> bytes:
        data = {
            **head,
            "object": "chat.completion.chunk",
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
            "choices": chunk_choices,
        }
        if include_usage:
            data["usage"] = usage_value
        return f"data: {json.dumps(data)}\n\n".encode()

    def choice(i: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        piece = delta.get("content")
        logprobs = logprobs_of(body, piece, chosen) if piece and finish_reason is None else None
        return {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}

    async def events() -> AsyncIterator[bytes]:
        for i, (text, reason) in enumerate(choices):
            yield chunk([choice(i, {"role": "assistant", "content": "", "refusal": None})])
            for piece in pieces(text):
                yield chunk([choice(i, {"content": piece})])
            yield chunk([choice(i, {}, reason)])
        if include_usage:
            yield chunk([], usage)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def list_models(peer: ModelPeer, request: Request) -> Response:
    _, early = await peer.admit(request, "openai")
    if early is not None:
        return early
    data = [{"id": m, "object": "model", "created": 1721172741, "owned_by": "system"} for m in peer.openai_models]
    return JSONResponse({"object": "list", "data": data}, headers=request_id_headers("openai"))


ROUTES = [
    ("/v1/chat/completions", chat_completions, ["POST"]),
]
