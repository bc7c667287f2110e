"""The pipeline language as pydantic models. Unknown keys are errors.

name: answer                 # [a-z0-9][a-z0-9_-]*
version: "1"                 # part of every cache key: bump it to invalidate
description: ...
inputs:                      # typed; an input without a default is required
  prompt: {type: string, description: ...}
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

from typing import Any, Literal

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

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set


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
