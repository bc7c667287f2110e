"""Single-flight: identical requests in flight at the same time in this process share one call.

A batch or a burst of traffic often asks the same thing at once (50 identical
concurrent requests make one model call); the prompt cache cannot help until
the first answer is stored. Kept per event loop (a future belongs to its loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tasks.core.loops import for_loop

T = TypeVar("T")

_inflight: dict[asyncio.AbstractEventLoop, dict[str, asyncio.Future[Any]]] = {}


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
