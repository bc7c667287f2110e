"""Pacing arithmetic of the rate limits (GCRA, "virtual scheduling"), shared by the in-process buckets
(`tasks.providers.limits`) and the Redis ones (`tasks.stores.rate_buckets`, the same steps in Lua).

A bucket keeps one theoretical arrival time (TAT) per dimension (requests, tokens). A call of cost `c`
may start at `s` once every dimension has room: max(tat, s) + c x interval at most s + max(burst, c) x
interval (a call dearer than the burst still gets its turn, after a longer wait). Reserving moves each
TAT to max(tat, s) + c x interval, so the next caller's turn comes after this one's: callers learn
when to go instead of asking again and again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class Pace(NamedTuple):
    """One dimension of a bucket: `interval` seconds per unit, `cost` units this call takes,
    `burst` units that may go at once after a quiet spell."""

    interval: float
    cost: float
    burst: float


class Reservation(NamedTuple):
    """A bucket's answer: seconds until the call may start; `granted` False: not within the wait
    allowed (nothing was reserved; `wait` says how long it would have been)."""

    wait: float
    granted: bool


def schedule(tats: Sequence[float], paces: Sequence[Pace], now: float, paused: float) -> tuple[float, list[float]]:
    """(start time, the new arrival times) for a call made at `now`, no earlier than `paused`."""
    start = max(now, paused)
    for tat, pace in zip(tats, paces, strict=True):
        start = max(start, tat + pace.cost * pace.interval - max(pace.burst, pace.cost) * pace.interval)
    return start, [max(tat, start) + pace.cost * pace.interval for tat, pace in zip(tats, paces, strict=True)]
