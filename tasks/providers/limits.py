"""Provider rate limits: calls paced by buckets (shared through Redis, else per process) and an
adaptive in-flight limit per provider/model that halves on a 429 and grows back (AIMD).

    gate = Gate(model_id, adaptive_for(model_id, limit.concurrency), buckets, limit, estimate)
    with gated(gate):                      # every attempt of `with_retries` inside takes a turn
        completion = await provider.complete(call)
    await gate.settle(completion.usage)    # tokens per minute corrected by what was used

A turn is, in order: a slot among the calls in flight to that model in this process (the adaptive
limit; a pause a 429's Retry-After asked for is waited out first), then a start time reserved in the
model's bucket: GCRA (`tasks.core.pacing`), one theoretical arrival time per dimension (requests,
tokens); a call may start once every dimension has room for its cost, and the reservation moves
the arrival times on. The caller learns when its turn is and sleeps until then: no polling, no
herd of retries at each refill. The bucket is the same arithmetic in Python (`LocalBuckets`, per
process) and in one Lua script on Redis (`tasks.stores.rate_buckets`, shared by every process and
machine on that Redis, timed by Redis's clock). Hand-made because the libraries at hand answer
"allowed now?" only (`limits`: windows; `pyrate-limiter`: a sorted-set log with an entry per unit
of weight, 200,000 entries for a tokens-per-minute limit), so a waiting caller must poll; here a
reservation is one round trip and the pace holds at the limit (tests/benchmarks/bench_rate_limits.py).

A turn that cannot start before the call's deadline (FRUGAL_LLM_MAX_RETRY_SECONDS) is not taken:
the call fails with `ModelTimeout` saying so. A shared bucket that cannot be reached (Redis down)
is said once, and the process paces itself alone until Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from tasks.core.completion import Usage
from tasks.core.errors import CacheError, ModelTimeout
from tasks.core.pacing import Pace, Reservation, schedule

log = logging.getLogger("frugal")

#: in flight per process and model when FRUGAL_LIMITS names no concurrency for it
DEFAULT_CONCURRENCY = 64
#: seconds a process paces itself alone after the shared bucket failed, before it asks Redis again
SHARED_RETRY_SECONDS = 30.0


class Buckets(Protocol):
    """Where the buckets live. Raises `CacheError` when it cannot be reached."""

    async def reserve(self, key: str, paces: Sequence[Pace], max_wait: float) -> Reservation: ...

    async def adjust(self, key: str, dimension: int, seconds: float) -> None:
        """Move one dimension's arrival time by `seconds` (negative: give back what was not used)."""
        ...

    async def pause(self, key: str, seconds: float) -> None:
        """No call starts in the next `seconds` (a 429's Retry-After)."""
        ...


class LocalBuckets:
    """The buckets of this process (the embedded cache, or Redis down): `schedule` under a lock."""

    def __init__(self) -> None:
        self._tats: dict[str, list[float]] = {}
        self._paused: dict[str, float] = {}
        self._lock = threading.Lock()

    async def reserve(self, key: str, paces: Sequence[Pace], max_wait: float) -> Reservation:
        with self._lock:
            now = time.monotonic()
            tats = self._tats.get(key) or [0.0] * len(paces)
            if len(tats) != len(paces):
                tats = [0.0] * len(paces)
            start, after = schedule(tats, paces, now, self._paused.get(key, 0.0))
            if start - now > max_wait:
                return Reservation(start - now, False)
            self._tats[key] = after
            return Reservation(start - now, True)

    async def adjust(self, key: str, dimension: int, seconds: float) -> None:
        with self._lock:
            tats = self._tats.get(key)
            if tats is not None and dimension < len(tats):
                tats[dimension] = max(tats[dimension] + seconds, time.monotonic()) if seconds < 0 else tats[dimension] + seconds

    async def pause(self, key: str, seconds: float) -> None:
        with self._lock:
            self._paused[key] = max(self._paused.get(key, 0.0), time.monotonic() + seconds)


#: the buckets of this process: one, whichever model and event loop
LOCAL = LocalBuckets()


@dataclass
class _Outage:
    """Whether the shared buckets failed lately (process-wide), so a Redis that is down costs each
    call nothing and is said once."""

    until: float = 0.0
    said: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


_outage = _Outage()


class SharedOrLocal:
    """The shared buckets; the process's own (`LOCAL`) while they cannot be reached."""

    def __init__(self, shared: Buckets, where: str) -> None:
        self.shared = shared
        self.where = where

    def _use_shared(self) -> bool:
        return time.monotonic() >= _outage.until

    def _failed(self, exc: CacheError) -> None:
        with _outage.lock:
            _outage.until = time.monotonic() + SHARED_RETRY_SECONDS
            said, _outage.said = _outage.said, True
        if not said:
            log.warning(
                "rate limits: the shared buckets at %s cannot be reached (%s); each process paces itself alone "
                "until it answers again (asked every %gs)",
                self.where,
                exc,
                SHARED_RETRY_SECONDS,
            )

    def _back(self) -> None:
        if _outage.said:
            with _outage.lock:
                said, _outage.said = _outage.said, False
            if said:
                log.warning("rate limits: the shared buckets at %s answer again", self.where)

    async def reserve(self, key: str, paces: Sequence[Pace], max_wait: float) -> Reservation:
        if self._use_shared():
            try:
                found = await self.shared.reserve(key, paces, max_wait)
            except CacheError as exc:
                self._failed(exc)
            else:
                self._back()
                return found
        return await LOCAL.reserve(key, paces, max_wait)

    async def adjust(self, key: str, dimension: int, seconds: float) -> None:
        if self._use_shared():
            try:
                await self.shared.adjust(key, dimension, seconds)
                return
            except CacheError as exc:
                self._failed(exc)
        await LOCAL.adjust(key, dimension, seconds)

    async def pause(self, key: str, seconds: float) -> None:
        if self._use_shared():
            try:
                await self.shared.pause(key, seconds)
            except CacheError as exc:
                self._failed(exc)
        await LOCAL.pause(key, seconds)  # this process's calls wait whether or not Redis took it


class _Waiter:
    __slots__ = ("future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Adaptive:
    """The calls in flight to one model in this process, at most `limit`: halved on a 429 (once per round
    of calls: those that started before the halving do not halve it again), one more after each round of
    `limit` calls that succeeded, up to `ceiling`. Waiters are served first come, first served, from any
    event loop or thread."""

    def __init__(self, model_id: str, ceiling: int) -> None:
        self.model_id = model_id
        self.ceiling = ceiling
        self.limit = ceiling
        self.in_flight = 0
        self.epoch = 0  # bumped by each halving
        self.successes = 0  # since the limit last moved
        self.paused_until = 0.0  # time.monotonic(): no call starts before (Retry-After)
        self._waiters: deque[_Waiter] = deque()
        self._lock = threading.Lock()
        self._said_full = False  # the first wait at the ceiling is logged, once per process

    def set_ceiling(self, ceiling: int) -> None:
        with self._lock:
            if ceiling != self.ceiling:
                lowered = self.limit < self.ceiling  # backing off: keep what is left of the back-off
                self.limit = min(self.limit, ceiling) if lowered else ceiling
                self.ceiling = ceiling
                self._hand_out()

    async def enter(self, deadline: float) -> int:
        """Take a slot (waiting for one, until `deadline` on the running loop's clock); the epoch it started in."""
        loop = asyncio.get_running_loop()
        pause = self.paused_until - time.monotonic()
        if pause > 0:
            if loop.time() + pause >= deadline:
                raise ModelTimeout(f"{self.model_id} asked to wait {pause:.3g}s (Retry-After), past the call's deadline")
            await asyncio.sleep(pause)
        with self._lock:
            if self.in_flight < self.limit and not self._waiters:
                self.in_flight += 1
                return self.epoch
            waiter = _Waiter(loop)
            self._waiters.append(waiter)
            full = self.limit == self.ceiling and not self._said_full  # (not a 429's back-off: said when it halves)
            self._said_full = self._said_full or full
        if full:
            log.warning(
                "calls to %s wait for a turn: %d in flight from this process, the most FRUGAL_LIMITS' concurrency "
                "allows (default 64); raise it if the provider grants more (said once)",
                self.model_id,
                self.ceiling,
            )
        try:
            async with asyncio.timeout_at(deadline):
                await waiter.future
        except BaseException as exc:
            with self._lock:
                if waiter.granted:  # handed a slot as the wait ended: give it back
                    self._release()
                else:
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise ModelTimeout(
                    f"no turn for {self.model_id} before the call's deadline: {self.in_flight} calls in flight, "
                    f"at most {self.limit} (halved by 429s, regained as calls succeed)"
                ) from None
            raise
        with self._lock:
            return self.epoch

    def leave(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        self.in_flight -= 1
        self._hand_out()

    def _hand_out(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            try:
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            except RuntimeError:  # its event loop is closed: nobody waits there any more
                continue
            waiter.granted = True
            self.in_flight += 1

    def throttled(self, epoch: int, retry_after: float | None) -> None:
        """A call that started in `epoch` was answered 429: halve the limit (once per epoch), pause for Retry-After."""
        with self._lock:
            if retry_after:
                self.paused_until = max(self.paused_until, time.monotonic() + retry_after)
            if epoch != self.epoch:
                return
            before, self.limit = self.limit, max(1, self.limit // 2)
            self.epoch += 1
            self.successes = 0
        log.warning(
            "%s answered 429 (rate limited): at most %d calls in flight from this process (was %d), "
            "one more per round of calls that succeed",
            self.model_id,
            self.limit,
            before,
        )

    def succeeded(self) -> None:
        with self._lock:
            self.successes += 1
            if self.limit < self.ceiling and self.successes >= self.limit:
                self.limit += 1
                self.successes = 0
                self._hand_out()


_adaptive: dict[str, Adaptive] = {}
_adaptive_lock = threading.Lock()


def adaptive_for(model_id: str, ceiling: int = DEFAULT_CONCURRENCY) -> Adaptive:
    """The in-flight limit of `model_id` in this process (one per model, kept for the process's life)."""
    with _adaptive_lock:
        found = _adaptive.get(model_id)
        if found is None:
            found = _adaptive[model_id] = Adaptive(model_id, ceiling)
    if found.ceiling != ceiling:
        found.set_ceiling(ceiling)
    return found


def forget_limits() -> None:
    """Forget every model's in-flight limit and pause, this process's buckets and any outage of the
    shared ones: a fresh process's state (tests that must not inherit another test's 429s)."""
    with _adaptive_lock:
        _adaptive.clear()
    with LOCAL._lock:
        LOCAL._tats.clear()
        LOCAL._paused.clear()
    with _outage.lock:
        _outage.until, _outage.said = 0.0, False


class Turn:
    """One attempt's turn: leave it when the attempt is over, and say how it went."""

    def __init__(self, gate: Gate, epoch: int) -> None:
        self.gate = gate
        self.epoch = epoch
        self._left = False

    def succeeded(self) -> None:
        self.gate.adaptive.succeeded()

    async def throttled(self, retry_after: float | None) -> None:
        """A 429: this process backs off, and every process sharing the bucket pauses for Retry-After."""
        self.gate.adaptive.throttled(self.epoch, retry_after)
        if retry_after and self.gate.buckets is not None:
            await self.gate.buckets.pause(self.gate.key, retry_after)

    def leave(self) -> None:
        if not self._left:
            self._left = True
            self.gate.adaptive.leave()


@dataclass
class Gate:
    """One model call's way through the limits: its model's adaptive limit, and its bucket (None: no rpm/tpm)."""

    model_id: str
    adaptive: Adaptive
    buckets: Buckets | None = None
    #: the bucket's key (shared by every process on the same Redis and prefix)
    key: str = ""
    rpm: float | None = None
    tpm: float | None = None
    burst: int = 1
    #: tokens this call is counted for before it is made (prompt estimate + max_tokens)
    estimate: int = 0

    def paces(self) -> list[Pace]:
        paces = []
        if self.rpm:
            paces.append(Pace(60.0 / self.rpm, 1.0, float(self.burst)))
        if self.tpm:
            paces.append(Pace(60.0 / self.tpm, float(self.estimate), 0.0))
        return paces

    async def enter(self, deadline: float) -> Turn:
        """Wait for a slot and the bucket's turn, both before `deadline` (the running loop's clock), or raise ModelTimeout."""
        epoch = await self.adaptive.enter(deadline)
        turn = Turn(self, epoch)
        try:
            if self.buckets is not None and (self.rpm or self.tpm):
                loop = asyncio.get_running_loop()
                found = await self.buckets.reserve(self.key, self.paces(), max(deadline - loop.time(), 0.0))
                if not found.granted:
                    raise ModelTimeout(
                        f"{self.model_id}'s rate limit (FRUGAL_LIMITS) gives this call a turn in {found.wait:.3g}s, "
                        "past its deadline; raise FRUGAL_LLM_MAX_RETRY_SECONDS, or send fewer calls at once"
                    )
                if found.wait > 0:
                    await asyncio.sleep(found.wait)
        except BaseException:
            turn.leave()
            raise
        return turn

    async def settle(self, usage: Usage) -> None:
        """Correct the tokens counted before the call by those the provider says it used."""
        if self.buckets is None or not self.tpm or usage.estimated:
            return
        used = usage.input_tokens + usage.output_tokens
        if used != self.estimate:
            await self.buckets.adjust(self.key, 1 if self.rpm else 0, (used - self.estimate) * 60.0 / self.tpm)


_current: ContextVar[Gate | None] = ContextVar("frugal_rate_gate", default=None)


def current_gate() -> Gate | None:
    """The gate the model call being made goes through (`gated`), None outside one."""
    return _current.get()


@contextlib.contextmanager
def gated(gate: Gate | None) -> Iterator[None]:
    """Make `gate` the one every attempt of the calls made inside goes through."""
    token = _current.set(gate)
    try:
        yield
    finally:
        _current.reset(token)
