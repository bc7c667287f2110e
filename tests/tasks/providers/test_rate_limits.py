"""Provider rate limits: the pacing arithmetic, the Redis buckets (shared by real processes), the
adaptive in-flight limit (AIMD), 429s with Retry-After retried through the real call path, a Redis
that is down, and FRUGAL_LIMITS's errors."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tasks.core.errors import ConfigError, ModelTimeout
from tasks.core.pacing import Pace, schedule
from tasks.core.settings import get_settings
from tasks.providers.limits import LOCAL, Adaptive, adaptive_for
from tasks.steps.call_llm import LlmRequest, answer_large
from tasks.steps.rate_limits import limit_for
from tasks.stores.rate_buckets import redis_buckets
from tasks.stores.redis_store import redis_store
from tests.conftest import REDIS_URL

CHAT = "/v1/chat/completions"
ROOT = Path(__file__).resolve().parents[3]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the arithmetic ---------------------------------------------------------------------------------


def test_schedule_paces_calls_one_interval_apart_after_the_burst():
    tats, starts = [0.0], []
    for _ in range(5):
        start, tats = schedule(tats, [Pace(interval=1.0, cost=1, burst=2)], now=100.0, paused=0.0)
        starts.append(start)
    assert starts == [100.0, 100.0, 101.0, 102.0, 103.0]  # two at once, then one a second


def test_schedule_takes_the_latest_dimension_and_a_call_dearer_than_the_burst_still_goes():
    requests, tokens = Pace(1.0, 1, 1), Pace(0.01, 500, 0)  # 1 request/s; 100 tokens/s, this call 500
    start, tats = schedule([0.0, 0.0], [requests, tokens], now=10.0, paused=0.0)
    assert start == 10.0 and tats == [11.0, 15.0]
    start, _ = schedule(tats, [requests, tokens], now=10.0, paused=0.0)
    assert start == 15.0  # the tokens' turn, not the requests'


def test_schedule_waits_out_a_pause():
    start, _ = schedule([0.0], [Pace(1.0, 1, 1)], now=10.0, paused=12.5)
    assert start == 12.5


async def test_local_bucket_refuses_a_turn_past_the_wait_allowed_and_reserves_nothing():
    paces = [Pace(1.0, 1, 1)]
    key = f"test-{time.monotonic_ns()}"
    assert (await LOCAL.reserve(key, paces, 0.0)).granted
    late = await LOCAL.reserve(key, paces, 0.1)
    assert not late.granted and 0.5 < late.wait <= 1.0
    assert (await LOCAL.reserve(key, paces, 5.0)).wait == pytest.approx(late.wait, abs=0.05)  # nothing was taken


# -- Redis buckets ----------------------------------------------------------------------------------


async def test_redis_bucket_paces_and_corrects(redis_cache):
    buckets = redis_buckets(redis_store(REDIS_URL, 0.5), os.environ["FRUGAL_CACHE_PREFIX"])
    paces = [Pace(0.5, 1, 1)]  # 120 a minute
    waits = [(await buckets.reserve("openai/m", paces, 10.0)).wait for _ in range(4)]
    assert waits[0] < 0.05 and [round(w - waits[0], 1) for w in waits] == [0.0, 0.5, 1.0, 1.5]
    refused = await buckets.reserve("openai/m", paces, 0.5)
    assert not refused.granted and refused.wait > 1.5
    await buckets.adjust("openai/m", 0, -1.0)  # give back two calls' worth
    assert (await buckets.reserve("openai/m", paces, 10.0)).wait < 1.5
    await buckets.pause("openai/other", 2.0)
    assert (await buckets.reserve("openai/other", paces, 10.0)).wait > 1.5
    assert 0 < redis_cache.pttl(f"{os.environ['FRUGAL_CACHE_PREFIX']}:limits:openai/m") <= 62_000


def _run_workers(env: dict[str, str], seconds: float, n: int = 2) -> list[dict[str, Any]]:
    """`n` worker processes making calls for the same `seconds` (started together once all have imported)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.tasks.providers.limits_worker", str(seconds), "4", f"p{i}"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(n)
    ]
    results = []
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        start_at = f"{time.time() + 0.5}\n".encode()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(start_at)
            proc.stdin.flush()
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()[-2000:]
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.mark.slow
def test_two_processes_sharing_redis_keep_the_combined_rate_at_the_limit(peer, redis_cache, monkeypatch):
    """rpm=120 over a 3 s window: at most 6 + the burst of 1 (+1 at the window's edge) calls reach the
    provider from both processes together; without the limit, the same processes send far more."""
    env = {**os.environ, "FRUGAL_LLM_MAX_RETRY_SECONDS": "30"}
    unlimited = _run_workers(env, 3.0)
    sent_unlimited = peer.count(CHAT)
    assert sent_unlimited > 20 and all(r["failed"] == 0 for r in unlimited), unlimited

    peer.reset()
    env["FRUGAL_LIMITS"] = json.dumps({"openai/gpt-test": {"rpm": 120}})
    limited = _run_workers(env, 3.0)
    sent = peer.count(CHAT)
    assert 4 <= sent <= 8, (sent, limited)
    assert all(r["ok"] >= 1 and r["failed"] == 0 for r in limited), limited  # both processes had turns; none failed


# -- 429s through the real call path ------------------------------------------------------------


async def test_429_with_retry_after_is_honoured_and_the_item_retried_until_it_succeeds(peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_MAX_ATTEMPTS", "1")  # 429s are not counted as attempts
    peer.fail_next(429, n=2, headers={"retry-after": "0.3"})
    started = time.monotonic()
    answer = await answer_large(LlmRequest(prompt="after two 429s", max_tokens=8))
    assert answer.text == "ok: after two 429s" and peer.count(CHAT) == 3
    assert time.monotonic() - started >= 0.6  # both Retry-Afters waited out
    adaptive = adaptive_for("openai/gpt-test")
    assert adaptive.limit < adaptive.ceiling  # backed off


async def test_a_retry_after_past_the_deadline_fails_the_call_at_once(peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_MAX_RETRY_SECONDS", "1")
    peer.fail_next(429, n=1, headers={"retry-after": "30"})
    started = time.monotonic()
    with pytest.raises(ModelTimeout, match="FRUGAL_LLM_MAX_RETRY_SECONDS"):
        await answer_large(LlmRequest(prompt="too long to wait", max_tokens=8))
    assert time.monotonic() - started < 30  # did not sleep 30 s for nothing
    assert peer.count(CHAT) == 1


@pytest.mark.slow
async def test_a_rate_limited_stand_in_is_kept_at_its_limit_without_failures(peer, monkeypatch):
    """The stand-in refuses beyond 120 a minute; our limit is the same: 8 concurrent items all succeed,
    paced, and the stand-in refused none (or a rare one at the edge, retried)."""
    peer.limit_rate(rpm=120)
    monkeypatch.setenv("FRUGAL_LIMITS", json.dumps({"openai/*": {"rpm": 120}}))
    answers = await asyncio.gather(*(answer_large(LlmRequest(prompt=f"paced {i}", max_tokens=8)) for i in range(8)))
    assert [a.text for a in answers] == [f"ok: paced {i}" for i in range(8)]
    assert peer.rate.admitted == 8 and peer.rate.refused <= 1, (peer.rate.admitted, peer.rate.refused)


async def test_a_redis_that_is_down_does_not_stop_model_calls(peer, monkeypatch, caplog):
    monkeypatch.setenv("FRUGAL_CACHE_URL", f"redis://127.0.0.1:{closed_port()}/0")
    monkeypatch.setenv("FRUGAL_LIMITS", json.dumps({"openai/gpt-test": {"rpm": 6000}}))
    with caplog.at_level(logging.WARNING, logger="frugal"):
        answers = [await answer_large(LlmRequest(prompt=f"no redis {i}", max_tokens=8)) for i in range(3)]
    assert [a.text for a in answers] == [f"ok: no redis {i}" for i in range(3)]
    said = [r for r in caplog.records if "shared buckets" in r.getMessage()]
    assert len(said) == 1 and "each process paces itself alone" in said[0].getMessage()


async def test_tokens_per_minute_are_counted_before_and_corrected_by_the_usage(peer, redis_cache, monkeypatch):
    """max_tokens=5000 counts 5000 + the prompt before the call (5 s at 1000 tokens/s); the stand-in says
    it used a dozen: the bucket gives the rest back, so the next call is not held 5 s."""
    monkeypatch.setenv("FRUGAL_LIMITS", json.dumps({"openai/gpt-test": {"tpm": 60000}}))
    await answer_large(LlmRequest(prompt="count my tokens", max_tokens=5000))
    key = f"{os.environ['FRUGAL_CACHE_PREFIX']}:limits:openai/gpt-test"
    seconds, micros = redis_cache.time()
    ahead_ms = float(redis_cache.hget(key, "1")) - (seconds * 1000 + micros / 1000)
    assert ahead_ms < 1000  # corrected: about a dozen tokens' worth, not 5000
    assert peer.count(CHAT) == 1


async def _in_flight_at_once(peer, calls: int) -> int:  # type: ignore[no-untyped-def]
    """Send `calls` at once to a stand-in that holds each for 1.5 s: how many it had received before
    the first answer came back (all of them, unless something held calls back)."""
    peer.delay = 1.5
    arrived: list[int] = []

    async def one(i: int) -> None:
        await answer_large(LlmRequest(prompt=f"in flight {i}", max_tokens=8))
        if not arrived:
            arrived.append(peer.count(CHAT))

    await asyncio.gather(*(one(i) for i in range(calls)))
    return arrived[0]


async def test_a_concurrency_above_64_has_every_call_in_flight_at_once(peer, monkeypatch):
    """The HTTP pool under the providers has no cap of its own: FRUGAL_LIMITS' concurrency decides
    (a 64-connection pool used to hold the 65th call back until one of the first 64 answered)."""
    monkeypatch.setenv("FRUGAL_LIMITS", json.dumps({"openai/gpt-test": {"concurrency": 128}}))
    assert await _in_flight_at_once(peer, 100) == 100


async def test_the_default_concurrency_is_64_calls_in_flight_per_model_and_waiting_is_said_once(peer, caplog):
    with caplog.at_level(logging.WARNING, logger="frugal"):
        assert 64 <= await _in_flight_at_once(peer, 80) < 80  # (the 65th may leave as the first answer comes back)
    said = [r.getMessage() for r in caplog.records if "wait for a turn" in r.getMessage()]
    assert len(said) == 1 and "openai/gpt-test" in said[0] and "64 in flight" in said[0], said


# -- AIMD -------------------------------------------------------------------------------------------


async def test_adaptive_limit_halves_once_per_round_and_recovers_one_per_round():
    adaptive = Adaptive("test/aimd", ceiling=8)
    epoch = await adaptive.enter(asyncio.get_running_loop().time() + 5)
    adaptive.leave()
    adaptive.throttled(epoch, None)
    adaptive.throttled(epoch, None)  # a call of the same round: no second halving
    assert adaptive.limit == 4
    adaptive.throttled(adaptive.epoch, None)
    assert adaptive.limit == 2
    limits = []
    for _ in range(20):
        adaptive.succeeded()
        limits.append(adaptive.limit)
    assert limits[:6] == [2, 3, 3, 3, 4, 4] and limits[-1] == 7  # +1 after each round of `limit` successes
    for _ in range(20):
        adaptive.succeeded()
    assert adaptive.limit == 8  # the ceiling, not beyond


async def test_adaptive_limit_holds_calls_beyond_it_until_one_leaves_or_the_deadline():
    adaptive = Adaptive("test/slots", ceiling=2)
    loop = asyncio.get_running_loop()
    await adaptive.enter(loop.time() + 5)
    await adaptive.enter(loop.time() + 5)
    third = asyncio.create_task(adaptive.enter(loop.time() + 5))
    await asyncio.sleep(0.05)
    assert not third.done() and adaptive.in_flight == 2
    adaptive.leave()
    await third
    assert adaptive.in_flight == 2
    with pytest.raises(ModelTimeout, match="no turn for test/slots"):
        await adaptive.enter(loop.time() + 0.1)
    assert adaptive.in_flight == 2 and not adaptive._waiters


async def test_retry_after_pauses_this_process_calls_to_the_model():
    adaptive = Adaptive("test/pause", ceiling=4)
    loop = asyncio.get_running_loop()
    adaptive.throttled(adaptive.epoch, 0.3)
    started = loop.time()
    await adaptive.enter(started + 5)
    assert loop.time() - started >= 0.25
    with pytest.raises(ModelTimeout, match="Retry-After"):
        adaptive.throttled(adaptive.epoch, 10)
        await adaptive.enter(loop.time() + 1)


# -- settings ---------------------------------------------------------------------------------------


def test_limits_by_model_or_glob(monkeypatch):
    monkeypatch.setenv("FRUGAL_LIMITS", json.dumps({"openai/gpt-4o-mini": {"rpm": 600, "tpm": 200000}, "openai/*": {"rpm": 60}}))
    settings = get_settings()
    assert limit_for(settings, "openai/gpt-4o-mini").tpm == 200000  # type: ignore[union-attr]
    assert limit_for(settings, "openai/gpt-4o").rpm == 60  # type: ignore[union-attr]
    assert limit_for(settings, "anthropic/claude") is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("{nope", "FRUGAL_LIMITS is not JSON"),
        ("[1]", "must be a JSON object"),
        ('{"openai/m": {"rpm": -1}}', r"FRUGAL_LIMITS\['openai/m'\]: rpm: "),
        ('{"openai/m": {"rps": 10}}', r"rps: Extra inputs.*known keys: rpm, tpm, burst, concurrency"),
    ],
)
def test_bad_limits_say_what_to_fix(monkeypatch, value, says):
    monkeypatch.setenv("FRUGAL_LIMITS", value)
    with pytest.raises(ConfigError, match=says):
        get_settings().limits.table()
