"""Anthropic's messages API: POST /v1/messages (JSON or SSE), GET /v1/models.

Requests must carry an ``anthropic-version`` header and ``model``, ``max_tokens``
and ``messages`` in the body, as the real API requires.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .wire import count_tokens, error_response, pieces, prompt_tokens, rand_id, request_id_headers, truncate

if TYPE_CHECKING:
    from .model_peer import ModelPeer


def _error(status: int, message: str) -> Response:
    return error_response("anthropic", status, message)


def _validate(request: Request, body: Any) -> Response | None:
    if "anthropic-version" not in request.headers:
        return _error(400, "anthropic-version: header is required")
    if not isinstance(body, dict):
        return _error(400, "There was an error parsing the body of your request. Please make sure it is valid JSON.")
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            return _error(400, f"{field}: Field required")
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        return _error(400, "max_tokens: Input should be greater than or equal to 1")
    if not isinstance(body["messages"], list) or not body["messages"]:
        return _error(400, "messages: at least one message is required")
    return None


def _usage(n_input: int, n_output: int, read: int = 0, write: int = 0) -> dict[str, Any]:
    """``input_tokens`` is the prompt minus what was read from or written to the cache, as the API reports it."""
    return {
        "input_tokens": n_input - read - write,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": n_output,
        "service_tier": "standard",
    }


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def messages(peer: ModelPeer, request: Request) -> Response:
    body, early = await peer.admit(request, "anthropic")
    early = early or _validate(request, body)
    if early is not None:
        return early
    answer, early = await peer.answer("anthropic", body)
    if early is not None:
        return early
    text, cut = truncate(answer, body["max_tokens"])
    stop_reason = "max_tokens" if cut else "end_turn"
    n_input, n_output = prompt_tokens(body), count_tokens(text)
    read, write = peer.cache.anthropic(body, peer.cache_min_tokens) if peer.prompt_cache else (0, 0)
    message: dict[str, Any] = {
        "id": rand_id("msg_01", 22),
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(n_input, n_output, read, write),
    }
    headers = request_id_headers("anthropic")
    if not body.get("stream"):
        return JSONResponse(message, headers=headers)

    async def events() -> AsyncIterator[bytes]:
        start = {**message, "content": [], "stop_reason": None, "usage": _usage(n_input, 1, read, write)}
        yield _sse("message_start", {"type": "message_start", "message": start})
        yield _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        yield _sse("ping", {"type": "ping"})
        for piece in pieces(text):
            yield _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": n_output},
            },
        )
        yield _sse("message_stop", {"type": "message_stop"})

    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def list_models(peer: ModelPeer, request: Request) -> Response:
    _, early = await peer.admit(request, "anthropic")
    if early is not None:
        return early
    data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in peer.anthropic_models]
    return JSONResponse(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        },
        headers=request_id_headers("anthropic"),
    )


ROUTES = [
    ("/v1/messages", messages, ["POST"]),
]
