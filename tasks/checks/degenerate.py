"""Degenerate answers: empty, caught in a repetition loop, or an echo of the prompt.

Small models fail this way far more often than they write wrong facts: SmolLM2-135M
repeats one sentence until the token limit, or copies the document back. The
measures are plain counts over lower-cased words, so they work in any language
that separates words with spaces.
"""

from __future__ import annotations

import re
from collections import Counter

from tasks.checks.rejection import Rejection

_WORD = re.compile(r"\w+(?:['’]\w+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?;:…])\s+|\n+")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_share(tokens: list[str], n: int = 4) -> float:
    """The share of word n-grams that already occurred earlier in the text (0 for a text shorter than n)."""
    grams = _ngrams(tokens, n)
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for gram in grams:
        if gram in seen:
            repeats += 1
        else:
            seen.add(gram)
    return repeats / len(grams)


def sentence_repeats(text: str, min_words: int = 3) -> tuple[int, str]:
    """How often the most repeated sentence (of at least `min_words` words) occurs, and that sentence."""
    counts: Counter[tuple[str, ...]] = Counter()
    for piece in _SENTENCE_END.split(text):
        tokens = tuple(words(piece))
        if len(tokens) >= min_words:
            counts[tokens] += 1
    if not counts:
        return 0, ""
    sentence, count = counts.most_common(1)[0]
    return count, " ".join(sentence)


def echo_share(answer: list[str], source: list[str], n: int = 6) -> float:
    """The share of the answer's word n-grams found verbatim in `source` (0 for an answer shorter than n)."""
    grams = _ngrams(answer, n)
    if not grams:
        return 0.0
    known = set(_ngrams(source, n))
    return sum(1 for gram in grams if gram in known) / len(grams)


def empty(text: str) -> Rejection | None:
    return Rejection("empty", "the answer is empty") if not text.strip() else None


def loop(
    text: str, *, max_sentence_repeats: int | None, max_repeated_share: float | None, min_words: int = 20
) -> Rejection | None:
    """A rejection when one sentence occurs more than `max_sentence_repeats` times, or when more than
    `max_repeated_share` of the word 4-grams are repeats (only for answers of `min_words` words or more)."""
    if max_sentence_repeats is not None:
        count, sentence = sentence_repeats(text)
        if count > max_sentence_repeats:
            return Rejection("loop", f"one sentence occurs {count} times: {sentence[:60]!r}")
    if max_repeated_share is not None:
        tokens = words(text)
        if len(tokens) >= min_words and (share := repeated_share(tokens)) > max_repeated_share:
            return Rejection("loop", f"{share:.0%} of the word 4-grams are repeats (limit {max_repeated_share:.0%})")
    return None


def echo(text: str, sources: list[str], *, max_echo_share: float | None, min_words: int = 8) -> Rejection | None:
    """A rejection when more than `max_echo_share` of the answer's word 6-grams are copied from one of
    `sources` (the prompt, the system prompt), or when the answer is one of them word for word."""
    if max_echo_share is None:
        return None
    answer = words(text)
    for source in sources:
        tokens = words(source)
        if not tokens:
            continue
        if answer == tokens:
            return Rejection("echo", "the answer repeats the prompt word for word")
        if len(answer) >= min_words and (share := echo_share(answer, tokens)) > max_echo_share:
            return Rejection("echo", f"{share:.0%} of the answer is copied from the prompt (limit {max_echo_share:.0%})")
    return None
