"""Labelled prompts from JSONL files: the hand-written sets and the user's own traffic.

One JSON object per line, either labelled directly

    {"prompt": "...", "label": "small" | "large"}            (extra keys such as lang, task, split are kept)

or an answer-check record, labelled by what happened to its answer:

    {"prompt": "...", "accepted": false, ...}                 rejected                    -> large
    {"prompt": "...", "escalated_from": "ollama/...", ...}    escalated                   -> large
    {"prompt": "...", "audit": "disagree", ...}               the shadow audit disagreed  -> large
    {"prompt": "...", "accepted": true, "audit": "agree"}     accepted and confirmed      -> small

A record that says none of these is skipped (counted, not guessed). Every error names
the file and line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tasks.core.errors import InputError

Label = Literal["small", "large"]


@dataclass(frozen=True)
class Example:
    prompt: str
    label: Label
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def large(self) -> bool:
        return self.label == "large"


def label_of(record: dict[str, Any]) -> Label | None:
    """The label a record states or implies, or None when it implies none."""
    label = record.get("label")
    if label is not None:
        if label not in ("small", "large"):
            raise ValueError(f"label must be 'small' or 'large', got {label!r}")
        return label  # type: ignore[no-any-return]
    audit = record.get("audit")
    if record.get("accepted") is False or record.get("escalated_from") or audit in ("disagree", "disagreed"):
        return "large"
    if record.get("accepted") is True and audit in ("agree", "agreed", "confirmed"):
        return "small"
    return None


def read_examples(paths: Iterable[Path]) -> tuple[list[Example], int]:
    """Every labelled prompt in `paths`, in file order, and how many records implied no label."""
    examples: list[Example] = []
    skipped = 0
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read labelled prompts from {path}: {exc}") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
                    raise ValueError("each line must be a JSON object with a non-empty 'prompt'")
                label = label_of(record)
            except ValueError as exc:
                raise InputError(f"{path}:{number}: {exc}") from exc
            if label is None:
                skipped += 1
                continue
            meta = {k: v for k, v in record.items() if k not in ("prompt", "label")}
            examples.append(Example(prompt=record["prompt"], label=label, meta=meta))
    return examples, skipped


def split(examples: list[Example], name: str) -> list[Example]:
    """The examples whose `split` is `name`; examples without a split belong to every split."""
    return [e for e in examples if e.meta.get("split", name) == name]


def data_hash(examples: Iterable[Example]) -> str:
    """sha256 of the (prompt, label) pairs in order: names the training data in the router file."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.prompt, example.label], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()
