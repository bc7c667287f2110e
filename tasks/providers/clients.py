"""Long-lived HTTP clients and single-flight, one set per event loop.

A batch makes thousands of calls, so clients are kept per event loop (asyncio
clients belong to the loop that made them) and per configuration. They share
one TLS context per process, and send plain-http requests (a local Ollama)
through the lean transport (`tasks.providers.http_transport`).

`single_flight(key, call)`: identical requests in flight at the same time in
this process share one call and its answer.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import httpx
import ollama

from tasks.core.loops import for_loop
from tasks.providers.http_transport import lean_mounts

T = TypeVar("T")
C = TypeVar("C")

#: clients per configuration and loop, handed out in turn: httpcore scans its whole pool on every
#: request, so one client with many connections costs ~2.5 ms of CPU per call; 8 smaller ones ~0.7 ms
RING = 8
_http: dict[asyncio.AbstractEventLoop, dict[float, _Ring[httpx.AsyncClient]]] = {}
_ollama: dict[asyncio.AbstractEventLoop, dict[tuple[str, float], _Ring[ollama.AsyncClient]]] = {}
_inflight: dict[asyncio.AbstractEventLoop, dict[str, asyncio.Future[Any]]] = {}

#: 256 connections in all per configuration: enough for the batch concurrency a provider allows
HTTP_LIMITS = httpx.Limits(max_connections=256 // RING, max_keepalive_connections=64 // RING)


class _Ring(Generic[C]):
    def __init__(self, make: Callable[[], C]) -> None:
        self.clients = [make() for _ in range(RING)]
        self.turn = itertools.cycle(self.clients)

    def next(self) -> C:
        return next(self.turn)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client of this process (httpx's default: certifi's CA bundle, or
    SSL_CERT_FILE / SSL_CERT_DIR): each client would otherwise load the CA bundle itself, ~25 ms of CPU."""
    return httpx.create_ssl_context()


def _options() -> dict[str, Any]:
    return {"limits": HTTP_LIMITS, "verify": tls_context(), "mounts": lean_mounts(HTTP_LIMITS)}


def http_client(timeout: float) -> httpx.AsyncClient:
    per_loop = for_loop(_http, asyncio.get_running_loop(), dict)
    ring = per_loop.get(timeout)
    if ring is None or ring.clients[0].is_closed:
        ring = per_loop[timeout] = _Ring(lambda: httpx.AsyncClient(timeout=timeout, **_options()))
    return ring.next()


def ollama_client(host: str, timeout: float) -> ollama.AsyncClient:
    per_loop = for_loop(_ollama, asyncio.get_running_loop(), dict)
    ring = per_loop.get((host, timeout))
    if ring is None:
        ring = per_loop[(host, timeout)] = _Ring(lambda: ollama.AsyncClient(host=host, timeout=timeout, **_options()))
    return ring.next()


async def close_clients() -> None:
    """Close this loop's clients (tests and short-lived processes call this before the loop ends)."""
    loop = asyncio.get_running_loop()
    for ring in _http.pop(loop, {}).values():
        for client in ring.clients:
            await client.aclose()
    for oring in _ollama.pop(loop, {}).values():
        for oclient in oring.clients:
            await oclient._client.aclose()


async def single_flight(key: str, call: Callable[[], Awaitable[T]], copy: Callable[[T], T] | None = None) -> T:
    """Run `call` once for all callers asking for `key` at the same time.

    The caller that made the call gets its result; the others get `copy(result)`
    (when given), so no two callers share one mutable answer.
    """
    loop = asyncio.get_running_loop()
    inflight = for_loop(_inflight, loop, dict)
    pending = inflight.get(key)
    if pending is not None:
        shared = await asyncio.shield(pending)
        return copy(shared) if copy is not None else shared
    future: asyncio.Future[T] = loop.create_future()
    inflight[key] = future
    try:
        result = await call()
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no "exception was never retrieved" when nobody waited
        raise
    else:
        future.set_result(result)
        return result
    finally:
        del inflight[key]
