"""The answer checks on answers built here: each defect gives its reason code, a good answer passes."""

from __future__ import annotations

import pytest

from tasks.checks import REASON_CODES, Rejection
from tasks.checks.confidence import label_confidence
from tasks.checks.language import asked_language, expected_language, identify
from tasks.core.completion import TokenLogprob, TopToken, Usage
from tasks.core.errors import ModelOutputInvalid
from tasks.core.records import ModelAnswer
from tasks.steps.check_answer import CheckRequest, judge

LABELS = ["positive", "negative", "neutral"]


def answer(text: str, **fields) -> ModelAnswer:
    return ModelAnswer(text=text, model="local/smollm2-135m", tier="small", **fields)


def token(text: str, logprob: float, *alternatives: tuple[str, float]) -> TokenLogprob:
    return TokenLogprob(token=text, logprob=logprob, top=[TopToken(token=t, logprob=p) for t, p in alternatives])


def label_tokens(label: str, logprob: float, *alternatives: tuple[str, float]) -> list[TokenLogprob]:
    """`{"label": "<label>"}` as SmolLM2 tokenises it, the label one token with its alternatives."""
    return [
        token('{"', -0.5),
        token("label", -0.1),
        token('":', -0.1),
        token(' "', -0.1),
        token(label, logprob, *alternatives),
        token('"}', -0.2),
    ]


def verdict(text: str, prompt: str | None = "Tell me about Paris, the capital of France.", **fields):
    extra = {k: fields.pop(k) for k in list(fields) if k in CheckRequest.model_fields}
    return judge(CheckRequest(answer=answer(text, **fields), prompt=prompt, **extra))


def test_a_good_answer_is_accepted():
    v = verdict("Paris is the capital of France, known for the Eiffel Tower.", finish_reason="stop")
    assert (v.accepted, v.reason, v.action, v.escalate, v.answer.accepted) == (True, None, "accept", False, True)
    assert v.scores["language"] == "en" and v.scores["expected_language"] == "en"


@pytest.mark.parametrize(
    ("text", "fields", "reason"),
    [
        ("Paris is the capital of", {"finish_reason": "length", "usage": Usage(output_tokens=5)}, "truncated"),
        ("   ", {}, "empty"),
        ("Paris is nice. " * 4, {}, "loop"),
        (" ".join(["the city of light and love"] * 6), {}, "loop"),
        ("Tell me about Paris, the capital of France.", {}, "echo"),
        ("Paris est la capitale de la France et sa plus grande ville.", {}, "language"),
        ("Paris is the capital of France and its largest city.", {"max_words": 5}, "too_long"),
        ("Paris is the capital.", {"max_chars": 10}, "too_long"),
        ("Paris.", {"valid": False, "reason": "answer is not JSON"}, "invalid"),
        (
            "Paris is the capital of France.",
            {"logprobs": [token("Paris", -4.0), token(" is", -3.0)], "min_mean_logprob": -1.0},
            "low_confidence",
        ),
    ],
)
def test_each_defect_is_rejected_with_its_reason(text, fields, reason):
    v = verdict(text, **fields)
    assert (v.accepted, v.reason, v.escalate) == (False, reason, True)
    assert v.answer.accepted is False and v.answer.reject_reason == reason
    assert reason in REASON_CODES and v.detail


def test_a_failed_call_is_no_answer():
    v = judge(CheckRequest(answer=None, prompt="Hi there, how are you?"))
    assert (v.accepted, v.reason, v.escalate, v.answer) == (False, "no_answer", True, None)


def test_a_check_turned_off_by_null_lets_the_answer_through():
    assert verdict("Paris is nice. " * 4, max_sentence_repeats=None, max_repeated_share=None).accepted
    assert verdict("Paris est la capitale de la France et sa plus grande ville.", language=None).accepted


def test_the_language_asked_for_wins_over_the_prompts_own():
    assert asked_language("Résume ce texte in English, please") == "en"
    assert asked_language("Fasse den Text auf Deutsch zusammen") == "de"
    assert asked_language("Translate 'cat' into Spanish") == "es"
    assert asked_language("What is the capital of France?") is None
    assert expected_language("Describe the Eiffel Tower in French, please.", None)[0] == "fr"
    assert expected_language("Hi", None) == (None, "the prompt is too short to tell its language")
    v = verdict("La tour Eiffel est une tour de fer puddlé construite à Paris.", prompt="Describe the Eiffel Tower in French.")
    assert v.accepted
    assert identify("Das Wetter ist heute schön und warm.")[0] == "de"


def test_the_node_may_name_the_language():
    v = verdict("Paris is the capital of France and its largest city.", language="fr")
    assert (v.reason, v.scores["expected_language"]) == ("language", "fr")
    with pytest.raises(ValueError, match="language 'xx' is not 'auto', null or one of languages"):
        CheckRequest(answer=None, language="xx")


def test_a_sure_label_is_accepted():
    tokens = label_tokens("neutral", -0.05, ("neutral", -0.05), ("positive", -4.0), ("negative", -5.0))
    v = judge(CheckRequest(answer=answer("neutral", label="neutral", logprobs=tokens), labels=LABELS))
    assert v.accepted and v.scores["label_prob"] > 0.95 and v.scores["runner_up"] == "positive"


def test_a_label_the_grammar_forced_is_rejected():
    """SmolLM2 under the label grammar, on 'Best ramen I've had outside Tokyo.': it wanted "Positive" (capitalised,
    which the grammar forbids) and wrote "negative". Case is ignored, so positive wins and the answer escalates."""
    tokens = label_tokens(
        "negative",
        -5.12,
        ("Positive", -3.89),
        ("negative", -5.12),
        ("Negative", -5.8),
        ("POS", -6.31),
        ("positive", -6.68),
        ("Arr", -2.9),
        ("neutral", -8.46),
    )
    conf = label_confidence("negative", LABELS, tokens)
    assert conf is not None and conf.runner_up == "positive"
    assert conf.prob < 0.05 and conf.margin < 0  # and most of the probability went to tokens no label starts with
    v = judge(CheckRequest(answer=answer("negative", label="negative", logprobs=tokens), labels=LABELS))
    assert (v.accepted, v.reason) == (False, "low_label_prob")


def test_a_narrow_margin_is_rejected_and_the_threshold_is_per_node():
    tokens = label_tokens("positive", -0.6, ("positive", -0.6), ("neutral", -0.9))
    v = judge(CheckRequest(answer=answer("positive", label="positive", logprobs=tokens), labels=LABELS))
    assert (v.accepted, v.reason) == (False, "low_label_prob")  # p=0.57 < 0.9 by default
    v = judge(CheckRequest(answer=answer("positive", label="positive", logprobs=tokens), labels=LABELS, min_label_prob=0.5))
    assert (v.accepted, v.reason) == (False, "low_margin")  # it leads neutral by 0.15 < 0.8
    loose = judge(
        CheckRequest(
            answer=answer("positive", label="positive", logprobs=tokens), labels=LABELS, min_label_prob=0.5, min_label_margin=0.05
        )
    )
    assert loose.accepted


def test_labels_that_share_a_prefix_are_told_apart_where_they_part():
    """ "ne|gative" and "ne|utral": the first token "ne" decides nothing; the second one does."""
    tokens = [
        token('{"label": "', -0.1),
        token("ne", -0.2, ("ne", -0.2), ("pos", -3.0)),
        token("utral", -0.7, ("utral", -0.7), ("gative", -0.7)),
        token('"}', -0.1),
    ]
    conf = label_confidence("neutral", LABELS, tokens)
    assert conf is not None and conf.runner_up == "negative"
    assert conf.prob == pytest.approx(conf.runner_up_prob, abs=0.01) and conf.margin == pytest.approx(0.0, abs=0.01)


def test_no_logprobs_means_no_confidence_verdict():
    v = judge(CheckRequest(answer=answer("positive", label="positive"), labels=LABELS))
    assert v.accepted and "label_prob" not in v.scores


def test_on_reject_decides_what_follows():
    truncated = {"finish_reason": "length", "usage": Usage(output_tokens=40)}
    retry = verdict("Paris is the capital of", on_reject="retry", **truncated)
    assert (retry.action, retry.retry, retry.escalate, retry.retry_with) == ("retry", True, False, {"max_tokens": 80})
    flag = verdict("Paris is the capital of", on_reject="flag", **truncated)
    assert (flag.action, flag.accepted, flag.escalate, flag.retry) == ("flag", False, False, False)
    with pytest.raises(ModelOutputInvalid, match=r"rejected \(truncated\)"):
        verdict("Paris is the capital of", on_reject="fail", **truncated)


def test_an_answer_that_replaces_a_rejected_one_says_where_it_came_from():
    small = verdict("Paris est la capitale de la France et sa plus grande ville.")
    large = judge(
        CheckRequest(
            answer=ModelAnswer(text="Paris is the capital of France.", model="openai/gpt-4o", tier="large"),
            prompt="Tell me about Paris, the capital of France.",
            replaces=small,
            on_reject="flag",
        )
    )
    assert (large.accepted, large.escalated_from, large.escalation_reason) == (True, "local/smollm2-135m", "language")
    assert large.answer.escalated_from == "local/smollm2-135m"
    assert "escalated from local/smollm2-135m: language" in large.note


def test_reason_codes_are_closed():
    with pytest.raises(ValueError, match="unknown reason code"):
        Rejection("bad", "x")


def test_alternatives_left_unlisted_count_against_the_chosen_label():
    """A provider listing 5 alternatives, none of them another label: the chosen label is not taken as sure."""
    few = label_tokens("positive", -5.8, ("L", -2.7), ("Arr", -2.9), ("It", -3.3), ("Blue", -3.4), ("A", -3.4))
    v = judge(CheckRequest(answer=answer("positive", label="positive", logprobs=few), labels=LABELS))
    assert (v.accepted, v.reason) == (False, "low_label_prob") and v.scores["label_prob"] < 0.01
