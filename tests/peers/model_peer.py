"""A loopback stand-in for Ollama, the OpenAI chat API and the Anthropic messages API.

One Starlette app serves the three wire formats on one port; a ``ModelPeer``
controls what it answers and records what it was asked:

    peer = ModelPeer(responder=lambda protocol, body: "positive")
    with peer.serve() as server:
        ollama.Client(host=server.url).chat(model="llama3.2:1b", messages=[...])
        openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
        anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0)
    assert peer.count("/api/chat") == 1

Every request is recorded first, then may be refused at once by the rate limit
(``peer.limit_rate(rpm=600)``: 429s like OpenAI's, counted in ``peer.rate``), then
is delayed (``peer.delay``: the provider's latency), then may fail
(``peer.fail_next``), then is checked for its key (``peer.api_key``), then is
validated and answered in the provider's own JSON, with token log-probabilities
when the request asks for them (``peer.token_logprob`` each), and, with
``peer.trickle`` set, sent one byte per ``trickle`` seconds.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from . import anthropic_routes, embed_routes, ollama_routes, openai_routes
from .prompt_cache import PromptCache
from .rate_limit import RateLimit
from .server import LoopbackServer
from .wire import default_responder, error_response

__all__ = ["ModelPeer", "Recorded", "Responder", "create_app", "default_responder"]

Responder = Callable[[str, dict[str, Any]], "str | Awaitable[str]"]
INVALID_JSON = object()  # ``Recorded.json`` holds None for a body that is not JSON


class Recorded(NamedTuple):
    """One request as the peer received it (headers lower-cased)."""

    protocol: str
    path: str
    json: Any
    headers: dict[str, str]


class _Fault(NamedTuple):
    status: int
    headers: dict[str, str]
    body: Any


class ModelPeer:
    """Controls a model-peer app: canned answers, request log, faults, delay and auth."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        ollama_models: list[str] | None = None,
        api_key: str | None = None,
        delay: float = 0.0,
    ) -> None:
        self._settings = {
            "responder": responder or default_responder,
            "ollama_models": list(ollama_models) if ollama_models is not None else ["llama3.2:1b"],
            "api_key": api_key,
            "delay": delay,
            "ollama_version": "0.13.0",
            "token_logprob": -0.05,
            "trickle": 0.0,
            "served_model": None,
            "openai_models": ["gpt-4o-mini"],
            "anthropic_models": ["claude-3-5-haiku-latest"],
            "prompt_cache": False,
            "cache_min_tokens": 1024,
        }
        self.responder: Responder
        self.ollama_models: list[str]  # known Ollama models; empty accepts any name
        self.api_key: str | None  # when set, OpenAI and Anthropic requests must carry it
        self.delay: float  # seconds added before every response
        self.ollama_version: str
        self.token_logprob: float  # each generated token's log-probability, when a request asks for them
        self.trickle: float  # > 0: every response body is sent one byte per `trickle` seconds
        self.served_model: str | None  # OpenAI answers name this model instead of the one asked for
        self.openai_models: list[str]  # listed by GET /v1/models (not enforced)
        self.anthropic_models: list[str]  # listed by GET /v1/models with anthropic-version
        self.prompt_cache: bool  # simulate the providers' prompt caches in usage (see tests/peers/prompt_cache.py)
        self.cache_min_tokens: int  # Anthropic's minimum cacheable prefix, in peer tokens (words)
        self.cache = PromptCache()
        self.rate = RateLimit()  # no limit until `limit_rate`
        self.requests: list[Recorded] = []
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()
        self._app: Starlette | None = None
        self.reset(settings=True)

    # -- test side --------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        if self._app is None:
            self._app = create_app(self)
        return self._app

    def serve(self, **kwargs: Any) -> LoopbackServer:
        """A ``LoopbackServer`` for this peer's app (start it, or use it as a context manager)."""
        return LoopbackServer(self.app, **kwargs)

    def count(self, path: str | None = None, *, protocol: str | None = None) -> int:
        """How many requests were received, optionally only those to ``path`` / of ``protocol``."""
        with self._lock:
            return sum(
                1 for r in self.requests if (path is None or r.path == path) and (protocol is None or r.protocol == protocol)
            )

    def fail_next(self, status: int, n: int = 1, headers: dict[str, str] | None = None, body: Any = None) -> None:
        """Answer the next ``n`` requests with ``status`` (provider-shaped error unless ``body``)."""
        with self._lock:
            self._faults.extend(_Fault(status, dict(headers or {}), body) for _ in range(n))

    def limit_rate(self, rpm: float | None = None, tpm: float | None = None) -> RateLimit:
        """Enforce `rpm` requests and `tpm` tokens per minute on OpenAI and Anthropic requests (None: no limit)."""
        self.rate = RateLimit(rpm, tpm)
        return self.rate

    @property
    def pending_failures(self) -> int:
        with self._lock:
            return len(self._faults)

    def reset(self, *, settings: bool = False) -> None:
        """Forget requests, pending faults and the prompt cache; with ``settings=True`` also
        restore the constructor's responder, models, api_key, delay and prompt-cache options."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()
            self.cache.clear()
            self.rate.reset()
            if settings:
                self.rate = RateLimit()
                for name, value in self._settings.items():
                    setattr(self, name, list(value) if isinstance(value, list) else value)

    # -- server side (used by the route modules) --------------------------------

    async def admit(self, request: Request, protocol: str) -> tuple[Any, Response | None]:
        """Record, delay, then fault or auth-check a request: (json body, early response or None)."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = INVALID_JSON
        with self._lock:
            self.requests.append(
                Recorded(protocol, request.url.path, None if body is INVALID_JSON else body, dict(request.headers))
            )
            fault = self._faults.popleft() if self._faults else None
        if protocol != "ollama" and isinstance(body, dict) and (self.rate.rpm or self.rate.tpm):
            refused = self.rate.check(protocol, body)
            if refused is not None:
                return body, refused
        if not await self._pause(request, self.delay):
            return body, Response(status_code=499)  # the client hung up; nobody reads this
        if fault is not None:
            return body, error_response(protocol, fault.status, headers=fault.headers, body=fault.body)
        return body, self._check_key(request, protocol)

    @staticmethod
    async def _pause(request: Request, seconds: float) -> bool:
        """Sleep ``seconds``; False as soon as the client disconnects."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (seconds or 0)
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(left, 0.05))
            if await request.is_disconnected():
                return False
        return True

    def _check_key(self, request: Request, protocol: str) -> Response | None:
        key = self.api_key
        if not key or protocol == "ollama":
            return None
        if protocol == "openai":
            given = request.headers.get("authorization", "")
            if given == f"Bearer {key}":
                return None
            if not given.startswith("Bearer ") or not given[7:].strip():
                return error_response(
                    "openai",
                    401,
                    (
                        "You didn't provide an API key. You need to provide your API key in an "
                        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                    ),
                )
            return error_response(
                "openai",
                401,
                (
                    f"Incorrect API key provided: {_mask(given[7:].strip())}. You can find your API key "
                    "at https://platform.openai.com/account/api-keys."
                ),
                code="invalid_api_key",
            )
        # Anthropic takes ``x-api-key``; anthropic-python 2.x sends the key as a Bearer token.
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if given == key:
            return None
        message = "x-api-key header is required" if not given else "invalid x-api-key"
        return error_response("anthropic", 401, message)

    async def answer(self, protocol: str, body: dict[str, Any]) -> tuple[str, Response | None]:
        """Ask the responder; (text, None), or ("", a provider-shaped 500) if it raised."""
        responder = self.responder
        try:
            if inspect.iscoroutinefunction(responder) or inspect.iscoroutinefunction(
                getattr(responder, "__call__", None)  # noqa: B004 - async callable objects
            ):
                result: Any = await responder(protocol, body)  # type: ignore[misc]
            else:
                # The loop's default executor: uvicorn's asyncio runner joins it at stop.
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(None, responder, protocol, body)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:  # noqa: BLE001 - turned into the provider's 500
            return "", error_response(protocol, 500, f"responder raised {type(exc).__name__}: {exc}")
        if isinstance(result, (dict, list)):
            return json.dumps(result), None
        return ("" if result is None else str(result)), None

    def knows_ollama_model(self, name: str) -> bool:
        known = self.ollama_models
        return not known or _ollama_tag(name) in {_ollama_tag(m) for m in known}


def _ollama_tag(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def _trickled(response: Response, seconds: float) -> Response:
    """`response` with its body sent one byte every `seconds` (its headers, Content-Length included, at once):
    a server that never pauses long enough for a per-read timeout, yet never finishes."""
    source = response.body_iterator if isinstance(response, StreamingResponse) else None
    body = b"" if source is not None else bytes(response.body)

    async def chunks() -> AsyncIterator[bytes]:
        if source is None:
            parts: Any = [body]
        else:
            parts = [chunk.encode() if isinstance(chunk, str) else bytes(chunk) async for chunk in source]
        for part in parts:
            for i in range(len(part)):
                yield part[i : i + 1]
                await asyncio.sleep(seconds)

    headers = {k: v for k, v in response.headers.items()}
    return StreamingResponse(chunks(), status_code=response.status_code, headers=headers)


def _mask(key: str) -> str:
    return key[:3] + "*" * max(len(key) - 7, 4) + key[-4:] if len(key) > 8 else "*" * len(key)


def _bind(peer: ModelPeer, handler: Callable[[ModelPeer, Request], Awaitable[Response]]):
    async def endpoint(request: Request) -> Response:
        response = await handler(peer, request)
        return _trickled(response, peer.trickle) if peer.trickle > 0 else response

    endpoint.__name__ = handler.__name__
    return endpoint


async def _list_models(peer: ModelPeer, request: Request) -> Response:
    """GET /v1/models is OpenAI's, or Anthropic's when an anthropic-version header is sent."""
    if "anthropic-version" in request.headers:
        return await anthropic_routes.list_models(peer, request)
    return await openai_routes.list_models(peer, request)


async def _not_found(peer: ModelPeer, request: Request) -> Response:
    path = request.url.path
    if path.startswith("/v1/"):
        protocol = "anthropic" if "anthropic-version" in request.headers else "openai"
    else:
        protocol = "ollama"
    _, early = await peer.admit(request, protocol)
    if early is not None:
        return early
    if protocol == "ollama":
        return PlainTextResponse("404 page not found", status_code=404)
    if protocol == "openai":
        return error_response("openai", 404, f"Invalid URL ({request.method} {path})")
    return error_response("anthropic", 404, "Not Found")


def create_app(peer: ModelPeer) -> Starlette:
    """The Starlette app serving Ollama (/api/*), OpenAI and Anthropic (/v1/*) for ``peer``."""
    table = [
        *ollama_routes.ROUTES,
        *openai_routes.ROUTES,
        *anthropic_routes.ROUTES,
        *embed_routes.ROUTES,
        ("/v1/models", _list_models, ["GET"]),
        ("/{path:path}", _not_found, ["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    return Starlette(routes=[Route(path, _bind(peer, fn), methods=methods) for path, fn, methods in table])
