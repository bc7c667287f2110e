"""What a failed check returns: a stable reason code and a one-line detail."""

from __future__ import annotations

from dataclasses import dataclass

#: every reason code a check can give, in the order `run_checks` tries them
REASON_CODES = (
    "no_answer",
    "invalid",
    "truncated",
    "empty",
    "too_long",
    "loop",
    "echo",
    "language",
    "low_confidence",
    "low_label_prob",
    "low_margin",
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an answer is not accepted: `code` is one of `REASON_CODES`, `detail` says what was measured."""

    code: str
    detail: str

    def __post_init__(self) -> None:
        if self.code not in REASON_CODES:
            raise ValueError(f"unknown reason code {self.code!r}; use one of {', '.join(REASON_CODES)}")
