"""Wrong language: the answer is not in the language the prompt asked for, or was written in.

Identified with `tasks.core.language` (py3langid, restricted to a small set of languages).
Identification of a few words is still guesswork, so texts shorter than `min_words` and
guesses below `min_prob` are not judged.
"""

from __future__ import annotations

import re

from tasks.checks.constraints import word_count
from tasks.checks.rejection import Rejection
from tasks.core.language import DEFAULT_LANGUAGES, identify

# How a prompt asks for a language, in the languages above: "in French", "en français", "auf Deutsch", ...
_ASKED: dict[str, tuple[str, ...]] = {
    "en": ("english", "anglais", "englisch", "inglés", "ingles", "inglese", "inglês", "engels"),
    "fr": ("french", "français", "francais", "französisch", "francés", "frances", "francese", "francês", "frans"),
    "de": ("german", "deutsch", "allemand", "alemán", "aleman", "tedesco", "alemão", "duits"),
    "es": ("spanish", "español", "espanol", "espagnol", "spanisch", "spagnolo", "espanhol", "spaans", "castellano"),
    "it": ("italian", "italien", "italienisch", "italiano", "italiaans"),
    "pt": ("portuguese", "portugais", "portugiesisch", "portugués", "portoghese", "português", "portugees"),
    "nl": ("dutch", "néerlandais", "niederländisch", "neerlandés", "olandese", "holandês", "nederlands"),
}
_PREPOSITIONS = r"(?:in|into|en|auf|em|para|al|in het|naar het)"
_ASK_PATTERNS = [
    (code, re.compile(rf"\b{_PREPOSITIONS}\s+(?:l'|el\s+|il\s+|o\s+)?(?:{'|'.join(names)})\b", re.IGNORECASE))
    for code, names in _ASKED.items()
]


def asked_language(text: str | None, languages: tuple[str, ...] = DEFAULT_LANGUAGES) -> str | None:
    """The language `text` asks the answer to be in ("in French", "auf Deutsch"), if it asks for exactly one."""
    if not text:
        return None
    found = {code for code, pattern in _ASK_PATTERNS if code in languages and pattern.search(text)}
    return found.pop() if len(found) == 1 else None


def expected_language(
    prompt: str | None,
    system: str | None,
    languages: tuple[str, ...] = DEFAULT_LANGUAGES,
    *,
    min_words: int = 4,
    min_prob: float = 0.9,
) -> tuple[str | None, str]:
    """(the language the answer should be in, why): the one the prompt or system prompt asks for,
    else the prompt's own language when it is identified with confidence; (None, why) when unknown."""
    for where, text in (("prompt", prompt), ("system prompt", system)):
        if (asked := asked_language(text, languages)) is not None:
            return asked, f"the {where} asks for it"
    if not prompt or word_count(prompt) < min_words:
        return None, "the prompt is too short to tell its language"
    code, prob = identify(prompt, languages)
    if prob < min_prob:
        return None, f"the prompt's language is unclear ({code} at {prob:.2f})"
    return code, "the prompt is written in it"


def wrong_language(
    text: str,
    expected: str | None,
    languages: tuple[str, ...] = DEFAULT_LANGUAGES,
    *,
    min_words: int = 5,
    min_prob: float = 0.9,
) -> tuple[Rejection | None, str | None, float | None]:
    """(a rejection when `text` is confidently in another language than `expected`, the language found, its probability)."""
    if expected is None or word_count(text) < min_words:
        return None, None, None
    code, prob = identify(text, languages)
    if code != expected and prob >= min_prob:
        return Rejection("language", f"the answer is in '{code}' (p={prob:.2f}), expected '{expected}'"), code, prob
    return None, code, prob
