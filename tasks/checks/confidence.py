"""Low confidence, read from the token log-probabilities the provider returned.

- Free text: the mean log-probability of the generated tokens. A model that is
  unsure of what it writes spreads its probability over many tokens.
- Labels: the probability of the chosen label and its margin over the next best
  label. Under constrained decoding the answer is always *some* label, so only
  these say whether the model chose it or was pushed into it; a low margin
  between "positive" and "neutral" is what sends an unsure review to the large model.

The label's probability is read from the tokens that spell its value inside the
generated text (``{"label": "neutral"}`` or a bare ``neutral``). At each of those
positions, the alternatives the provider listed (`TokenLogprob.top`) are sorted
by the labels they could still spell; alternatives that spell none (which a
grammar forbids) are left out, and the rest are renormalised. A label's
probability is the product of its shares up to the position where it parts from
the chosen one (beyond it nothing is known). An alternative that could still
become several labels ("n" for negative and neutral) decides nothing and is left
out too, unless it is the chosen token.

Providers report probabilities before the grammar masks the tokens it forbids, and
only the best few alternatives: the probability they leave unlisted may belong to any
label. It is counted against the chosen label (its probability is a lower bound, the
others' an upper bound), so a provider that lists 5 alternatives cannot make an unsure
label look sure: with SmolLM2-135M under the label grammar, 5 or even 20 alternatives
often list none of the labels, 100 usually list them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tasks.checks.rejection import Rejection
from tasks.core.completion import TokenLogprob


def mean_logprob(logprobs: list[TokenLogprob] | None) -> float | None:
    """The mean log-probability of the generated tokens; None when none were returned."""
    if not logprobs:
        return None
    return sum(t.logprob for t in logprobs) / len(logprobs)


@dataclass(frozen=True, slots=True)
class LabelConfidence:
    label: str
    prob: float  # of the chosen label, among the labels
    runner_up: str | None
    runner_up_prob: float  # 0 when no alternative spelling another label was listed

    @property
    def margin(self) -> float:
        return self.prob - self.runner_up_prob


def _value_start(raw: str, label: str) -> int | None:
    """Where the label's value starts in the generated text: after ``"label": "`` in JSON, else at the bare label."""
    key = raw.find('"label"')
    if key >= 0:
        quote = raw.find('"', raw.find(":", key) + 1)
        if quote >= 0 and raw.startswith(label, quote + 1):
            return quote + 1
    at = raw.find(label)
    return at if at >= 0 else None


def label_confidence(label: str | None, labels: list[str] | None, logprobs: list[TokenLogprob] | None) -> LabelConfidence | None:
    """How sure the model was of `label` among `labels`; None when the tokens do not show it."""
    if not label or not labels or not logprobs or label not in labels:
        return None
    raw = "".join(t.token for t in logprobs)
    start = _value_start(raw, label)
    if start is None:
        return None
    end = start + len(label)
    shares: dict[str, float] = dict.fromkeys(labels, 1.0)
    parted: set[str] = set()  # labels no longer consistent with the chosen path
    pos = 0
    for tok in logprobs:
        tok_start, pos = pos, pos + len(tok.token)
        if pos <= start or tok_start >= end:
            continue  # the token lies wholly outside the label's value
        before = raw[start:tok_start] if tok_start > start else ""
        lead = start - tok_start if tok_start < start else 0  # characters of the token before the value starts
        options = {t.token: t.logprob for t in tok.top}
        options.setdefault(tok.token, tok.logprob)
        mass: dict[str, float] = dict.fromkeys(labels, 0.0)
        total = 0.0
        for text, logprob in options.items():
            if len(text) < lead:
                continue
            partial = before + text[lead:]
            spelt = [name for name in labels if _spells(partial, name)]
            if not spelt or (len(spelt) > 1 and text != tok.token):
                continue  # spells no label (the grammar forbids it), or an unchosen prefix of several: undecided
            p = math.exp(logprob)
            total += p
            for name in spelt:
                mass[name] += p
        if total <= 0:
            continue
        # what the provider did not list may belong to any label: the chosen one is counted without it
        # (a lower bound), every other one with all of it (an upper bound)
        unlisted = max(0.0, 1.0 - sum(math.exp(lp) for lp in options.values()))
        chosen_path = before + tok.token[lead:]
        for name in labels:
            if name not in parted:
                chosen = name == label or _spells(chosen_path, name)
                shares[name] *= (mass[name] + (0.0 if chosen else unlisted)) / (total + unlisted)
                if not chosen:
                    parted.add(name)
    others = [(shares[name], name) for name in labels if name != label]
    best_prob, best = max(others) if others else (0.0, None)
    return LabelConfidence(label, shares[label], best if best_prob > 0 else None, best_prob)


def _spells(partial: str, label: str) -> bool:
    """`partial` (text from the value's start) can still become `label`, or already is it (then a quote, a brace).

    Case is ignored: a model that wanted "Positive" where the grammar allowed only
    "positive" meant positive. On SmolLM2-135M the capitalised spellings often
    carry more probability than the allowed ones, so this changes the verdict.
    """
    partial, label = partial.casefold(), label.casefold()
    return label.startswith(partial) or (partial.startswith(label) and not partial[len(label) :].strip('"}\n ,'))


def low_confidence(logprobs: list[TokenLogprob] | None, min_mean_logprob: float | None) -> tuple[Rejection | None, float | None]:
    """(a rejection when the mean token log-probability is below the threshold, the mean)."""
    mean = mean_logprob(logprobs)
    if mean is None or min_mean_logprob is None or mean >= min_mean_logprob:
        return None, mean
    return Rejection("low_confidence", f"mean token log-probability {mean:.2f} < {min_mean_logprob:.2f}"), mean


def unsure_label(
    confidence: LabelConfidence | None, min_label_prob: float | None, min_label_margin: float | None
) -> Rejection | None:
    """A rejection when the chosen label's probability or its margin over the next label is too low."""
    if confidence is None:
        return None
    if min_label_prob is not None and confidence.prob < min_label_prob:
        return Rejection("low_label_prob", f"p({confidence.label})={confidence.prob:.2f} < {min_label_prob:.2f}")
    if min_label_margin is not None and confidence.margin < min_label_margin:
        return Rejection(
            "low_margin",
            f"p({confidence.label})={confidence.prob:.2f} beats p({confidence.runner_up})={confidence.runner_up_prob:.2f} "
            f"by {confidence.margin:.2f} < {min_label_margin:.2f}",
        )
    return None
