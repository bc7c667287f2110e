"""The semantic cache end to end, on both stores (embedded SQLite and Redis 8 vector sets):
exact before semantic, every guard's near-miss answered by the model, a store that is down or
cannot do vector search still answers, groups, TTLs, tenant namespaces, purges."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from flows import ledger
from flows.cli.main import main as frugal
from flows.ledger.report import summarise
from flows.ledger.writer import WRITER
from flows.orchestration.flow import run_inline
from tasks.core.completion import Usage
from tasks.core.records import ModelAnswer
from tasks.core.settings import CacheSettings
from tasks.embedders import bundled_embedder, forget_remembered
from tasks.semantic.embedding import embed
from tasks.semantic.normalise import text_key
from tasks.steps import cache as cache_step
from tasks.steps.cache import LookupRequest, Semantic, StoreRequest, lookup, store
from tasks.steps.semantic_verify import Verify
from tasks.stores.semantic_index import open_index
from tasks.stores.semantic_sqlite import SqliteIndex
from tests.peers.redis8 import start_redis8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis8() -> Iterator[str]:
    server, url = start_redis8()
    yield url
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(params=["sqlite", "redis8"])
def store_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "redis8":
        monkeypatch.setenv("FRUGAL_CACHE_URL", request.getfixturevalue("redis8"))
    yield str(request.param)
    WRITER.flush(timeout=5)  # the test's cost entries are written while its store runs


async def ask(prompt: str, **inputs: object) -> dict:
    result = await run_inline("answer", {"prompt": prompt, **inputs})
    return result.output


def answers_with(peer, text: str = "answer") -> None:  # type: ignore[no-untyped-def]
    peer.responder = lambda protocol, body: text


# -- the answer pipeline -----------------------------------------------------------------


async def test_exact_first_then_a_paraphrase_is_served_by_meaning(store_kind, peer):
    answers_with(peer, "Open Settings, then Security, then Reset password.")
    first = await ask("How do I reset my password?")
    assert first["cache"] == "miss" and peer.count() == 1
    again = await ask("How do I reset my password?")
    assert (again["cache"], again["similarity"], again["matched_key"]) == ("hit", None, None)
    reworded = await ask("What should I do to reset my password?")
    assert reworded["cache"] == "semantic"
    assert reworded["similarity"] >= 0.78
    assert reworded["matched_key"] and len(reworded["matched_key"]) == 64
    assert reworded["text"] == first["text"] and reworded["cost"] == 0
    assert peer.count() == 1  # one model call for three requests
    spaced = await ask("  How do I  reset my password ")  # spaces and edge punctuation: not the exact key
    assert spaced["cache"] == "semantic" and spaced["similarity"] >= 0.9


async def test_a_miss_embeds_its_prompt_once_for_the_cache_and_the_router(store_kind, peer):
    answers_with(peer, "40 %.")
    encoder = bundled_embedder()
    prompt = (  # rules would send it small (31 words); the learned router sends it large
        f"Ein Händler ({uuid.uuid4().hex[:6]}) kauft 120 Äpfel zu 0,30 € und verkauft 3/4 davon zu 0,50 €, den Rest zu "
        "0,20 €. Wie hoch ist sein Gewinn in Prozent? Rechne Schritt für Schritt."
    )  # a text the process's memo has not seen
    calls, texts = encoder.calls, encoder.texts
    first = await ask(prompt)
    assert (first["cache"], first["route"]) == ("miss", "large") and peer.count("/v1/chat/completions") == 1
    assert (encoder.calls - calls, encoder.texts - texts) == (1, 1)  # look-up, router and store: one encoder call
    calls = encoder.calls
    reworded = await ask(prompt.replace("Rechne Schritt", "Rechne bitte Schritt"))
    assert reworded["cache"] == "semantic" and encoder.calls - calls == 1  # a semantic hit: its look-up's call only


@pytest.mark.parametrize(
    ("cached", "variant", "answer"),
    [
        ("How do I reset my password?", "HOW DO I RESET MY PASSWORD", "Open Settings, then Security."),
        ("Was ist die Hauptstadt von Österreich?", "was ist die hauptstadt von österreich", "Die Hauptstadt ist Wien."),
        ("¿Cómo cambio mi contraseña?", "  ¿CÓMO  CAMBIO MI CONTRASEÑA?  ", "Abre Ajustes y luego Seguridad."),
    ],
)
async def test_the_same_text_once_normalised_is_served_without_an_embedding(cached, variant, answer, store_kind, peer):
    answers_with(peer, answer)  # in the prompt's language: the answer check accepts it, so it is cached
    forget_remembered()  # no vector from an earlier test: an embedding would be an encoder call
    encoder = bundled_embedder()
    first = await ask(cached)
    assert first["cache"] == "miss" and peer.count() == 1
    calls = encoder.calls
    served = await ask(variant)
    assert (served["cache"], served["similarity"], served["text"]) == ("semantic", 1.0, first["text"])
    assert encoder.calls == calls and peer.count() == 1  # no encoder call, no model call


@pytest.mark.parametrize(
    ("cached", "near_miss"),
    [
        ("Convert 5 km to miles", "Convert 50 km to miles"),  # number
        ("How much is 20 EUR in dollars?", "How much is 20 GBP in dollars?"),  # unit
        ("Which foods are safe for dogs?", "Which foods are not safe for dogs?"),  # negation
        ("What is the capital of Austria?", "What is the capital of Australia?"),  # entity
        ("What happened on 4 July?", "What happened on 4 June?"),  # date
        ("Which is larger, 2^10 or 10^3?", "Which is smaller, 2^10 or 10^3?"),  # comparison
        ("Wie komme ich vom Flughafen zum Marienplatz?", "Wie komme ich vom Marienplatz zum Flughafen?"),  # order
        ("In Python, how do I reverse a list?", "In Python, how do I sort a list?"),  # intent
        ("What is the capital of France?", "Quelle est la capitale de la France ?"),  # language
    ],
)
async def test_each_guard_sends_its_near_miss_to_the_model(cached, near_miss, store_kind, peer):
    answers_with(peer)
    assert (await ask(cached))["cache"] == "miss"
    result = await ask(near_miss)
    assert result["cache"] == "miss"
    assert peer.count() == 2  # the near-miss was answered by a model, not from the cache


async def test_a_refused_candidate_says_which_guard_refused_it(store_kind):
    kept = ModelAnswer(text="Vienna", model="m", tier="large", usage=Usage(input_tokens=1, output_tokens=1))
    cached = Semantic(text="What is the capital of Austria?", group="g")
    assert (await store(StoreRequest(key="a" * 64, answer=kept, semantic=cached))).indexed
    near = await lookup(LookupRequest(key="b" * 64, semantic=Semantic(text="What is the capital of Australia?", group="g")))
    assert (near.hit, near.cache, near.refused) == (False, "miss", "entity")
    assert near.similarity is not None and near.similarity >= 0.75
    same = await lookup(LookupRequest(key="c" * 64, semantic=Semantic(text="Tell me the capital of Austria", group="g")))
    assert (same.cache, same.matched_key, same.answer.text if same.answer else None) == ("semantic", "a" * 64, "Vienna")


async def test_different_parameters_never_match(store_kind, peer):
    answers_with(peer)
    await ask("How do I reset my password?", max_tokens=100)
    assert (await ask("What should I do to reset my password?", max_tokens=200))["cache"] == "miss"
    assert (await ask("What should I do to reset my password?", system="Answer in French."))["cache"] == "miss"
    assert peer.count() == 3  # no call for it
    assert (await ask("What should I do to reset my password?", max_tokens=100))["cache"] == "semantic"


async def test_temperature_or_exact_mode_never_use_it(store_kind, peer):
    answers_with(peer)
    await ask("How do I reset my password?")
    assert (await ask("What should I do to reset my password?", cache="exact"))["cache"] == "miss"
    await ask("How do I reset my password?", temperature=0.7)
    assert (await ask("What should I do to reset my password?", temperature=0.7))["cache"] == "miss"
    assert peer.count() == 4


async def test_tenant_namespaces_never_see_each_other(store_kind, peer):
    answers_with(peer, "for tenant a")
    await ask("How do I reset my password?", namespace="tenant-a")
    answers_with(peer, "for tenant b")
    other = await ask("What should I do to reset my password?", namespace="tenant-b")
    assert (other["cache"], other["text"]) == ("miss", "for tenant b")
    same = await ask("What should I do to reset my password?", namespace="tenant-a")
    assert (same["cache"], same["text"]) == ("semantic", "for tenant a")


async def test_a_vector_store_that_is_down_still_answers(peer, monkeypatch, caplog):
    monkeypatch.setenv("FRUGAL_CACHE_URL", f"redis://127.0.0.1:{_free_port()}/0")
    answers_with(peer, "four")
    with caplog.at_level(logging.WARNING):
        result = await ask("What is 2+2?")
    assert (result["text"], result["cache"]) == ("four", "error")
    assert peer.count() == 1
    assert "prompt cache unavailable" in caplog.text


async def test_an_embedded_index_that_cannot_open_still_answers(peer, tmp_path, monkeypatch, caplog):
    """The exact cache works; the semantic file cannot be opened (here: a folder in its place)."""
    monkeypatch.setenv("FRUGAL_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(cache_step, "_warned", set())
    (tmp_path / "semantic.sqlite3").mkdir()
    answers_with(peer, "four")
    with caplog.at_level(logging.WARNING):
        first = await ask("What is 2+2?")
        again = await ask("What is 2+2?")  # the exact cache still serves
        reworded = await ask("How much is 2+2?")
    assert (first["text"], first["cache"]) == ("four", "error")
    assert (again["cache"], reworded["cache"], reworded["text"]) == ("hit", "error", "four")
    assert peer.count() == 2
    assert "semantic cache unavailable" in caplog.text


@pytest.mark.slow
async def test_a_redis8_that_stalls_or_dies_mid_run_still_answers(peer, monkeypatch, caplog):
    server, url = start_redis8()
    try:
        monkeypatch.setenv("FRUGAL_CACHE_URL", url)
        monkeypatch.setenv("FRUGAL_CACHE_TIMEOUT", "0.3")
        monkeypatch.setattr(cache_step, "_warned", set())
        answers_with(peer, "Open Settings.")
        assert (await ask("How do I reset my password?"))["cache"] == "miss"
        assert (await ask("What should I do to reset my password?"))["cache"] == "semantic"
        server.send_signal(signal.SIGSTOP)  # slow: no reply within the timeout
        try:
            with caplog.at_level(logging.WARNING):
                stalled = await ask("Can you tell me how to reset my password?")
        finally:
            server.send_signal(signal.SIGCONT)
        assert (stalled["cache"], stalled["text"]) == ("error", "Open Settings.")
        assert (await ask("Can you tell me how to reset my password?"))["cache"] == "semantic"  # back
        server.kill()  # down
        server.wait(timeout=10)
        died = await ask("Please tell me how to reset my password")
        assert (died["cache"], died["text"]) == ("error", "Open Settings.")
        assert peer.count() == 3  # the first request, and one per outage: each answered by the model
        assert "prompt cache unavailable" in caplog.text
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


async def test_a_redis_without_vector_sets_matches_exactly(redis_cache, peer, caplog, monkeypatch):
    """Debian's Redis 7: exact entries work; the semantic cache is off, said once in the log."""
    if int(redis_cache.info()["redis_version"].split(".")[0]) >= 8:
        pytest.skip("this Redis has vector sets")
    monkeypatch.setattr(cache_step, "_warned", set())
    answers_with(peer)
    with caplog.at_level(logging.WARNING):
        first = await ask("How do I reset my password?")
        again = await ask("How do I reset my password?")
        reworded = await ask("What should I do to reset my password?")
    assert (first["cache"], again["cache"], reworded["cache"], reworded["text"]) == ("miss", "hit", "miss", "answer")
    assert peer.count() == 2
    assert caplog.text.count("semantic cache off, exact match only") == 1
    assert "redis:8" in caplog.text


async def test_ledger_counts_semantic_hits_apart(peer):
    answers_with(peer)
    await ask("How do I reset my password?")
    await ask("How do I reset my password?")
    result = await run_inline("answer", {"prompt": "What should I do to reset my password?"})
    assert result.output["cache"] == "semantic"
    assert result.account().startswith("cache=semantic")
    entries = ledger.read_entries()
    assert [e.cache for e in entries] == ["miss", "hit", "semantic"]
    groups, total = summarise(entries, "route")
    assert (groups["cache hit"].hits, groups["semantic hit"].hits, total.hits) == (1, 1, 2)


# -- the stores, behind one interface ------------------------------------------------------


async def _vector(text: str) -> np.ndarray:
    return (await embed([text]))[0]


async def test_index_finds_replaces_and_removes(store_kind):
    index = open_index()
    vector = await _vector("How do I reset my password?")
    await index.add("ns", "g1", "k1", "How do I reset my password?", vector, 60)
    await index.add("ns", "g1", "k2", "How do I cancel my subscription?", await _vector("How do I cancel my subscription?"), 60)
    await index.add("ns", "g2", "k3", "How do I reset my password?", vector, 60)
    near = await index.nearest("ns", "g1", await _vector("What should I do to reset my password?"), 2)
    assert [n.key for n in near] == ["k1", "k2"]
    assert near[0].text == "How do I reset my password?" and 0.75 <= near[0].similarity <= 1.0001
    exact = await index.nearest("ns", "g1", vector, 1)
    assert exact[0].similarity == pytest.approx(1.0, abs=1e-4)
    await index.add("ns", "g1", "k1", "How do I reset my PIN?", await _vector("How do I reset my PIN?"), 60)  # replaced
    assert [n.text for n in await index.nearest("ns", "g1", vector, 3) if n.key == "k1"] == ["How do I reset my PIN?"]
    assert await index.nearest("other", "g1", vector, 3) == []
    entries = await index.entries("ns")
    assert sorted((e.group, e.key) for e in entries) == [("g1", "k1"), ("g1", "k2"), ("g2", "k3")]
    assert await index.remove([e for e in entries if e.key == "k2"]) == 1
    assert [n.key for n in await index.nearest("ns", "g1", vector, 3)] == ["k1"]


async def test_index_similarities_are_the_full_vectors_cosines(store_kind):
    """Redis searches projected vectors: what it returns is still ranked and scored on the full ones."""
    index = open_index()
    texts = [
        "How do I reset my password?",
        "How do I reset my PIN?",
        "How do I change my password?",
        "Where do I reset my router?",
        "Comment réinitialiser mon mot de passe ?",
        "How do I cancel my subscription?",
    ]
    vectors = [await _vector(t) for t in texts]
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        await index.add("ns", "g", f"k{i}", text, vector, 60)
    query = await _vector("What should I do to reset my password?")
    exact = sorted(((float(v @ query), f"k{i}") for i, v in enumerate(vectors)), reverse=True)
    near = await index.nearest("ns", "g", query, 4)
    assert [n.key for n in near] == [key for _, key in exact[:4]]
    for n, (cosine, _) in zip(near, exact, strict=False):
        assert n.similarity == pytest.approx(cosine, abs=0.002)
    if store_kind == "redis8":  # in Redis' main thread (NOTHREAD), not on its search threads: the same
        main_thread = open_index(CacheSettings(semantic_search_threads=False))
        found = await main_thread.nearest("ns", "g", query, 4)
        assert [(n.key, n.similarity) for n in found] == [(n.key, n.similarity) for n in near]


async def test_index_finds_the_same_text_once_normalised(store_kind):
    index = open_index()
    text = "How do I reset my password?"
    await index.add("ns", "g", "k1", text, await _vector(text), 60, text_key(text))
    twin = await index.same_text("ns", "g", text_key("  how do I RESET my password"))
    assert twin is not None and (twin.key, twin.text, twin.similarity) == ("k1", text, 1.0)
    assert await index.same_text("other", "g", text_key(text)) is None  # namespaces and groups apart
    assert await index.same_text("ns", "g2", text_key(text)) is None
    assert await index.same_text("ns", "g", text_key("How do I reset my PIN?")) is None
    assert [e.text_key for e in await index.entries("ns")] == [text_key(text)]
    assert await index.remove(await index.entries("ns")) == 1
    assert await index.same_text("ns", "g", text_key(text)) is None  # purged with its entry
    await index.add("ns", "g", "short", text, await _vector(text), 1, text_key(text))
    assert await index.same_text("ns", "g", text_key(text)) is not None
    deadline = time.monotonic() + 10
    while await index.same_text("ns", "g", text_key(text)) is not None:
        assert time.monotonic() < deadline, "an expired entry is still found by its text"
        await asyncio.sleep(0.2)


async def test_on_redis_the_exact_key_and_the_normalised_texts_entry_are_one_read(redis8):
    # without leases: with them, a run of misses reads the exact key in a script that also takes its lease
    settings = CacheSettings(url=redis8, lease_seconds=0)
    server = redis.Redis.from_url(redis8)
    semantic = Semantic(text=f"How do I reset my router {uuid.uuid4().hex[:6]}?", group="g" * 64)
    await lookup(LookupRequest(key="a" * 64, semantic=semantic), settings)  # the index is asked once whether it has vector sets
    server.config_resetstat()
    missed = await lookup(LookupRequest(key="b" * 64, semantic=semantic), settings)
    assert missed.cache == "miss"
    calls = {name: stats["calls"] for name, stats in server.info("commandstats").items()}
    server.close()
    # one MGET of both keys, no GET; then the search by meaning (the text is new to the group)
    assert (calls.get("cmdstat_mget"), calls.get("cmdstat_get"), calls.get("cmdstat_VSIM")) == (1, None, 1)


async def test_index_entries_expire(store_kind):
    index = open_index()
    vector = await _vector("How do I reset my password?")
    await index.add("ns", "g", "short", "How do I reset my password?", vector, 1)
    await index.add("ns", "g", "long", "How can I reset my password?", await _vector("How can I reset my password?"), 60)
    assert {n.key for n in await index.nearest("ns", "g", vector, 5)} == {"short", "long"}
    deadline = time.monotonic() + 10
    while {n.key for n in await index.nearest("ns", "g", vector, 5)} != {"long"}:
        assert time.monotonic() < deadline, "an expired entry is still served"
        await asyncio.sleep(0.2)


async def test_answers_expire_with_the_exact_cache_ttl(store_kind, peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_CACHE_TTL", "1")
    answers_with(peer)
    await ask("How do I reset my password?")
    started = time.monotonic()
    reworded = await ask("What should I do to reset my password?")
    if time.monotonic() - started < 0.9:  # a slow machine may have let it expire already
        assert reworded["cache"] == "semantic"
    await asyncio.sleep(1.1)
    assert (await ask("How can I reset my password?"))["cache"] == "miss"


async def test_sqlite_index_sees_other_processes_adds_and_removals(tmp_path):
    """Two handles on one file (as two processes): each sees the other's adds and removals."""
    path = tmp_path / "semantic.sqlite3"
    one, two = SqliteIndex(path, "p"), SqliteIndex(path, "p")
    vector = await _vector("How do I reset my password?")
    assert await two.nearest("ns", "g", vector, 1) == []
    await one.add("ns", "g", "k", "How do I reset my password?", vector, 60)
    assert [n.key for n in await two.nearest("ns", "g", vector, 1)] == ["k"]
    await one.remove(await one.entries("ns"))
    assert await two.nearest("ns", "g", vector, 1) == []


async def test_an_index_file_from_before_text_keys_still_works(tmp_path):
    import sqlite3

    path = tmp_path / "semantic.sqlite3"
    with sqlite3.connect(path) as db:  # the table as it was before `text_key`
        db.execute(
            "CREATE TABLE prompts (id INTEGER PRIMARY KEY AUTOINCREMENT, prefix TEXT NOT NULL, namespace TEXT NOT NULL, "
            "grp TEXT NOT NULL, key TEXT NOT NULL, text TEXT NOT NULL, vector BLOB NOT NULL, created_at REAL NOT NULL, "
            "expires_at REAL NOT NULL, UNIQUE (prefix, namespace, grp, key))"
        )
        old = "How do I reset my password?"
        blob = (await _vector(old)).astype(np.float32).tobytes()
        db.execute(
            "INSERT INTO prompts (prefix, namespace, grp, key, text, vector, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("p", "ns", "g", "old", old, blob, time.time(), time.time() + 60),
        )
    index = SqliteIndex(path, "p")
    assert [n.key for n in await index.nearest("ns", "g", await _vector(old), 1)] == ["old"]
    assert await index.same_text("ns", "g", text_key(old)) is None  # indexed without its text's key: found by meaning only
    new = "How do I cancel my subscription?"
    await index.add("ns", "g", "new", new, await _vector(new), 60, text_key(new))
    assert (await index.same_text("ns", "g", text_key(new.upper()))).key == "new"  # type: ignore[union-attr]


# -- purges ------------------------------------------------------------------------------


async def test_purge_by_namespace_removes_exact_and_semantic_entries(store_kind, peer, capsys):
    answers_with(peer)
    await ask("How do I reset my password?", namespace="gone")
    await ask("How do I reset my password?", namespace="kept")
    assert await asyncio.to_thread(frugal, ["cache", "purge", "--namespace", "gone"]) == 0
    assert "purged 1 cached answer(s) and 1 semantic index entry" in capsys.readouterr().out
    assert (await ask("How do I reset my password?", namespace="gone"))["cache"] == "miss"
    assert (await ask("How can I reset my password?", namespace="kept"))["cache"] == "semantic"


async def test_purge_a_prompt_and_its_neighbours(store_kind, peer, capsys):
    answers_with(peer)
    await ask("How do I reset my password?")
    await ask("Can you tell me how to reset my password?", max_tokens=100)  # another group: a neighbour across groups
    await ask("How do I cancel my subscription?")
    assert await asyncio.to_thread(frugal, ["cache", "purge", "--prompt", "how do I reset my password"]) == 0
    assert "purged 1 cached answer(s)" in capsys.readouterr().out
    assert await asyncio.to_thread(frugal, ["cache", "purge", "--prompt", "how do I reset my password", "--neighbours"]) == 0
    assert "purged 1 cached answer(s)" in capsys.readouterr().out
    calls = peer.count()
    assert (await ask("Can you tell me how to reset my password?", max_tokens=100))["cache"] == "miss"
    assert (await ask("How do I cancel my subscription?"))["cache"] == "hit"
    assert peer.count() == calls + 1


async def test_purge_says_when_a_prompt_is_not_indexed(store_kind, peer, capsys):
    """An answer stored with `cache: exact` is not in the semantic index: --prompt cannot find it and says
    how to purge it instead, rather than a bare `purged 0`."""
    answers_with(peer)
    await ask("My account number is 12345678, what is my balance?", cache="exact")
    assert (
        await asyncio.to_thread(frugal, ["cache", "purge", "--prompt", "My account number is 12345678, what is my balance?"]) == 0
    )
    captured = capsys.readouterr()
    assert "purged 0 cached answer(s)" in captured.out and "purge those with --namespace" in captured.err


async def test_purge_older_than(store_kind, peer, capsys):
    answers_with(peer)
    await ask("How do I reset my password?")
    assert await asyncio.to_thread(frugal, ["cache", "purge", "--older-than", "1d"]) == 0
    assert "purged 0 cached answer(s) and 0 semantic" in capsys.readouterr().out
    assert await asyncio.to_thread(frugal, ["cache", "purge", "--older-than", "0m"]) == 0
    assert "purged 1 cached answer(s) and 1 semantic index entry" in capsys.readouterr().out


def test_purge_needs_a_selection(capsys):
    assert frugal(["cache", "purge"]) != 0
    assert "say what to purge" in capsys.readouterr().err
    assert os.environ.get("FRUGAL_CACHE_URL") is None


# -- the grey-zone verifier ----------------------------------------------------------------


async def test_the_verifier_confirms_grey_zone_candidates_with_the_small_model(store_kind, peer):
    kept = ModelAnswer(text="Settings > Security", model="m", tier="large", usage=Usage(input_tokens=1, output_tokens=1))
    assert (
        await store(StoreRequest(key="a" * 64, answer=kept, semantic=Semantic(text="How do I reset my password?", group="g")))
    ).indexed
    reworded = "What should I do to reset my password?"  # each look-up its own key: a missed key's lease is held
    band = Verify(between=(0.75, 1.0001), min_probability=0.8)

    peer.responder = lambda protocol, body: '{"label": "different"}'
    refused = await lookup(LookupRequest(key="b" * 64, semantic=Semantic(text=reworded, group="g", verify=band)))
    assert (refused.cache, refused.refused, refused.verified) == ("miss", "verifier", 0.0)
    assert peer.count() == 1
    asked = str(peer.requests[-1].json)
    assert "How do I reset my password?" in asked and reworded in asked and "same" in asked
    peer.responder = lambda protocol, body: '{"label": "same"}'
    served = await lookup(LookupRequest(key="c" * 64, semantic=Semantic(text=reworded, group="g", verify=band)))
    assert (served.cache, served.matched_key) == ("semantic", "a" * 64)
    assert served.verified is not None and served.verified >= 0.8
    assert peer.count() == 2
    peer.token_logprob = -1.0  # an unsure "same": below the bar
    unsure = await lookup(LookupRequest(key="d" * 64, semantic=Semantic(text=reworded, group="g", verify=band)))
    assert (unsure.cache, unsure.refused) == ("miss", "verifier")
    assert unsure.verified is not None and 0 < unsure.verified < 0.8
    above = Verify(between=(0.75, 0.76))  # the candidate is above the band: served without asking
    outside = await lookup(LookupRequest(key="e" * 64, semantic=Semantic(text=reworded, group="g", verify=above)))
    assert (outside.cache, outside.verified) == ("semantic", None)
    assert peer.count() == 3  # no call for it


async def test_the_ledger_records_the_verifiers_calls_as_spending_not_savings(peer, tmp_path):
    """A pipeline with `verify:` on: each "same question?" call is a ledger entry (cache `verify`) whose
    cost counts against the savings, whether it confirmed the hit or refused it."""
    from flows.language.catalog import PROJECT_DIR

    spec = (PROJECT_DIR / "deployments" / "answer.yaml").read_text()
    marker = next(line for line in spec.splitlines(keepends=True) if line.strip().startswith("threshold:"))
    verified = tmp_path / "answer-verified.yaml"
    verified.write_text(spec.replace(marker, marker + "        verify: {between: [0.5, 1.0001], min_probability: 0.8}\n"))
    answers_with(peer, "Open Settings, then Security.")
    await run_inline(str(verified), {"prompt": "How do I reset my password?"})
    peer.responder = lambda protocol, body: '{"label": "same"}' if "same thing" in json.dumps(body) else "A new answer."
    served = await run_inline(str(verified), {"prompt": "What should I do to reset my password?"})
    assert served.output["cache"] == "semantic"
    peer.responder = lambda protocol, body: '{"label": "different"}' if "same thing" in json.dumps(body) else "A new answer."
    refused = await run_inline(str(verified), {"prompt": "What must I do to reset my password?"})
    assert refused.output["cache"] == "miss"

    entries = ledger.read_entries()
    verifications = [e for e in entries if e.cache == "verify"]
    assert [e.node for e in verifications] == ["lookup.verify", "lookup.verify"]
    assert all(e.kind == "call" and e.route == "small" and e.input_tokens > 0 for e in verifications)
    assert all(e.counterfactual == 0 for e in verifications)  # never a saving of its own
    assert [e.cache for e in entries if e.kind == "hit"] == ["semantic"]


def test_the_verifier_band_must_make_sense():
    with pytest.raises(ValueError, match="low < high"):
        Verify(between=(0.9, 0.8))
