"""The model peer's chat routes on a bare HTTP/1.1 server, for benchmarks on machines of few CPUs.

The Starlette peer (`ModelPeer`) spends ~0.35 ms of CPU per answer (routing,
request and response objects); on a 2-CPU machine a benchmark's stand-in then
takes a sixth of the CPUs from the batch it measures, which a real model server
(elsewhere, in Go or C++) would not. This server answers the same chat routes
with the same bodies (`ollama_routes.frame` / `final_fields`,
`openai_routes.completion`) on asyncio protocols with llhttp's parser:

    POST /api/chat, /api/generate     Ollama, streamed as NDJSON unless "stream": false
    POST /v1/chat/completions         OpenAI, not streamed (a stream request is a 400)
    GET  /api/version, /api/tags
    GET  /_peer/stats, POST /_peer/reset, POST /_peer/config   (see serve_peer)

Everything else is a 404. Requests are recorded by path; every answer waits
``delay`` seconds (a timer, not a task) and comes from the `CountingResponder`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httptools

from . import ollama_routes, openai_routes
from .wire import count_tokens, prompt_tokens, request_id_headers

Reply = tuple[int, dict[str, str], bytes]
Responder = Callable[[str, dict[str, Any]], Awaitable[str]]

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 500: b"Internal Server Error"}


def _json(status: int, value: Any, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return status, {"content-type": "application/json", **(headers or {})}, body


class LeanPeer:
    """What the server answers: chat routes, and the stats/reset/config routes of `serve_peer`."""

    def __init__(self, responder: Any, delay: float) -> None:
        self.responder = responder  # a CountingResponder: async (protocol, body) -> text; stats(); reset(); hold_*
        self.delay = delay
        self.by_path: Counter[str] = Counter()

    async def handle(self, method: str, path: str, raw: bytes) -> Reply:
        self.by_path[path] += 1
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return _json(400, {"error": "invalid JSON in the request body"})
        route = (method, path)
        if route == ("POST", "/api/chat"):
            return await self._ollama(body, "chat")
        if route == ("POST", "/api/generate"):
            return await self._ollama(body, "generate")
        if route == ("POST", "/v1/chat/completions"):
            return await self._openai(body)
        if route == ("GET", "/api/version"):
            return _json(200, {"version": "0.6.0"})
        if route == ("GET", "/api/tags"):
            return _json(200, {"models": []})
        if route == ("GET", "/_peer/stats"):
            return _json(200, {"requests": sum(self.by_path.values()), "by_path": dict(self.by_path), **self.responder.stats()})
        if route == ("POST", "/_peer/reset"):
            self.by_path.clear()
            self.responder.reset()
            return _json(200, {"reset": True})
        if route == ("POST", "/_peer/config") and isinstance(body, dict):
            return _json(200, self._configure(body))
        return _json(404, {"error": f"{method} {path} is not served here"})

    def _configure(self, body: dict[str, Any]) -> dict[str, Any]:
        if "delay" in body:
            self.delay = float(body["delay"])
        if "hold_until" in body:
            self.responder.hold_until = int(body["hold_until"])
            self.responder.hold_seconds = float(body.get("hold_seconds", 10.0))
        return {"delay": self.delay, "hold_until": self.responder.hold_until, "hold_seconds": self.responder.hold_seconds}

    async def _wait(self) -> None:
        if self.delay > 0:
            waiter = asyncio.get_running_loop().create_future()
            handle = asyncio.get_running_loop().call_later(self.delay, _settle, waiter)
            try:
                await waiter
            finally:
                handle.cancel()

    async def _ollama(self, body: Any, kind: str) -> Reply:
        started = time.perf_counter_ns()
        key = "messages" if kind == "chat" else "prompt"
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body.get(key):
            return _json(400, {"error": "model and " + key + " are required"})
        await self._wait()
        text, cut = ollama_routes.answer_text(body, await self.responder("ollama", body))
        final = ollama_routes.final_fields(body, text, cut, started, kind)
        if body.get("stream", True) is False:
            return _json(200, ollama_routes.frame(body["model"], kind, text, **final))
        lines = ollama_routes.ndjson(body["model"], kind, text, final)
        return 200, {"content-type": "application/x-ndjson"}, b"".join(lines)

    async def _openai(self, body: Any) -> Reply:
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body.get("messages"):
            return _json(400, {"error": {"message": "model and messages are required", "type": "invalid_request_error"}})
        if body.get("stream"):
            problem = {"message": "streaming is served by the Starlette peer only", "type": "invalid_request_error"}
            return _json(400, {"error": problem})
        await self._wait()
        choices = [openai_routes.answer_choice(body, await self.responder("openai", body)) for _ in range(body.get("n") or 1)]
        usage = openai_routes.usage_of(prompt_tokens(body), sum(count_tokens(text) for text, _ in choices))
        return _json(200, openai_routes.completion(openai_routes.head_of(body), choices, usage), request_id_headers("openai"))


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One client connection: requests in turn (HTTP/1.1 keep-alive), each answered in order."""

    def __init__(self, peer: LeanPeer) -> None:
        self.peer = peer
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.queue: asyncio.Queue[tuple[str, str, bytes, bool] | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("ascii")
        path = httptools.parse_url(self.url).path.decode("utf-8")
        self.queue.put_nowait((method, path, b"".join(self.body), self.parser.should_keep_alive()))
        self.url, self.body = b"", []

    async def _serve(self) -> None:
        while (request := await self.queue.get()) is not None:
            method, path, raw, keep_alive = request
            try:
                status, headers, body = await self.peer.handle(method, path, raw)
            except Exception as exc:  # noqa: BLE001 - a 500, as a server would answer
                status, headers, body = _json(500, {"error": f"{type(exc).__name__}: {exc}"})
            assert self.transport is not None
            if self.transport.is_closing():
                return
            head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Status"))]
            head += [b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            head.append(b"content-length: %d\r\n" % len(body))
            if not keep_alive:
                head.append(b"connection: close\r\n")
            self.transport.write(b"".join(head) + b"\r\n" + body)
            if not keep_alive:
                self.transport.close()
                return


async def serve(peer: LeanPeer, sock: Any) -> asyncio.Server:
    """Serve `peer` on a bound, listening socket."""
    return await asyncio.get_running_loop().create_server(lambda: _Connection(peer), sock=sock)
