"""The rule router: simple work to the small model, the rest to the large one, with a reason and a score."""

from __future__ import annotations

import pytest

from tasks.steps.classify import ClassifyRequest, Decision, classify, route_by_rules


def decide(text: str, **options: object) -> Decision:
    decision = route_by_rules(ClassifyRequest(text=text, **options))
    assert decision.reason
    assert 0.0 <= decision.score <= 1.0
    return decision


def words(n: int) -> str:
    return " ".join(["word"] * n)


def test_short_prompt_is_simple():
    decision = decide("What is the capital of France?")
    assert decision.label == "simple"
    assert "words" in decision.reason


def test_long_prompt_is_complex():
    decision = decide(words(200))
    assert decision.label == "complex"
    assert "200 words > 80" in decision.reason


def test_length_threshold_is_configurable():
    assert decide(words(30), max_simple_words=20).label == "complex"
    assert decide(words(20), max_simple_words=20).label == "simple"


@pytest.mark.parametrize(
    "prompt", ["Prove that there are infinitely many primes.", "Please DEBUG this loop", "Explain step by step"]
)
def test_complex_keyword_is_complex(prompt):
    decision = decide(prompt)
    assert decision.label == "complex"
    assert "keyword" in decision.reason


def test_keyword_matches_whole_words_only():
    assert decide("A planet orbits a star.").label == "simple"  # 'plan' inside 'planet' does not count


@pytest.mark.parametrize("task", ["sentiment", "summary", "extraction"])
def test_declared_simple_task_is_simple_even_when_long(task):
    decision = decide(words(150), task=task)
    assert decision.label == "simple"
    assert task in decision.reason


def test_simple_task_still_bounded_by_length():
    assert decide(words(500), task="summary").label == "complex"


def test_complex_keyword_beats_a_simple_task():
    assert decide("Compare these two reviews.", task="sentiment").label == "complex"


def test_scores_grow_with_distance_from_the_threshold():
    near = decide(words(79))
    far = decide(words(1))
    assert near.label == far.label == "simple"
    assert far.score > near.score
    assert decide(words(10_000)).score == 1.0


async def test_task_returns_a_typed_decision():
    decision = await classify(ClassifyRequest(text="Label this review: great!", task="classification"))
    assert isinstance(decision, Decision)
    assert decision.label == "simple"
    assert set(decision.model_dump()) == {"label", "reason", "score", "router", "probability", "threshold"}
