"""OpenAI Chat Completions on the wire: the request as a pydantic model, the response, the
stream's chunks (Server-Sent Events) and errors in OpenAI's error JSON.

Only what a pipeline can honour is accepted; a parameter that would change the answer and
that we cannot apply (tools, n > 1, logit_bias, ...) is a 400 naming it, never silently
dropped. Harmless bookkeeping fields (user, metadata, store, stream_options) are accepted.
"""

from __future__ import annotations

import random
import time
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

#: fields an OpenAI client may send that change nothing we compute
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls", "seed"})
#: fields that would change the answer and that no pipeline honours
REFUSED = frozenset(
    {
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "audio",
        "modalities",
        "prediction",
        "response_format",
        "presence_penalty",
        "frequency_penalty",
        "top_p",
        "stop",
        "reasoning_effort",
        "web_search_options",
    }
)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise WireError(400, f"message content of type '{part.type}' is not supported: send text", param="messages")
            parts.append(part.text)
        return "".join(parts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """The part of OpenAI's chat completion request a pipeline can honour."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int = Field(1, ge=1)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    def refused(self) -> str | None:
        """The first parameter sent that we cannot honour, if any."""
        for name, value in (self.model_extra or {}).items():
            if name in IGNORED or value is None:
                continue
            if name in REFUSED:
                return name
            return name  # unknown to the API as we implement it: say so rather than drop it
        return None


class WireError(Exception):
    """An error answered in OpenAI's error JSON."""

    TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "invalid_request_error",
        413: "invalid_request_error",
        429: "rate_limit_error",
        500: "server_error",
        502: "server_error",
        503: "server_error",
        504: "server_error",
    }

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def body(self) -> bytes:
        error = {
            "message": self.message,
            "type": self.TYPES.get(self.status, "server_error"),
            "param": self.param,
            "code": self.code,
        }
        return orjson.dumps({"error": error})


def completion_id() -> str:
    """24 random hex digits, as before, from Python's generator rather than the system's: a uuid4 read
    the system's random bytes on every response (3.5 us idle; 2.6 % of the loop's CPU on cache hits
    under load, sampled). An id is not a secret; `random` is reseeded in a forked child."""
    return f"chatcmpl-{random.getrandbits(96):024x}"


def usage_of(output: dict[str, Any]) -> dict[str, Any]:
    usage = output.get("usage") or {}
    prompt, completion = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    details = {"cached_tokens": int(usage.get("cached_input_tokens") or 0)}
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
    }


def completion_body(cid: str, model: str, text: str, finish_reason: str, usage: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
            "system_fingerprint": None,
        }
    )


def _chunk(
    cid: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None,
    usage: dict[str, Any] | None = None,
    choices: bool = True,
) -> bytes:
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}] if choices else [],
    }
    if usage is not None:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"


def stream_chunks(
    cid: str, model: str, text: str, finish_reason: str, usage: dict[str, Any] | None, piece_chars: int = 48
) -> list[bytes]:
    """The answer as a stream: a role chunk, the text in pieces, the finish chunk, usage if asked, [DONE].

    The pipeline answers whole (a cached answer, or a model's complete answer checked before it is
    used): it is replayed in pieces of about `piece_chars` characters, cut at spaces."""
    created = int(time.time())
    out = [_chunk(cid, created, model, {"role": "assistant", "content": ""}, None)]
    start = 0
    while start < len(text):
        end = min(len(text), start + piece_chars)
        if end < len(text):
            space = text.rfind(" ", start + 1, end)
            end = space if space > start else end
        out.append(_chunk(cid, created, model, {"content": text[start:end]}, None))
        start = end
    out.append(_chunk(cid, created, model, {}, finish_reason))
    if usage is not None:
        out.append(_chunk(cid, created, model, {}, None, usage=usage, choices=False))
    out.append(b"data: [DONE]\n\n")
    return out


def models_body(names: list[str], owned_by: str = "frugal-flows") -> bytes:
    created = int(time.time())
    return orjson.dumps(
        {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": owned_by} for n in names]}
    )
