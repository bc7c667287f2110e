"""Deadlines for many short awaits on one event loop, with one timer for all of them.

`asyncio.timeout` arms and cancels a timer per call (a handle on the loop's heap,
a state machine): a few microseconds, which a cache hit of ~80 µs notices. A
cache call only needs a bound, not a precise one: here each call writes its
deadline into a table, and one timer, armed while calls are in flight, looks
at the table every `seconds / 2` and cancels the tasks whose deadline passed.
A call is thus cut between `seconds` and 1.5 x `seconds`, and raises
`TimeoutError`; a cancellation that does not come from here stays a
cancellation.

    deadlines = Deadlines(loop, 0.5)
    value = await deadlines.bound(client.get(key))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self.loop = loop
        self.seconds = seconds
        self._due: dict[asyncio.Task[object], float] = {}
        self._cut: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def bound(self, call: Awaitable[T]) -> T:
        """Await `call`, or raise TimeoutError when it outlives the deadline."""
        task = asyncio.current_task(self.loop)  # the loop given: no look-up of the running loop (a getpid in 3.11)
        if task is None:  # not in a task (cannot be cancelled): unbounded
            return await call
        due = self._due
        due[task] = self.loop.time() + self.seconds
        if self._timer is None:
            self._timer = self.loop.call_later(self.seconds / 2, self._check)
        try:
            return await call
        except asyncio.CancelledError:
            if task in self._cut:  # our own cancellation: a timeout
                self._cut.discard(task)
                task.uncancel()
                raise TimeoutError(f"no reply within {self.seconds:g}s") from None
            raise
        finally:
            del due[task]
            if task in self._cut:  # cut as the call ended: the cancellation was not delivered
                self._cut.discard(task)
                task.uncancel()

    def _check(self) -> None:
        now = self.loop.time()
        for task, deadline in self._due.items():
            if deadline <= now and task not in self._cut:
                self._cut.add(task)
                task.cancel()
        self._timer = self.loop.call_later(self.seconds / 2, self._check) if self._due else None
