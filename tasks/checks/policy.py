"""Every check on one answer, with the node's thresholds: `run_checks` -> `Outcome`.

The thresholds' defaults were chosen on the `tune` split of the labelled sets in
evals/quality/ (docs/quality.md says how, and what they give on the `eval` split);
a node overrides any of them with its `with:` arguments, and null turns a check off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.checks import confidence, constraints, degenerate, language, truncation
from tasks.checks.rejection import Rejection
from tasks.core.records import ModelAnswer


class Thresholds(BaseModel):
    """What an answer must meet to be accepted. Each limit set to null turns its check off."""

    model_config = ConfigDict(extra="forbid")

    max_words: int | None = Field(None, ge=1, description="most words the answer may have")
    max_chars: int | None = Field(None, ge=1, description="most characters the answer may have")
    language: str | None = Field(
        "auto",
        description="the language the answer must be in: 'auto' (the one the prompt asks for, else the prompt's own), "
        "an ISO 639-1 code, or null for no language check",
    )
    languages: list[str] = Field(
        default_factory=lambda: list(language.DEFAULT_LANGUAGES), min_length=2, description="the languages told apart"
    )
    min_language_prob: float = Field(0.9, ge=0, le=1, description="a wrong language counts only when identified this surely")
    max_sentence_repeats: int | None = Field(2, ge=1, description="a sentence occurring more often than this is a loop")
    max_repeated_share: float | None = Field(0.35, ge=0, le=1, description="share of repeated word 4-grams that makes a loop")
    max_echo_share: float | None = Field(
        0.8, ge=0, le=1, description="share of word 6-grams copied from the prompt that makes an echo"
    )
    confidence: bool = Field(True, description="judge confidence from token log-probabilities when the provider returned them")
    min_mean_logprob: float | None = Field(None, le=0, description="free text: least mean token log-probability")
    min_label_prob: float | None = Field(0.9, ge=0, le=1, description="labels: least probability of the chosen label")
    min_label_margin: float | None = Field(0.8, ge=0, le=1, description="labels: least lead of the chosen label over the next")


@dataclass
class Outcome:
    """What the checks found: every rejection (the first is the reason), and what was measured."""

    rejections: list[Rejection] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return not self.rejections

    @property
    def first(self) -> Rejection | None:
        return self.rejections[0] if self.rejections else None


def run_checks(
    answer: ModelAnswer | None,
    thresholds: Thresholds,
    *,
    prompt: str | None = None,
    system: str | None = None,
    labels: list[str] | None = None,
) -> Outcome:
    """Run every check on `answer`; a labelled answer is judged on its label, free text on its text."""
    out = Outcome()
    if answer is None:
        out.rejections.append(Rejection("no_answer", "the model call failed, so there is no answer to check"))
        return out
    found = out.rejections
    scores = out.scores
    labelled = bool(labels) or answer.label is not None
    if not labelled and (r := degenerate.empty(answer.text)) is not None:
        found.append(r)  # the same answer is also invalid (not JSON, or "empty answer"): one reason is enough
    elif (r := constraints.well_formed(answer.valid, answer.reason)) is not None:
        found.append(r)
    if (r := truncation.truncated(answer.finish_reason, answer.usage.output_tokens)) is not None:
        found.append(r)
    if not labelled and answer.valid:
        _check_text(answer.text, thresholds, prompt, system, found, scores)
    if thresholds.confidence:
        if labelled:
            conf = confidence.label_confidence(answer.label, labels, answer.logprobs)
            if conf is not None:
                scores.update(label_prob=round(conf.prob, 4), label_margin=round(conf.margin, 4), runner_up=conf.runner_up)
            if (r := confidence.unsure_label(conf, thresholds.min_label_prob, thresholds.min_label_margin)) is not None:
                found.append(r)
        else:
            r, mean = confidence.low_confidence(answer.logprobs, thresholds.min_mean_logprob)
            if mean is not None:
                scores["mean_logprob"] = round(mean, 4)
            if r is not None:
                found.append(r)
    return out


def _check_text(
    text: str, t: Thresholds, prompt: str | None, system: str | None, found: list[Rejection], scores: dict[str, Any]
) -> None:
    if (r := degenerate.empty(text)) is not None:
        found.append(r)
        return
    tokens = degenerate.words(text)
    scores["words"] = constraints.word_count(text)
    scores["repeated_share"] = round(degenerate.repeated_share(tokens), 4)
    scores["sentence_repeats"] = degenerate.sentence_repeats(text)[0]
    if (r := constraints.within_limits(text, t.max_words, t.max_chars)) is not None:
        found.append(r)
    if r := degenerate.loop(text, max_sentence_repeats=t.max_sentence_repeats, max_repeated_share=t.max_repeated_share):
        found.append(r)
    sources = [s for s in (prompt, system) if s]
    if sources:
        scores["echo_share"] = round(max(degenerate.echo_share(tokens, degenerate.words(s)) for s in sources), 4)
    if (r := degenerate.echo(text, sources, max_echo_share=t.max_echo_share)) is not None:
        found.append(r)
    if t.language is not None:
        languages = tuple(t.languages)
        if t.language == "auto":
            expected, why = language.expected_language(prompt, system, languages)
        else:
            expected, why = t.language, "the node says so"
        r, found_code, prob = language.wrong_language(text, expected, languages, min_prob=t.min_language_prob)
        scores.update(expected_language=expected, language=found_code, language_prob=None if prob is None else round(prob, 4))
        if r is not None:
            found.append(Rejection(r.code, f"{r.detail} ({why})"))
