"""The prompt cache on real Redis and on the embedded SQLite store: hits, TTLs, namespaces, failing open."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from flows.orchestration.flow import run_inline
from tasks.core.completion import Usage
from tasks.core.errors import ConfigError
from tasks.core.records import CACHE_VALUE_VERSION, ModelAnswer
from tasks.core.settings import get_settings
from tasks.steps.cache import LookupRequest, StoreRequest, cache_key, lookup, store
from tasks.stores.redis_store import PATIENCE
from tests.conftest import API_KEY, REDIS_URL

PROJECT = Path(__file__).resolve().parents[3]

KEY = "ab" * 32


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Backend:
    """Raw access to what the cache steps wrote, whichever store is configured."""

    def __init__(self, name: str, client: Any) -> None:
        self.name = name
        self.client = client

    def full_key(self, key: str = KEY, namespace: str = "default") -> str:
        return cache_key(get_settings().cache.prefix, namespace, key)

    def raw(self, key: str = KEY, namespace: str = "default") -> bytes | None:
        full = self.full_key(key, namespace)
        if self.name == "redis":
            return self.client.get(full)
        path = Path(os.environ["FRUGAL_DATA_DIR"]) / "cache.sqlite3"
        if not path.exists():
            return None
        with sqlite3.connect(path) as db:
            row = db.execute("SELECT value FROM answers WHERE key = ?", (full,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_raw(self, value: bytes, key: str = KEY, namespace: str = "default") -> None:
        full = self.full_key(key, namespace)
        if self.name == "redis":
            self.client.set(full, value, ex=60)
            return
        path = Path(os.environ["FRUGAL_DATA_DIR"]) / "cache.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL NOT NULL)")
            db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, strftime('%s','now') + 60)", (full, value))


@pytest.fixture(params=["redis", "sqlite"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "redis":
        return Backend("redis", request.getfixturevalue("redis_cache"))
    assert not os.environ.get("FRUGAL_CACHE_URL")
    return Backend("sqlite", None)


def answer(text: str = "Paris", **extra: Any) -> ModelAnswer:
    return ModelAnswer(text=text, model="openai/gpt-test", tier="large", usage=Usage(input_tokens=7, output_tokens=1), **extra)


async def test_miss_store_hit(backend):
    first = await lookup(LookupRequest(key=KEY))
    assert (first.hit, first.cache, first.answer) == (False, "miss", None)

    stored = await store(StoreRequest(key=KEY, answer=answer()))
    assert (stored.stored, stored.cache) == (True, "stored")

    second = await lookup(LookupRequest(key=KEY))
    assert (second.hit, second.cache) == (True, "hit")
    assert second.answer is not None
    assert (second.answer.text, second.answer.model, second.answer.route) == ("Paris", "openai/gpt-test", "large")
    assert second.answer.usage == Usage(input_tokens=7, output_tokens=1)
    assert second.answer.v == CACHE_VALUE_VERSION

    raw = backend.raw()
    assert raw is not None
    value = json.loads(raw)
    assert value["v"] == 1
    assert value["text"] == "Paris" and value["route"] == "large"
    assert {"usage", "created_at", "model"} <= set(value)


async def test_stored_value_never_holds_the_api_key(backend, peer):
    prompt = "Design a plan step by step for a migration."  # complex: the keyed large model answers
    result = await run_inline("answer", {"prompt": prompt})
    assert result.output["route"] == "large"
    assert peer.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"
    again = await run_inline("answer", {"prompt": prompt})
    assert again.output["cache"] == "hit"
    if backend.name == "redis":
        answers = backend.client.scan_iter(f"{get_settings().cache.prefix}:*", _type="STRING")  # not the ledger's zset
        values = [backend.client.get(k) for k in answers]
    else:
        with sqlite3.connect(Path(os.environ["FRUGAL_DATA_DIR"]) / "cache.sqlite3") as db:
            values = [bytes(row[0]) for row in db.execute("SELECT value FROM answers")]
    assert len(values) == 1
    assert json.loads(values[0])["v"] == 1
    assert API_KEY.encode() not in values[0]
    assert b"sk-" not in values[0]


async def test_redis_ttl_is_the_one_given(redis_cache):
    backend = Backend("redis", redis_cache)
    await store(StoreRequest(key=KEY, answer=answer(), ttl=1234))
    assert 1230 <= redis_cache.ttl(backend.full_key()) <= 1234


async def test_redis_default_ttl_is_the_setting(redis_cache, monkeypatch):
    monkeypatch.setenv("FRUGAL_CACHE_TTL", "777")
    await store(StoreRequest(key=KEY, answer=answer()))
    assert 770 <= redis_cache.ttl(Backend("redis", redis_cache).full_key()) <= 777


async def test_ttl_expires(backend):
    await store(StoreRequest(key=KEY, answer=answer(), ttl=1))
    assert (await lookup(LookupRequest(key=KEY))).hit
    await _until_async(lambda: lookup(LookupRequest(key=KEY)), lambda found: (found.hit, found.cache) == (False, "miss"))


async def test_namespaces_isolate_keys(backend):
    await store(StoreRequest(key=KEY, namespace="tenant-a", answer=answer("for a")))
    await store(StoreRequest(key=KEY, namespace="tenant-b", answer=answer("for b")))
    assert (await lookup(LookupRequest(key=KEY, namespace="tenant-c"))).cache == "miss"
    assert (await lookup(LookupRequest(key=KEY))).cache == "miss"
    a = await lookup(LookupRequest(key=KEY, namespace="tenant-a"))
    b = await lookup(LookupRequest(key=KEY, namespace="tenant-b"))
    assert a.answer is not None and a.answer.text == "for a"
    assert b.answer is not None and b.answer.text == "for b"


async def test_invalid_answer_is_never_stored(backend):
    bad = answer("banana", valid=False, reason="label 'banana' is not one of ['positive', 'negative']")
    result = await store(StoreRequest(key=KEY, answer=bad))
    assert (result.stored, result.cache) == (False, "skipped")
    assert result.reason is not None and "banana" in result.reason
    assert backend.raw() is None
    assert (await lookup(LookupRequest(key=KEY))).cache == "miss"


async def test_bypass_neither_reads_nor_writes(backend):
    await store(StoreRequest(key=KEY, answer=answer("kept")))
    assert (await lookup(LookupRequest(key=KEY, bypass=True))).cache == "bypass"
    result = await store(StoreRequest(key=KEY, answer=answer("not kept"), bypass=True))
    assert (result.stored, result.cache) == (False, "bypass")
    hit = await lookup(LookupRequest(key=KEY))
    assert hit.answer is not None and hit.answer.text == "kept"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"not json at all", id="garbage"),
        pytest.param(b'{"v": 1, "text": "x"}', id="incomplete"),
        pytest.param(b"\xff\xfe\x00", id="binary"),
    ],
)
async def test_corrupt_value_is_a_miss(backend, raw, caplog):
    backend.put_raw(raw)
    with caplog.at_level(logging.WARNING):
        result = await lookup(LookupRequest(key=KEY))
    assert (result.hit, result.cache, result.answer) == (False, "miss", None)
    assert "treating as a miss" in caplog.text


async def test_foreign_version_is_a_miss(backend):
    await store(StoreRequest(key=KEY, answer=answer()))
    value = json.loads(backend.raw())
    value["v"] = CACHE_VALUE_VERSION + 1
    backend.put_raw(json.dumps(value).encode())
    result = await lookup(LookupRequest(key=KEY))
    assert (result.hit, result.cache, result.answer) == (False, "miss", None)


async def test_redis_down_fails_open(monkeypatch, caplog):
    port = closed_port()
    monkeypatch.setenv("FRUGAL_CACHE_URL", f"redis://127.0.0.1:{port}/0")
    with caplog.at_level(logging.WARNING):
        found = await lookup(LookupRequest(key=KEY))
    assert (found.hit, found.cache) == (False, "error")
    assert "prompt cache unavailable" in caplog.text
    assert f"127.0.0.1:{port}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        kept = await store(StoreRequest(key=KEY, answer=answer()))
    assert (kept.stored, kept.cache) == (False, "error")
    assert kept.answer is not None and kept.answer.text == "Paris"
    assert "answer not stored" in caplog.text


async def test_redis_that_never_replies_is_a_miss_after_its_patience(monkeypatch, caplog):
    """A Redis that accepts connections and then says nothing (hung, or a black hole) is waited
    for PATIENCE x FRUGAL_CACHE_TIMEOUT, not forever, then is a logged miss; a cancelled request
    is still cancelled."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # keep the connection open, never answer

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("FRUGAL_CACHE_URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setenv("FRUGAL_CACHE_TIMEOUT", "0.03")
    try:
        for _ in range(2):  # a fresh connection, then one the pool dropped after the timeout
            with caplog.at_level(logging.WARNING):
                found = await lookup(LookupRequest(key=KEY))
            assert (found.hit, found.cache) == (False, "error")
        assert f"no reply within {0.03 * PATIENCE:g}s" in caplog.text
        pending = asyncio.ensure_future(lookup(LookupRequest(key=KEY)))
        await _until(lambda: len(held) >= 3)  # the third look-up is waiting on its connection
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
    finally:
        for writer in held:
            writer.close()
        server.close()


async def _until_async(call: Any, done: Any, seconds: float = 30.0) -> None:
    """Poll `await call()` until `done(result)`, within a generous deadline."""
    deadline = time.monotonic() + seconds
    while not done(await call()):
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.05)


async def _until(check: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.01)


async def test_a_slow_reply_is_a_hit_with_a_warning_not_a_down_cache(redis_cache, monkeypatch, caplog):
    """A reply later than FRUGAL_CACHE_TIMEOUT (a busy event loop, a loaded Redis) is served as the
    hit it is, and a warning says the read was slow: it must not become a paid model call."""
    from tasks.core.settings import get_settings

    await store(StoreRequest(key=KEY, answer=answer()))  # stored through the real Redis
    host, port = "127.0.0.1", int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    release = asyncio.Event()
    streams: list[asyncio.StreamWriter] = []

    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay to the real Redis, holding each reply until `release` is set."""
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        streams.extend((writer, upstream_writer))

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, hold: bool) -> None:
            while data := await source.read(65536):
                if hold:
                    await release.wait()
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, upstream_writer, False), pump(upstream_reader, writer, True), return_exceptions=True)

    relay = await asyncio.start_server(late, host, 0)
    relay_port = relay.sockets[0].getsockname()[1]
    monkeypatch.setenv("FRUGAL_CACHE_URL", REDIS_URL.replace(f":{port}/", f":{relay_port}/"))
    monkeypatch.setenv("FRUGAL_CACHE_TIMEOUT", "0.05")
    try:
        timeout = get_settings().cache.timeout
        pending = asyncio.ensure_future(lookup(LookupRequest(key=KEY)))
        await asyncio.sleep(
            timeout * 2
        )  # the reply is held past FRUGAL_CACHE_TIMEOUT (within its patience): the slowness under test
        release.set()
        with caplog.at_level(logging.WARNING):
            found = await pending
        assert (found.hit, found.cache) == (True, "hit")
        assert "slow read" in caplog.text
    finally:
        for stream in streams:
            stream.close()
        relay.close()
        await relay.wait_closed()


async def test_redis_down_still_answers(peer, monkeypatch, caplog):
    monkeypatch.setenv("FRUGAL_CACHE_URL", f"redis://127.0.0.1:{closed_port()}/0")
    peer.responder = lambda protocol, body: "four"
    with caplog.at_level(logging.WARNING):
        result = await run_inline("answer", {"prompt": "What is 2+2?"})
    assert result.output["text"] == "four"
    assert result.output["cache"] == "error"
    assert peer.count() == 1
    assert "prompt cache unavailable" in caplog.text


async def test_unknown_cache_url_is_a_config_error(monkeypatch):
    monkeypatch.setenv("FRUGAL_CACHE_URL", "nonsense://x")
    with pytest.raises(ConfigError, match="FRUGAL_CACHE_URL"):
        await lookup(LookupRequest(key=KEY))
    with pytest.raises(ConfigError, match="FRUGAL_CACHE_URL"):
        await store(StoreRequest(key=KEY, answer=answer()))


def test_clients_of_closed_event_loops_are_let_go(redis_cache):
    """Many short event loops (a sync flow's tasks, a naive .map) must not keep their loops,
    sockets and clients: each client refers to its loop, so a weak mapping alone would. In a
    process of its own: pytest's record of ResourceWarnings would keep the sockets alive."""
    script = textwrap.dedent(
        """
        import asyncio, gc, os
        from tasks.steps.cache import LookupRequest, lookup
        from tasks.providers import get_provider

        async def one(n):
            await lookup(LookupRequest(key=f"let-go-{n}"))  # a miss that claims its own lease
            get_provider("openai", endpoint="http://127.0.0.1:9/v1").clients.get()
            get_provider("ollama", endpoint="http://127.0.0.1:9").clients.get()

        for n in range(30):
            asyncio.run(one(n))
        gc.collect()
        loops = sum(isinstance(o, asyncio.AbstractEventLoop) for o in gc.get_objects())
        print(loops, len(os.listdir("/proc/self/fd")))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loops, fds = map(int, done.stdout.split())
    assert loops <= 1  # the last loop's clients are kept until another loop comes
    assert fds < 20


def test_event_loops_of_many_threads_at_once(redis_cache, monkeypatch):
    """A thread pool's tasks (Prefect's naive .map) each run a loop of their own, at the same time."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("FRUGAL_CACHE_TIMEOUT", "10")  # 32 threads fight for the GIL: no time-outs here

    def one(n: int) -> str:
        return asyncio.run(lookup(LookupRequest(key=f"threads-{n}"))).cache

    with ThreadPoolExecutor(max_workers=32) as pool:
        assert set(pool.map(one, range(1500))) == {"miss"}


async def test_lookups_in_one_turn_of_the_loop_share_one_command(redis_cache, monkeypatch):
    """A batch's look-ups in flight at once go to Redis in one MGET, on one connection, and each
    caller gets its own value (a missing key is a miss for its caller only)."""
    import uuid

    from tasks.stores import open_store

    name = f"frugal-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FRUGAL_CACHE_URL", f"{REDIS_URL}?client_name={name}")
    prefix = os.environ["FRUGAL_CACHE_PREFIX"]
    keys = [f"{prefix}:mget:{n}" for n in range(40)]
    for n, key in enumerate(keys):
        redis_cache.set(key, f"value {n}".encode())
    found = await asyncio.gather(*(open_store().get(key) for key in [*keys, f"{prefix}:mget:missing"]))
    assert found == [f"value {n}".encode() for n in range(40)] + [None]
    mine = [line for line in redis_cache.client_list() if line["name"] == name]
    assert [c["cmd"] for c in mine] == ["mget"]  # one connection, whose last command was the MGET: no GET each


async def test_a_cache_down_fails_every_lookup_of_a_shared_read(monkeypatch, caplog):
    """Look-ups that shared one MGET all fail open when Redis is down: each is a logged miss."""
    monkeypatch.setenv("FRUGAL_CACHE_URL", f"redis://127.0.0.1:{closed_port()}/0")
    found = await asyncio.gather(*(lookup(LookupRequest(key=f"{n:064x}")) for n in range(5)))
    assert [f.cache for f in found] == ["error"] * 5
    assert "prompt cache unavailable" in caplog.text
