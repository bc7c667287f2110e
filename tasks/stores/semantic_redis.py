"""Semantic index on Redis 8 Vector Sets: the production store, shared by every worker.

One vector set per (prefix, namespace, group), key ``PREFIX:semantic2:NAMESPACE:GROUP``; its
elements are request keys. Redis searches the vectors projected to 64 dimensions (``VADD REDUCE``:
a random projection Redis draws when the set is made) and quantised to 8 bits (Q8); each entry's
full 512-d vector rides along in its attributes, 8 bits a dimension, and the candidates VSIM
returns are rescored on it here, so thresholds and guards see the full vectors' cosine (at most
0.0004 from the float one on the 276 pairs of evals/semantic; the query is not quantised).

Why project: at 100k random 512-d vectors (planted neighbours at cosine 0.85 and 0.78, 300
queries each, EF 100, 2-core AMD EPYC), VSIM on the full Q8 vectors took p50 3.27 / 3.34 ms and
put the planted vector first 244 / 240 times in 300; projected to 64 and rescored, 1.68 / 1.39 ms
and 300 / 298 (to 128: 2.01 / 2.03 ms, 298 / 288). HNSW walks a 64-d graph faster and more
surely; the projection's noise only reorders the candidates, which the rescoring puts back. Sets
of the earlier layout (``PREFIX:semantic:``, full vectors) are not read: they expire with their TTL.

The prompt text and its times are JSON attributes. A query is one VSIM with the scores and
attributes (one round trip), the candidates' full vectors rescored in one product (~55 us for 8,
~100 us one at a time); expired entries are dropped here, from the attributes, rather than
with VSIM's ``FILTER ".expires_at > now"``, which evaluated every visited node's JSON and doubled
the query's time (p50 8.3 vs 3.3 ms unquantised at 20k entries, EF 100, loaded host). Each add
refreshes the set's own EXPIRE to the longest TTL of its entries; purges read and remove entries
CHUNK to a round trip. An entry's normalised text (`same_text`) is a plain key beside the set,
read through the answer store's client (`tasks.stores.redis_store`), so the look-up's exact key
and it go in one MGET. Redis before 8 has no vector sets: `available()` says so (asked once per
process), and the cache steps then match exactly only.

VSIM runs on Redis' search threads (Redis' default), or in its main thread (``NOTHREAD``) with
``FRUGAL_CACHE_SEMANTIC_SEARCH_THREADS=false``. In the main thread a search skips the hand-off to
a search thread and back, but holds every other command (the exact cache's GETs, the rate-limit
buckets, the ledger) while it runs, and searches cannot use more than one core: the threads are the
default for a Redis shared by a fleet or with cores to spare. Measured on Redis 8.2 (2-core AMD
EPYC, Redis and the clients on the same 2 cores): 100k entries, 2 x 1,000 new queries each way in
ABBA order, p50 1.15 / 1.29 ms threaded, 1.00 / 1.12 ms in the main thread; 20k entries, two client
processes of 4 and of 16 searches in flight each (a GET before each): 2,232 and 2,395 searches/s
threaded, 2,674 and 3,012 in the main thread; one search in flight in each of two processes:
1,516/s threaded, 1,403/s not. Through the whole look-up (`tasks.steps.cache`), alternated in one
process at 100k: p50 4.31 ms threaded, 4.03 ms not; in `bench_semantic.py`, which times both ways
(alternating which goes first), 1.26 vs 1.12 ms. So on a small host of its own, ``false`` saves
~0.15 ms a search.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tasks.core.errors import CacheError
from tasks.core.loops import for_loop
from tasks.stores.redis_store import _redact, redis_store
from tasks.stores.semantic_records import Entry, Neighbour

_clients: dict[asyncio.AbstractEventLoop, dict[str, aioredis.Redis]] = {}
#: per URL: whether that server has vector sets (asked once per process)
_capable: dict[str, bool] = {}
#: HNSW candidates explored per query. At 100k random vectors projected to 64-d (see above), EF 50
#: put the planted neighbour first 296 / 289 times in 300 (p50 1.06 / 0.93 ms), EF 100 300 / 298;
#: with the pairs of evals/semantic among them, EF 50 and 64 lost one pair at >= 0.78, 80 and 100 none
SEARCH_EF = 100
#: the dimensions Redis searches in (VADD REDUCE); a set keeps the projection it was made with
PROJECTED_DIMS = 64
#: entries asked beyond `count`: a few expired ones (dropped here) do not crowd out live ones, and
#: the projection's reordering is undone by rescoring them all on the full vectors
SPARE = 4
#: commands per round trip when a purge lists or removes entries
CHUNK = 500
#: the fewest candidates rescored. On the 276 pairs of evals/semantic among 100k random vectors
#: (every first prompt cached, the second asked): 5 candidates found the exact nearest of 220 of
#: the 221 pairs at >= 0.78, 8 of all 221 (16 and 32 no more; 128-d projections the same)
RESCORED = 8


def packed(vector: np.ndarray) -> str:
    """A unit vector at 8 bits a dimension (scaled to its largest component), base64: the
    attribute the candidates are rescored on."""
    vector = np.asarray(vector, dtype=np.float32)
    peak = float(np.abs(vector).max()) or 1.0
    return base64.b64encode(np.round(vector / peak * 127).astype(np.int8).tobytes()).decode("ascii")


def cosines(stored: list[str], vector: np.ndarray) -> list[float | None]:
    """The cosine of each `packed` vector with `vector` (one product for all of them), None for one
    that cannot be read."""
    rows = [_unpacked(text, vector.shape[0]) for text in stored]
    if not rows:
        return []
    matrix = np.frombuffer(b"".join(rows), dtype=np.int8).reshape(len(rows), -1).astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(vector))
    return [product / norm if norm else None for product, norm in zip((matrix @ vector).tolist(), norms.tolist(), strict=True)]


def _unpacked(text: str, dims: int) -> bytes:
    """A `packed` vector's bytes; zeros (no direction, so no cosine) if it cannot be read."""
    try:
        row = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        return bytes(dims)
    return row if len(row) == dims else bytes(dims)


def _attributes(raw: Any) -> dict[str, Any]:
    """An entry's JSON attributes; {} if it has none or they are not an object."""
    if not raw:
        return {}
    try:
        found = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _reason(exc: RedisError) -> str:
    """The error without the command's arguments: they hold prompts and vectors."""
    text = re.sub(r"\(.*\) of pipeline", "of pipeline", str(exc), flags=re.S)
    return text.split(", with args beginning with", 1)[0]


def _triples(reply: Any) -> list[tuple[Any, Any, Any]]:
    """(element, score, attributes) of a VSIM ... WITHSCORES WITHATTRIBS reply: redis-py parses it
    into {element: [score, attributes]}; a raw RESP2 reply is a flat list."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(key, *value) for key, value in reply.items()]
    return [tuple(reply[i : i + 3]) for i in range(0, len(reply), 3)]  # type: ignore[misc]


class RedisIndex:
    name = "redis"

    def __init__(self, url: str, prefix: str, timeout: float, threaded: bool = True) -> None:
        self.url, self.prefix, self.timeout = url, prefix, timeout
        self._threading = () if threaded else ("NOTHREAD",)  # see the module's docstring

    def set_key(self, namespace: str, group: str) -> str:
        return f"{self.prefix}:semantic2:{namespace}:{group}"

    def _client(self) -> aioredis.Redis:
        per_url = for_loop(_clients, asyncio.get_running_loop(), dict)
        client = per_url.get(self.url)
        if client is None:
            # a bounded pool that makes callers wait for a connection, rather than fail, under bursts
            pool = aioredis.BlockingConnectionPool.from_url(self.url, max_connections=64, timeout=self.timeout)
            client = per_url[self.url] = aioredis.Redis(connection_pool=pool, socket_connect_timeout=self.timeout)
        return client

    @contextlib.asynccontextmanager
    async def _answering(self, timeout: float) -> AsyncIterator[None]:
        """Redis' errors and a reply later than `timeout` as `CacheError`s (no command arguments: they hold prompts)."""
        try:
            async with asyncio.timeout(timeout):
                yield
        except TimeoutError as exc:
            raise CacheError(f"semantic index at {_redact(self.url)}: no reply within {timeout}s") from exc
        except RedisError as exc:
            reason = _reason(exc)
            hint = "; it needs Redis 8 (vector sets), e.g. the redis:8 image" if "unknown command" in reason.lower() else ""
            raise CacheError(f"semantic index at {_redact(self.url)} failed: {reason}{hint}") from exc

    async def _call(self, *args: Any, timeout: float | None = None) -> Any:
        async with self._answering(timeout or self.timeout):
            return await self._client().execute_command(*args)

    async def _batched(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """`commands` in pipelines of CHUNK (one round trip each, not one per command): what purges
        send, a command per entry."""
        out: list[Any] = []
        for start in range(0, len(commands), CHUNK):
            async with self._answering(max(self.timeout, 5.0)):
                pipe = self._client().pipeline(transaction=False)
                for command in commands[start : start + CHUNK]:
                    pipe.execute_command(*command)
                out.extend(await pipe.execute())
        return out

    async def available(self) -> bool:
        """Whether the server has vector sets (Redis 8); asked once per process and URL."""
        capable = _capable.get(self.url)
        if capable is None:
            try:
                await self._call("VCARD", f"{self.prefix}:semantic:probe")
                capable = True
            except CacheError as exc:
                if "unknown command" not in str(exc).lower():
                    raise  # down or slow: ask again next time
                capable = False
            _capable[self.url] = capable
        return capable

    def twin_key(self, namespace: str, group: str, text_key: str) -> str:
        return f"{self.prefix}:semantic-text:{namespace}:{group}:{text_key}"

    async def add(
        self, namespace: str, group: str, key: str, text: str, vector: np.ndarray, ttl: int, text_key: str = ""
    ) -> None:
        now = time.time()
        found = {"text": text, "created_at": now, "expires_at": now + ttl, "text_key": text_key, "vector": packed(vector)}
        attributes = json.dumps(found, ensure_ascii=False)
        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        name = self.set_key(namespace, group)
        async with self._answering(self.timeout):
            pipe = self._client().pipeline(transaction=False)  # one round trip
            projected = ("REDUCE", PROJECTED_DIMS)
            pipe.execute_command("VADD", name, *projected, "FP32", blob, key, "Q8", "CAS", "SETATTR", attributes)
            pipe.expire(name, ttl, nx=True)  # a new set; else only ever lengthened
            pipe.expire(name, ttl, gt=True)
            if text_key:
                twin = json.dumps({"key": key, "text": text}, ensure_ascii=False)
                pipe.set(self.twin_key(namespace, group, text_key), twin, ex=ttl)
            await pipe.execute()

    async def same_text(self, namespace: str, group: str, text_key: str) -> Neighbour | None:
        if not text_key:
            return None
        # through the answer store's reads of this turn of the loop: the look-up asks for its exact
        # key at the same time, and both go in one MGET (`tasks.stores.redis_store`)
        raw = await redis_store(self.url, self.timeout).get(self.twin_key(namespace, group, text_key))
        if not raw:
            return None
        try:
            found = json.loads(_text(raw))
            return Neighbour(key=str(found["key"]), text=str(found["text"]), similarity=1.0)
        except (ValueError, KeyError, TypeError):
            return None  # not ours: a miss

    async def nearest(self, namespace: str, group: str, vector: np.ndarray, count: int) -> list[Neighbour]:
        query = np.ascontiguousarray(vector, dtype=np.float32)
        reply = await self._call(
            "VSIM", self.set_key(namespace, group), "FP32", query.tobytes(), "WITHSCORES", "WITHATTRIBS",
            "COUNT", max(count + SPARE, RESCORED), "EF", max(SEARCH_EF, count + SPARE, RESCORED), *self._threading,
        )  # fmt: skip
        now = time.time()
        live = []
        for key, score, attributes in _triples(reply):
            found = _attributes(attributes)
            if float(found.get("expires_at", 0)) <= now:
                continue
            live.append((_text(key), float(score), found))
        similarities = cosines([str(found.get("vector", "")) for _, _, found in live], query)
        out = [
            # no full vector (not ours): the projected one's similarity, (1 + cos) / 2
            Neighbour(key=key, text=str(found.get("text", "")), similarity=2 * score - 1 if similarity is None else similarity)
            for (key, score, found), similarity in zip(live, similarities, strict=True)
        ]
        out.sort(key=lambda n: -n.similarity)
        return out[:count]

    async def entries(self, namespace: str | None = None) -> list[Entry]:
        pattern = f"{self.prefix}:semantic2:{namespace if namespace is not None else '*'}:*"
        out: list[Entry] = []
        cursor: Any = 0
        while True:
            cursor, names = await self._call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000, "TYPE", "vectorset")
            for raw_name in names:
                name = _text(raw_name)
                space, group = name.removeprefix(f"{self.prefix}:semantic2:").rsplit(":", 1)
                size = int(await self._call("VCARD", name))
                members = await self._call("VRANDMEMBER", name, size, timeout=max(self.timeout, 5.0)) if size else []
                found = await self._batched([("VGETATTR", name, member) for member in members])
                for member, raw in zip(members, found, strict=True):
                    attributes = json.loads(_text(raw)) if raw else {}
                    out.append(
                        Entry(
                            namespace=space,
                            group=group,
                            key=_text(member),
                            text=attributes.get("text", ""),
                            created_at=float(attributes.get("created_at", 0)),
                            expires_at=float(attributes.get("expires_at", 0)),
                            text_key=str(attributes.get("text_key", "")),
                        )
                    )
            if int(cursor) == 0:
                return out

    async def remove(self, entries: list[Entry]) -> int:
        commands: list[tuple[Any, ...]] = []
        for e in entries:
            commands.append(("VREM", self.set_key(e.namespace, e.group), e.key))
            if e.text_key:  # (another entry of the same normalised text loses it too: still found by meaning)
                commands.append(("DEL", self.twin_key(e.namespace, e.group, e.text_key)))
        replies = await self._batched(commands)
        return sum(int(reply) for command, reply in zip(commands, replies, strict=True) if command[0] == "VREM")


def redis_index(url: str, prefix: str, timeout: float, threaded: bool = True) -> RedisIndex:
    return RedisIndex(url, prefix, timeout, threaded)
