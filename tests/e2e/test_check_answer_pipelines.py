"""The answer check in the pipelines, end to end on loopback peers (Ollama small, OpenAI large) and real Redis.

Each bad small answer is rejected with its reason, escalated to the large model,
and never cached; the pipeline's output says accepted / reason / escalated_from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows import ledger
from flows.language import catalog
from flows.orchestration.flow import run_inline

SMALL = "ollama/llama3.2:1b"
GOOD = "Paris is the capital of France."
LOOP = "The cat sat on the mat. " * 6
FRENCH = "Paris est la capitale de la France, et c'est aussi sa plus grande ville."


def tiers(small: str, large: str = GOOD):
    """A responder: `small` from the Ollama peer, `large` from the OpenAI one."""

    def respond(protocol: str, body: dict[str, Any]) -> str:
        return small if protocol == "ollama" else large

    return respond


@pytest.mark.parametrize(
    ("small", "max_tokens", "reason"),
    [
        ("Paris is the capital of France and also its largest city by far", 6, "truncated"),
        (LOOP, 256, "loop"),
        (FRENCH, 256, "language"),
        ("", 256, "empty"),
        ("What is the capital of France?", 256, "echo"),
    ],
)
async def test_a_bad_small_answer_escalates_and_is_not_cached(peer, redis_cache, small, max_tokens, reason):
    peer.responder = tiers(small)
    inputs = {"prompt": "What is the capital of France?", "max_tokens": max_tokens}
    first = await run_inline("answer", inputs)
    out = first.output
    assert (out["text"], out["route"], out["escalated"]) == (GOOD, "large", True)
    assert (out["accepted"], out["reason"], out["escalated_from"]) == (True, reason, SMALL)
    assert first.nodes["small_check"].status == "ran" and first.nodes["large"].status == "ran"
    # the ledger has the checks' verdicts: the small answer rejected and replaced, the large one accepted
    assert ledger.flush()
    rejected, accepted = ((e.verdict, e.reject_reason, e.replaced_by, e.escalated_from) for e in ledger.read_entries())
    assert (rejected, accepted) == (("rejected", reason, "large", None), ("accepted", None, None, SMALL))
    # the large model's accepted answer is what was cached, never the rejected small one
    second = await run_inline("answer", inputs)
    assert (second.output["cache"], second.output["text"], second.output["accepted"]) == ("hit", GOOD, True)
    assert peer.count("/api/chat") == 1 and peer.count("/v1/chat/completions") == 1


async def test_a_good_small_answer_is_accepted_and_cached(peer, redis_cache):
    peer.responder = tiers(GOOD, large="never asked")
    first = await run_inline("answer", {"prompt": "What is the capital of France?"})
    assert (first.output["route"], first.output["accepted"], first.output["reason"]) == ("small", True, None)
    assert first.output["escalated_from"] is None and first.output["escalated"] is False
    assert first.nodes["large"].status == "skipped"
    second = await run_inline("answer", {"prompt": "What is the capital of France?"})
    assert second.output["cache"] == "hit" and peer.count("/v1/chat/completions") == 0


async def test_a_rejected_large_answer_is_flagged_and_not_cached(peer, redis_cache):
    """Both tiers loop: the large answer is used (nothing above it), marked accepted: false, and not stored."""
    peer.responder = tiers(LOOP, large=LOOP)
    inputs = {"prompt": "Describe the cat in a few words."}
    first = await run_inline("answer", inputs)
    assert (first.output["accepted"], first.output["reason"], first.output["escalated_from"]) == (False, "loop", SMALL)
    assert first.output["text"].strip() == LOOP.strip()
    second = await run_inline("answer", inputs)
    assert second.output["cache"] == "miss"  # nothing was stored: both tiers asked again
    assert peer.count("/api/chat") == 2 and peer.count("/v1/chat/completions") == 2


async def test_a_label_outside_the_set_escalates_in_sentiment(peer, redis_cache):
    peer.responder = lambda protocol, body: '{"label": "great"}' if protocol == "ollama" else '{"label": "neutral"}'
    first = await run_inline("sentiment", {"text": "Arrived on Tuesday. It is blue, as shown."})
    out = first.output
    assert (out["label"], out["route"], out["accepted"], out["reason"]) == ("neutral", "large", True, "invalid")
    assert out["escalated_from"] == SMALL
    assert ledger.flush()
    assert [(e.node, e.verdict, e.reject_reason) for e in ledger.read_entries()] == [
        ("small", "rejected", "invalid"),
        ("large", "accepted", None),
    ]
    second = await run_inline("sentiment", {"text": "Arrived on Tuesday. It is blue, as shown."})
    assert (second.output["cache"], second.output["label"]) == ("hit", "neutral")
    assert peer.count("/api/chat") == 1


async def test_a_summary_over_max_words_escalates(peer, redis_cache, tmp_path):
    document = " ".join(f"Point {i} of the meeting was agreed by everyone present." for i in range(20))
    long_summary = "The team met and agreed on every point of the plan. " + " ".join(f"item{i}" for i in range(30))
    peer.responder = tiers(long_summary, large="The team agreed on twenty points.")
    inputs = {"id": "notes", "source": "notes.txt", "text": document, "destination": str(tmp_path), "max_words": 30}
    result = await run_inline("summarise-document", inputs)
    out = result.output
    assert (out["route"], out["accepted"], out["reason"], out["escalated_from"]) == ("large", True, "too_long", SMALL)
    assert "\n\nThe team agreed on twenty points.\n\n" in (tmp_path / "notes.md").read_text()


RETRY_PIPELINE = """
name: retry-once
version: "1"
inputs:
  prompt: {type: string}
nodes:
  small:
    uses: call_slm
    with: {prompt: "{{ inputs.prompt }}", max_tokens: 4}
  first_check:
    uses: check_answer
    with: {answer: "{{ small }}", prompt: "{{ inputs.prompt }}", on_reject: retry}
  small_again:
    uses: call_slm
    if: "{{ first_check.retry }}"
    with: {prompt: "{{ inputs.prompt }}", max_tokens: "{{ first_check.retry_with.max_tokens }}"}
  second_check:
    uses: check_answer
    if: "{{ first_check.retry }}"
    with: {answer: "{{ small_again }}", prompt: "{{ inputs.prompt }}", on_reject: escalate, replaces: "{{ first_check }}"}
  large:
    uses: call_llm
    if: "{{ second_check.escalate }}"
    with: {prompt: "{{ inputs.prompt }}"}
output:
  text: "{{ (large or (second_check or first_check).answer).text }}"
  tokens: "{{ [small.usage.output_tokens, small_again.usage.output_tokens] }}"
  retried: "{{ first_check.retry }}"
  accepted: "{{ (second_check or first_check).accepted }}"
  reason: "{{ first_check.reason }}"
  large_ran: "{{ large != none }}"
"""


async def test_retry_gives_a_truncated_answer_a_larger_budget(peer, tmp_path, monkeypatch):
    path = Path(tmp_path) / "retry-once.yaml"
    path.write_text(RETRY_PIPELINE)
    answer = "Paris is the capital of France today"  # 7 words: cut at 4, whole at 8
    peer.responder = tiers(answer, large="never asked")
    result = await run_inline(catalog.load(str(path)), {"prompt": "What is the capital of France?"})
    out = result.output
    assert (out["retried"], out["reason"], out["accepted"], out["large_ran"]) == (True, "truncated", True, False)
    assert (out["text"], out["tokens"]) == (answer, [4, 7])
    assert peer.count("/api/chat") == 2 and peer.count("/v1/chat/completions") == 0


FAIL_PIPELINE = """
name: strict
version: "1"
inputs:
  prompt: {type: string}
nodes:
  small:
    uses: call_slm
    with: {prompt: "{{ inputs.prompt }}"}
  check:
    uses: check_answer
    with: {answer: "{{ small }}", prompt: "{{ inputs.prompt }}", max_words: 3, on_reject: fail}
output: "{{ check.answer.text }}"
"""


async def test_on_reject_fail_stops_the_run_with_the_reason(peer, tmp_path):
    from tasks.core.errors import StepError

    path = Path(tmp_path) / "strict.yaml"
    path.write_text(FAIL_PIPELINE)
    peer.responder = tiers("Paris is the capital of France.")
    with pytest.raises(StepError, match=r"check.*rejected \(too_long\): 6 words, more than max_words=3"):
        await run_inline(catalog.load(str(path)), {"prompt": "What is the capital of France?"})


async def test_the_run_artifact_shows_the_verdict(peer, redis_cache):
    from flows.orchestration.run_artifact import markdown

    peer.responder = tiers(LOOP)
    result = await run_inline("answer", {"prompt": "What is the capital of France?"})
    text = markdown(catalog.load("answer"), result.nodes, None, None)
    row = next(line for line in text.splitlines() if line.startswith("| small_check "))
    assert "rejected ollama/llama3.2:1b: loop" in row and "-> escalate" in row
    row = next(line for line in text.splitlines() if line.startswith("| large_check "))
    assert "accepted openai/gpt-test (escalated from ollama/llama3.2:1b: loop)" in row


async def test_nightly_summaries_index_carries_the_verdicts(peer, redis_cache, tmp_path):
    import json

    source = tmp_path / "docs"
    source.mkdir()
    (source / "good.txt").write_text("The board met on Monday and approved the budget for next year. " * 3)
    (source / "loops.txt").write_text("The team met on Friday and chose a new supplier for the office chairs. " * 3)

    def respond(protocol: str, body: dict[str, Any]) -> str:
        text = body["messages"][-1]["content"]
        if protocol == "ollama":
            return "The board approved the budget." if "board" in text else "The team met. " * 5
        return "The team chose a new chair supplier."

    peer.responder = respond
    out = tmp_path / "out"
    result = await run_inline("nightly-summaries", {"source": str(source), "destination": str(out)})
    assert result.output["ok"] == 2
    rows = {row["id"]: row for row in map(json.loads, (out / "index.jsonl").read_text().splitlines())}
    assert {k: rows["good"][k] for k in ("route", "accepted", "reason", "escalated_from")} == {
        "route": "small",
        "accepted": True,
        "reason": None,
        "escalated_from": None,
    }
    assert {k: rows["loops"][k] for k in ("route", "accepted", "reason", "escalated_from")} == {
        "route": "large",
        "accepted": True,
        "reason": "loop",
        "escalated_from": SMALL,
    }
