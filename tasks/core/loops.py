"""Things kept per event loop, and let go when their loop is closed.

Clients of redis-py, httpx and ollama belong to the loop that made them, so they
are kept per loop. A weak mapping alone does not let them go: each client's
connections refer to their loop, so the loop never becomes garbage. A process
that runs many short loops (Prefect runs a task of a sync flow, or of a naive
`.map`, on a loop of its own) would keep every loop, its sockets and its
clients. So a new loop's entry first drops the entries of loops already closed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

V = TypeVar("V")
_lock = threading.Lock()


def for_loop(per_loop: dict[asyncio.AbstractEventLoop, V], loop: asyncio.AbstractEventLoop, make: Callable[[], V]) -> V:
    """`per_loop[loop]`, made with `make()` if missing (and then the closed loops' entries dropped)."""
    found = per_loop.get(loop)
    if found is None:
        with _lock:  # loops of other threads (a thread pool's tasks) come and go at the same time
            for closed in [other for other in list(per_loop) if other.is_closed()]:
                per_loop.pop(closed, None)
            found = per_loop.setdefault(loop, make())
    return found
