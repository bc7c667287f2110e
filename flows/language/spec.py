"""The pipeline language as pydantic models. Unknown keys are errors.

name: answer                 # [a-z0-9][a-z0-9_-]*
version: "1"                 # part of every cache key: bump it to invalidate
description: ...
inputs:                      # typed; an input without a default is required
  prompt: {type: string, description: ..., min_length: 1}
                             # constraints: min_length/max_length (string, list), minimum/maximum
                             # (integer, number), pattern (string), enum (string, integer, number)
nodes:                       # named steps; order comes from references
  key:
    uses: hash_prompt        # a name from the step registry, never an import path
    with: {prompt: "{{ inputs.prompt }}"}
    if: "{{ ... }}"          # optional condition; false → the node is skipped
    retries: 0
    retry_delay_seconds: 1
    timeout_seconds: 30
    cache_ttl: 3600          # cache_store: TTL of the entry; model calls: Prefect result-cache expiry
    on_error: fail           # or `continue`: the node's output is None and the run goes on
    for_each: ...            # reserved for batches
output: "{{ ... }}"          # an expression, or a mapping of them
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

RESERVED_NAMES = frozenset({"inputs", "settings", "pipeline", "item", "index", "loop", "range", "true", "false", "none"})
InputType = Literal["string", "integer", "number", "boolean", "list", "object"]

PY_TYPES: dict[str, Any] = {
    "string": StrictStr,
    "integer": StrictInt,
    "number": StrictFloat | StrictInt,
    "boolean": StrictBool,
    "list": list[Any],
    "object": dict[str, Any],
}


class InputSpec(BaseModel):
    """One typed input of a pipeline."""

    model_config = ConfigDict(extra="forbid")

    type: InputType = Field(description="string, integer, number, boolean, list or object")
    description: str = ""
    default: Any = Field(None, description="absent: the input is required")
    min_length: int | None = Field(None, ge=0, description="string or list: fewest characters or items")
    max_length: int | None = Field(None, ge=0, description="string or list: most characters or items")
    minimum: float | None = Field(None, description="integer or number: smallest value allowed")
    maximum: float | None = Field(None, description="integer or number: largest value allowed")
    pattern: str | None = Field(None, description=r"string: a regular expression it must contain a match of (\S: not blank)")
    enum: list[Any] | None = Field(None, min_length=1, description="the only values allowed")

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set

    def constraints(self) -> dict[str, Any]:
        """The declared constraints as pydantic `Field` keyword arguments (`enum` is a type: see compiler)."""
        given = {
            "min_length": self.min_length,
            "max_length": self.max_length,
            "ge": self.minimum,
            "le": self.maximum,
            "pattern": self.pattern,
        }
        if self.type == "integer":
            given = {**given, "ge": _whole(self.minimum), "le": _whole(self.maximum)}
        return {k: v for k, v in given.items() if v is not None}


def _whole(value: float | None) -> float | int | None:
    return int(value) if value is not None and float(value).is_integer() else value


#: which constraints apply to which input types
CONSTRAINT_TYPES: dict[str, frozenset[str]] = {
    "min_length": frozenset({"string", "list"}),
    "max_length": frozenset({"string", "list"}),
    "minimum": frozenset({"integer", "number"}),
    "maximum": frozenset({"integer", "number"}),
    "pattern": frozenset({"string"}),
    "enum": frozenset({"string", "integer", "number"}),
}


class NodeSpec(BaseModel):
    """One named step of a pipeline."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    uses: str = Field(description="a registered step name")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="the step's arguments")
    if_: str | bool | None = Field(None, alias="if", description="condition; false skips the node")
    for_each: str | None = Field(
        None, description="run the step once per item of this list or source; the item is `item`, its position `index`"
    )
    chunk_size: int | None = Field(None, ge=1, description="for_each: items per chunk (one task run each)")
    concurrency: int | None = Field(None, ge=1, description="for_each: items in flight at once")
    description: str = ""
    retries: int = Field(0, ge=0, le=20)
    retry_delay_seconds: float = Field(1.0, ge=0)
    timeout_seconds: float | None = Field(None, gt=0)
    cache_ttl: int | None = Field(None, ge=1)
    on_error: Literal["fail", "continue"] = "fail"


class PipelineSpec(BaseModel):
    """A whole pipeline file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    version: str = Field(description="bump it to invalidate every cached answer of this pipeline")
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    nodes: dict[str, NodeSpec] = Field(min_length=1)
    output: Any = Field(description="an expression, or a mapping of expressions")

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def annotation(inp: InputSpec, types: dict[str, Any]) -> Any:
    """The type of an input with its constraints (``Annotated[int, Field(ge=1)]``; `enum` as a Literal),
    from `types` (strict types for runs, JSON-schema-friendly ones for Prefect's run form)."""
    base: Any = Literal[tuple(inp.enum)] if inp.enum else types[inp.type]  # type: ignore[misc]
    constraints = inp.constraints()
    return Annotated[base, Field(**constraints)] if constraints else base
