"""Cheap features of a prompt that carry across languages: length, code, digits and maths, questions.

They join the embedding when cross-validation on the training data says they help
(`train.choose`); on the shipped data they did not, so the packaged router leaves them out.
"""

from __future__ import annotations

import math
import re

import numpy as np

CHEAP_FEATURES = ("log_words", "log_chars", "questions", "digit_share", "code", "maths_share", "lines")

_CODE = re.compile(r"```|\bdef |\bfunction\b|[{};]|=>|\breturn\b|\bSELECT\b|\bclass\b")
_MATHS = re.compile(r"[=+*/^<>%∑√∫≤≥±×÷]")
_DIGIT = re.compile(r"\d")


def cheap_features(text: str) -> list[float]:
    """The CHEAP_FEATURES of one prompt, unscaled."""
    chars = max(len(text), 1)
    return [
        math.log1p(len(text.split())),
        math.log1p(len(text)),
        float(text.count("?") + text.count("¿")),
        len(_DIGIT.findall(text)) / chars * 10,
        1.0 if _CODE.search(text) else 0.0,
        len(_MATHS.findall(text)) / chars * 10,
        float(text.count("\n")),
    ]


def cheap_matrix(texts: list[str]) -> np.ndarray:
    return np.asarray([cheap_features(t) for t in texts], dtype=np.float64).reshape(len(texts), len(CHEAP_FEATURES))
