"""Long-lived HTTP clients and single-flight, one set per event loop.

Creating an httpx client costs milliseconds (it builds an SSL context); a
batch makes thousands of calls, so clients are kept per event loop (asyncio
clients belong to the loop that made them) and per configuration.

`single_flight(key, call)`: identical requests in flight at the same time in
this process share one call and its answer.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import ollama

T = TypeVar("T")

_http: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, httpx.AsyncClient]] = weakref.WeakKeyDictionary()
_ollama: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, float], ollama.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)
_inflight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future[Any]]] = weakref.WeakKeyDictionary()

#: enough for the batch concurrency a large-model provider allows
HTTP_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64)


def http_client(timeout: float) -> httpx.AsyncClient:
    per_loop = _http.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(timeout)
    if client is None or client.is_closed:
        client = per_loop[timeout] = httpx.AsyncClient(timeout=timeout, limits=HTTP_LIMITS)
    return client


def ollama_client(host: str, timeout: float) -> ollama.AsyncClient:
    per_loop = _ollama.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get((host, timeout))
    if client is None:
        client = per_loop[(host, timeout)] = ollama.AsyncClient(host=host, timeout=timeout, limits=HTTP_LIMITS)
    return client


async def close_clients() -> None:
    """Close this loop's clients (tests and short-lived processes call this before the loop ends)."""
    loop = asyncio.get_running_loop()
    for client in _http.pop(loop, {}).values():
        await client.aclose()
    for oclient in _ollama.pop(loop, {}).values():
        await oclient._client.aclose()


async def single_flight(key: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run `call` once for all callers asking for `key` at the same time."""
    inflight = _inflight.setdefault(asyncio.get_running_loop(), {})
    pending = inflight.get(key)
    if pending is not None:
        return await asyncio.shield(pending)
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
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
