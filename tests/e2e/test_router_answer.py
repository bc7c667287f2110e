"""`answer` routes by the learned router (the real bundled embedder), and `frugal router` trains, calibrates, evaluates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli.main import main
from flows.orchestration.flow import run_inline
from tasks.routing import PACKAGED, load_router

ROOT = Path(__file__).resolve().parents[2]


async def test_answer_routes_by_the_learned_router(peer):
    peer.responder = lambda protocol, body: f"answer from {protocol}"
    hard = await run_inline(
        "answer",
        {
            "prompt": "Ein Händler kauft 120 Äpfel zu 0,30 € und verkauft 3/4 davon zu 0,50 €, den Rest zu 0,20 €. "
            "Wie hoch ist sein Gewinn in Prozent? Rechne Schritt für Schritt."
        },
    )
    easy = await run_inline("answer", {"prompt": "Traduce al inglés: «Buenos días, ¿cómo estás?»"})
    assert hard.output["route"] == "large" and hard.output["text"] == "answer from openai"
    assert easy.output["route"] == "small" and easy.output["text"] == "answer from ollama"
    assert peer.count("/v1/chat/completions") == 1 and peer.count("/api/chat") == 1


def labelled(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "label": label, "split": split}) + "\n" for p, label, split in rows))
    return path


def test_cli_train_calibrate_eval(tmp_path, capsys, monkeypatch):
    data = ROOT / "evals/router"
    rows = [json.loads(line) for name in ("large", "small") for line in (data / f"{name}.jsonl").read_text().splitlines()]
    small_set = labelled(tmp_path / "mine.jsonl", [(r["prompt"], r["label"], r["split"]) for r in rows[::10]])
    router = tmp_path / "router.json"

    assert main(["router", "train", str(small_set), "--output", str(router), "--large-share", "0.6"]) == 0
    assert f"wrote {router}" in capsys.readouterr().out
    trained = load_router(router).doc
    assert trained.heads[0].target == {"large_share": 0.6} and trained.data["prompts"] == sum(
        r["split"] == "train" for r in rows[::10]
    )

    assert main(["router", "calibrate", str(small_set), "--router", str(router), "--max-risk", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "for {'max_risk': 0.05}" in out
    calibrated = load_router(router).doc.heads[0]
    assert calibrated.target == {"max_risk": 0.05} and "mine.jsonl" in calibrated.calibrated_on

    png = tmp_path / "curve.png"
    assert main(["router", "eval", str(small_set), "--router", str(router), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion" in out and "accuracy per lang" in out and "accuracy per task" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.chdir(tmp_path)
    assert main(["router", "eval", str(small_set), "--router", str(router)]) == 0
    assert "wrote" not in capsys.readouterr().out and not list(tmp_path.glob("*.png"))[1:]  # only --png draws


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["router", "eval", str(tmp_path / "none.jsonl")]) == 1
    assert "no labelled prompts at" in capsys.readouterr().err
    assert main(["router", "eval", str(ROOT / "evals/router/large.jsonl"), "--router", str(tmp_path / "x.json")]) == 1
    assert "x.json" in capsys.readouterr().err


@pytest.mark.parametrize("path", [PACKAGED])
def test_packaged_router_is_the_one_trained_from_the_shipped_data(path):
    doc = load_router(path).doc
    assert doc.data["files"] == ["large.jsonl", "small.jsonl"]
    assert doc.data["prompts"] == 666 and doc.heads[0].target == {"max_risk": 0.05}
