"""The one error type of template compilation and evaluation (the loader and engine translate it)."""

from __future__ import annotations


class TemplateProblem(ValueError):
    """A template is malformed or unsafe; the loader turns this into a SpecError.

    At run time, `key` is the path of the mapping key whose value failed
    (``params.max_tokens``), so the error names the field.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        self.message, self.key = message, key
        super().__init__(f"{key}: {message}" if key else message)
