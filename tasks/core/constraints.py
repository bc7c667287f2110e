"""Constrained output: the JSON schema sent to a model, and validation of its answer.

A node that declares `labels:` gets the schema ``{"label": one of labels}``; a
node that declares `schema:` gets that JSON schema. Whatever the provider did
with the constraint, the answer is validated here before anyone may store it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema


def label_schema(labels: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }


def output_schema(labels: list[str] | None, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema to constrain a call with, or None for free text."""
    if labels:
        return label_schema(labels)
    return schema


def instruction(labels: list[str] | None, schema: dict[str, Any] | None) -> str | None:
    """A line for the system prompt, for providers that cannot enforce a schema."""
    if labels:
        return 'Answer only with JSON of the form {"label": L} where L is one of: ' + ", ".join(labels) + "."
    if schema:
        return "Answer only with JSON that validates against this JSON schema: " + json.dumps(schema)
    return None


@dataclass(frozen=True)
class Checked:
    valid: bool
    label: str | None = None
    data: Any = None
    reason: str | None = None


def _parse_json(text: str) -> Any:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    return json.loads(stripped)


def check(text: str, labels: list[str] | None, schema: dict[str, Any] | None) -> Checked:
    """Validate an answer against the node's labels or schema."""
    if labels:
        bare = text.strip().strip('"').strip()
        if bare in labels:
            return Checked(True, label=bare)
        try:
            value = _parse_json(text)
        except ValueError:
            return Checked(False, reason=f"answer is neither JSON nor one of {labels}: {text[:80]!r}")
        label = value.get("label") if isinstance(value, dict) else value
        if isinstance(label, str) and label.strip() in labels:
            return Checked(True, label=label.strip(), data=value)
        return Checked(False, reason=f"label {label!r} is not one of {labels}")
    if schema:
        try:
            value = _parse_json(text)
        except ValueError:
            return Checked(False, reason=f"answer is not JSON: {text[:80]!r}")
        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as exc:
            return Checked(False, reason=f"answer does not fit the schema: {exc.message}")
        return Checked(True, data=value)
    if not text.strip():
        return Checked(False, reason="empty answer")
    return Checked(True)
