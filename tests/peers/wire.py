"""Helpers shared by the peer's route modules: tokens, ids, error bodies, canned answers.

Token counts are deterministic: one token per whitespace-separated word.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

PROTOCOLS = ("ollama", "openai", "anthropic")
_ALPHABET = string.ascii_letters + string.digits


# -- tokens -------------------------------------------------------------------------


def pieces(text: str) -> list[str]:
    """Split ``text`` into stream chunks, one word each; ``"".join(pieces(t)) == t``."""
    parts = re.findall(r"\s*\S+", text)
    tail = text[len("".join(parts)) :]
    if tail:
        parts = [*parts[:-1], parts[-1] + tail] if parts else [tail]
    return parts


def count_tokens(text: str) -> int:
    return len(text.split())


def truncate(text: str, limit: Any) -> tuple[str, bool]:
    """Cut ``text`` to ``limit`` tokens; returns (text, was_cut). Non-positive limits are ignored."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        return text, False
    parts = pieces(text)
    if count_tokens(text) <= limit:
        return text, False
    return "".join(parts[:limit]).rstrip(), True


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of parts carrying ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def prompt_texts(body: dict[str, Any]) -> list[str]:
    """Every prompt text of a request: system, messages, prompt (whichever exist)."""
    texts = [content_text(body.get("system")), content_text(body.get("prompt"))]
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            texts.append(content_text(message.get("content")))
    return [t for t in texts if t]


def prompt_tokens(body: dict[str, Any]) -> int:
    return sum(count_tokens(t) for t in prompt_texts(body))


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return content_text(body.get("prompt"))


def logprob_entries(text: str, chosen: float, top: int) -> list[dict[str, Any]]:
    """One entry per token (word piece) of ``text``, as OpenAI's ``logprobs.content`` and Ollama's
    ``logprobs`` write them: the token, its log-probability, its UTF-8 bytes, and ``top`` alternatives
    (the chosen token first, then made-up ones, each less likely)."""

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    entries = []
    for piece in pieces(text):
        alternatives = [entry(piece, chosen)] + [entry(f" alt{k}", chosen - k) for k in range(1, max(top, 0))]
        entries.append({**entry(piece, chosen), "top_logprobs": alternatives[: max(top, 0)]})
    return entries


# -- ids and times ------------------------------------------------------------------


def rand_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# -- canned answers -----------------------------------------------------------------


def structured_format(protocol: str, body: dict[str, Any]) -> dict[str, Any] | bool | None:
    """The JSON schema the request asks the answer to follow, True for "any JSON", else None."""
    if protocol == "ollama":
        fmt = body.get("format")
        return fmt if isinstance(fmt, dict) else (True if fmt == "json" else None)
    if protocol == "openai":
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            return (fmt.get("json_schema") or {}).get("schema") or True
        return True if fmt.get("type") == "json_object" else None
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format") or {}
    return (fmt.get("schema") or True) if fmt.get("type") == "json_schema" else None


def sample_for_schema(schema: Any, text: str = "ok", root: Any = None) -> Any:
    """A small instance of a JSON schema (first enum value, every property, local $refs)."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return text
    if isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/"):
        target: Any = root
        for key in schema["$ref"][2:].split("/"):
            target = target.get(key, {}) if isinstance(target, dict) else {}
        return sample_for_schema(target, text, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return sample_for_schema(schema[key][0], text, root)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: sample_for_schema(sub, text, root) for name, sub in props.items()}
    if kind == "array":
        return [sample_for_schema(schema.get("items"), text, root)] if schema.get("minItems") else []
    simple = {"integer": 0, "number": 0.0, "boolean": False, "null": None}
    if kind in simple:
        minimum = schema.get("minimum")
        return minimum if kind in ("integer", "number") and minimum is not None else simple[kind]
    return text


def default_responder(protocol: str, body: dict[str, Any]) -> str:
    """``"ok: <first 40 chars of the last user message>"``, as JSON when JSON output is asked."""
    text = "ok: " + last_user_text(body)[:40]
    fmt = structured_format(protocol, body)
    if fmt is None:
        return text
    if fmt is True:
        return json.dumps({"text": text})
    return json.dumps(sample_for_schema(fmt, text))


# -- errors -------------------------------------------------------------------------

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Error"


def request_id_headers(protocol: str) -> dict[str, str]:
    if protocol == "openai":
        return {"x-request-id": rand_id("req_", 32)}
    if protocol == "anthropic":
        return {"request-id": rand_id("req_011C", 20)}
    return {}


def error_body(
    protocol: str,
    status: int,
    message: str | None = None,
    *,
    type: str | None = None,  # noqa: A002 - the providers' own field name
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """The provider's error JSON for ``status``."""
    message = message or f"{_phrase(status)} (injected by the model peer)"
    if protocol == "openai":
        if type is None:
            if status == 429:
                type, code = "requests", code or "rate_limit_exceeded"
            else:
                type = "server_error" if status >= 500 else "invalid_request_error"
        return {"error": {"message": message, "type": type, "param": param, "code": code}}
    if protocol == "anthropic":
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        return {
            "type": "error",
            "error": {"type": type or _ANTHROPIC_TYPES.get(status, fallback), "message": message},
            "request_id": rand_id("req_011C", 20),
        }
    return {"error": message}


def error_response(
    protocol: str,
    status: int,
    message: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
    **fields: Any,
) -> JSONResponse:
    """An error in the provider's shape (or ``body`` verbatim), with its request-id header."""
    payload = body if body is not None else error_body(protocol, status, message, **fields)
    return JSONResponse(payload, status_code=status, headers={**request_id_headers(protocol), **(headers or {})})
