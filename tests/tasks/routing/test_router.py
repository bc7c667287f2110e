"""The learned router: deterministic training, calibration to a target, the router file, fallbacks."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from tasks.embedders import BUNDLED_ID, OllamaEmbedder, bundled_embedder
from tasks.routing import (
    PACKAGED,
    Example,
    RouterFileError,
    calibrate,
    curve,
    load_router,
    pick,
    read_examples,
    route,
    save_router,
    train,
)
from tasks.routing import router as route_module
from tasks.steps.classify import ClassifyRequest, classify

ROOT = Path(__file__).resolve().parents[3]
DATA = [ROOT / "evals/router/large.jsonl", ROOT / "evals/router/small.jsonl"]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(route_module, "_warned", set())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def synthetic(n: int, seed: int) -> list[Example]:
    """Prompts whose words say how hard they are, with noise words, half large and half small."""
    rng = np.random.default_rng(seed)
    hard, easy = ["prove", "derive", "design", "optimise"], ["label", "extract", "translate", "tag"]
    noise = [f"w{i}" for i in range(40)]
    examples = []
    for i in range(n):
        large = i % 2 == 0
        words = list(rng.choice(hard if large else easy, size=2)) + list(rng.choice(noise, size=6))
        if rng.random() < 0.15:  # some are labelled against their words: the curve is not trivial
            large = not large
        examples.append(Example(prompt=" ".join(words), label="large" if large else "small", meta={"group": f"g{i}"}))
    return examples


def test_training_is_deterministic():
    examples, _ = read_examples(DATA)
    subset = [e for e in examples if e.meta["split"] == "train"][::16]
    first = train(subset, bundled_embedder(), grid=(1.0, 10.0), k=3)
    second = train(subset, bundled_embedder(), grid=(1.0, 10.0), k=3)
    a, b = first.model_dump(exclude={"created_at"}), second.model_dump(exclude={"created_at"})
    assert a == b
    assert first.version == second.version
    assert first.data["sha256"] == second.data["sha256"]
    assert first.heads[0].embedder == BUNDLED_ID


@pytest.mark.parametrize("target", [0.0, 0.05, 0.2])
def test_threshold_meets_the_risk_target_at_the_least_cost(target):
    rng = np.random.default_rng(7)
    large = rng.random(500) < 0.5
    p = np.clip(np.where(large, 0.65, 0.35) + rng.normal(0, 0.2, 500), 0, 1)
    chosen = pick(curve(p, large), max_risk=target)
    sent_large = p >= chosen.threshold
    risk = (large & ~sent_large).sum() / large.sum()
    assert risk <= target
    assert chosen.risk == pytest.approx(risk, abs=1e-6)
    cheaper = [q for q in curve(p, large) if q.threshold > chosen.threshold]
    assert all(q.risk > target for q in cheaper)  # any higher threshold misses the target


@pytest.mark.parametrize("share", [0.1, 0.3, 0.6])
def test_threshold_meets_the_large_share_target(share):
    rng = np.random.default_rng(3)
    p = rng.random(300)
    chosen = pick(curve(p, rng.random(300) < p), large_share=share)
    assert (p >= chosen.threshold).mean() <= share


def test_calibration_meets_its_target_on_a_synthetic_set(peer, tmp_path):
    embedder = OllamaEmbedder(peer.url, "nomic-embed-text")
    doc = train(synthetic(120, seed=1), embedder, grid=(1.0,), k=4)
    held_out = synthetic(200, seed=2)
    calibrated, head = calibrate(doc, held_out, embedder, {"max_risk": 0.05}, "synthetic")
    texts = [e.prompt for e in held_out]
    p = head.probability(embedder.embed(texts), texts)
    large = np.asarray([e.large for e in held_out])
    assert ((p < head.threshold) & large).sum() / large.sum() <= 0.05
    assert head.calibrated_on == "synthetic" and head.target == {"max_risk": 0.05}
    assert calibrated.version != doc.version
    path = save_router(calibrated, tmp_path / "router.json")
    assert load_router(path).doc.heads[0].threshold == head.threshold


def test_missing_router_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope" / "router.json"
    with pytest.raises(RouterFileError, match=str(missing)):
        load_router(missing)


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"format": 1, "version": "x", "created_at": "now", "heads": []}), '{"format": 99}'],
)
def test_corrupt_router_file_is_an_error_naming_it(tmp_path, content):
    bad = tmp_path / "router.json"
    bad.write_text(content)
    with pytest.raises(RouterFileError) as caught:
        load_router(bad)
    assert str(bad) in str(caught.value)
    assert "frugal router train" in str(caught.value)


def test_weights_that_do_not_fit_the_embedder_are_an_error(tmp_path):
    doc = load_router(PACKAGED).doc
    head = doc.heads[0].model_copy(update={"weights": doc.heads[0].weights[:10]})
    bad = tmp_path / "short.json"
    bad.write_text(doc.model_copy(update={"heads": [head]}).model_dump_json())
    with pytest.raises(RouterFileError, match="short.json"):
        load_router(bad)


async def test_classify_names_a_missing_router_file(tmp_path):
    with pytest.raises(RouterFileError, match="gone.json"):
        await classify(ClassifyRequest(text="hello", router="embedding", router_file=str(tmp_path / "gone.json")))


def test_a_new_router_version_is_picked_up_without_a_restart(tmp_path):
    path = save_router(load_router(PACKAGED).doc, tmp_path / "router.json")
    before = load_router(path)
    assert load_router(path) is before  # unchanged file: not re-read
    stricter = before.doc.heads[0].model_copy(update={"threshold": 0.99})
    save_router(before.doc.model_copy(update={"heads": [stricter], "version": "v2"}), path)
    os.utime(path, ns=(before_ns := os.stat(path).st_mtime_ns + 1_000_000, before_ns))
    after = load_router(path)
    assert after.doc.version == "v2"
    assert route("Prove that the square root of 2 is irrational.", path).threshold == 0.99  # type: ignore[union-attr]


def test_requests_look_at_the_router_file_at_most_once_in_their_window(tmp_path):
    path = save_router(load_router(PACKAGED).doc, tmp_path / "router.json")
    first = load_router(path, within=0.3)
    newer = first.doc.model_copy(update={"version": "v2"})
    save_router(newer, path)
    os.utime(path, ns=(stamp := os.stat(path).st_mtime_ns + 1_000_000, stamp))
    assert load_router(path, within=0.3) is first  # within the window: the file is not looked at
    assert load_router(path).doc.version == "v2"  # asked without a window: looked at now
    time.sleep(0.35)
    assert load_router(path, within=0.3).doc.version == "v2"  # after it: the new version


async def test_embedding_router_decides_with_probability_threshold_and_neighbours():
    hard = await classify(
        ClassifyRequest(
            text="Un train part à 9 h à 80 km/h, un autre à 10 h à 120 km/h sur la même voie. À quelle heure le second "
            "rattrape-t-il le premier ? Montre chaque étape.",
            router="embedding",
        )
    )
    easy = await classify(ClassifyRequest(text="Ist diese Bewertung positiv oder negativ? 'Tolles Produkt!'", router="embedding"))
    assert hard.label == "complex" and easy.label == "simple"
    for decision in (hard, easy):
        assert decision.router == "embedding"
        assert decision.probability is not None and decision.threshold == load_router(PACKAGED).doc.heads[0].threshold
        assert "nearest:" in decision.reason
    assert hard.probability > hard.threshold > easy.probability  # type: ignore[operator]


def two_headed_router(peer, tmp_path: Path) -> Path:
    embedder = OllamaEmbedder(peer.url, "nomic-embed-text")
    server_head = train(synthetic(60, seed=5), embedder, grid=(1.0,), k=3).heads[0]
    packaged = load_router(PACKAGED).doc
    return save_router(packaged.model_copy(update={"heads": [server_head, *packaged.heads]}), tmp_path / "router.json")


def test_router_uses_the_configured_server_embedder(peer, tmp_path, monkeypatch):
    path = two_headed_router(peer, tmp_path)
    monkeypatch.setenv("FRUGAL_EMBEDDER", "ollama")
    monkeypatch.setenv("FRUGAL_EMBEDDER_HOST", peer.url)
    before = peer.count("/api/embed")
    routed = route("prove derive w1 w2", path)
    assert routed is not None and routed.embedder == "ollama/nomic-embed-text" and routed.large
    assert peer.count("/api/embed") == before + 1


def test_embedder_down_falls_back_to_bundled_with_one_warning(peer, tmp_path, monkeypatch, caplog):
    path = two_headed_router(peer, tmp_path)
    monkeypatch.setenv("FRUGAL_EMBEDDER", "ollama")
    monkeypatch.setenv("FRUGAL_EMBEDDER_HOST", f"http://127.0.0.1:{closed_port()}")
    with caplog.at_level(logging.WARNING, logger="frugal.router"):
        first = route("Prove that there are infinitely many primes.", path)
        second = route("Label this review as positive or negative: 'great'", path)
    assert first is not None and second is not None
    assert first.embedder == second.embedder == BUNDLED_ID
    assert first.large and not second.large
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ollama/nomic-embed-text failed" in warnings[0].getMessage()


async def test_no_usable_embedder_falls_back_to_rules_with_one_warning(peer, tmp_path, monkeypatch, caplog):
    embedder = OllamaEmbedder(peer.url, "nomic-embed-text")
    path = save_router(train(synthetic(60, seed=5), embedder, grid=(1.0,), k=3), tmp_path / "server-only.json")
    monkeypatch.setenv("FRUGAL_EMBEDDER", "ollama")
    monkeypatch.setenv("FRUGAL_EMBEDDER_HOST", f"http://127.0.0.1:{closed_port()}")
    with caplog.at_level(logging.WARNING, logger="frugal.router"):
        decisions = [
            await classify(ClassifyRequest(text="What is 2 + 2?", router="embedding", router_file=str(path))) for _ in range(2)
        ]
    for decision in decisions:
        assert decision.router == "rules" and decision.label == "simple"
        assert decision.reason.startswith("no embedder could run; rules:")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2  # server down, then no bundled head
    assert len({r.getMessage() for r in caplog.records}) == 2


def test_labels_from_answer_check_records(tmp_path):
    records = tmp_path / "traffic.jsonl"
    lines = [
        {"prompt": "a", "label": "small"},
        {"prompt": "b", "accepted": False, "reject_reason": "truncated"},
        {"prompt": "c", "escalated_from": "ollama/llama3.2:1b"},
        {"prompt": "d", "accepted": True, "audit": "disagree"},
        {"prompt": "e", "accepted": True, "audit": "agree"},
        {"prompt": "f", "accepted": True},
    ]
    records.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    examples, skipped = read_examples([records])
    assert [(e.prompt, e.label) for e in examples] == [
        ("a", "small"),
        ("b", "large"),
        ("c", "large"),
        ("d", "large"),
        ("e", "small"),
    ]
    assert skipped == 1


def test_bad_label_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "label": "small"}\n{"prompt": "b", "label": "medium"}\n')
    with pytest.raises(Exception, match=r"bad.jsonl:2: label must be 'small' or 'large'"):
        read_examples([bad])
