"""`hash_prompt`: the prompt-cache key of a pipeline's request.

The key is `tasks.core.request_key.request_identity` of the request as the
pipeline sees it, before routing:

- `tier` is the tier asked for ("auto" lets the pipeline's router choose) and
  `models` the model id of each tier that may answer, so changing a model
  changes the key; the router is deterministic for a given pipeline version.
- `messages` are normalised (NFC, LF, trimmed, empty system prompt dropped).
- `params` holds every parameter that changes the output (temperature,
  max_tokens, labels, schema, ...); unset (None) ones are left out.
- per-run fields (run ids, timestamps, API keys) are never part of it.

With `group: true` it returns `{"exact": KEY, "group": GROUP}`: the request key and the key of
the same request without its user message (`prompt`), the group a semantic cache compares
prompts within (`cache_lookup`'s `semantic.group`). One node, one task run in an orchestrated
run, where a second `hash_prompt` node without the prompt was another (a task run costs the
Prefect server tens of ms of CPU; a REST cache hit's p50 moved within its spread: docs/performance.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.records import Message, build_messages
from tasks.core.request_key import request_identity


class HashRequest(BaseModel):
    """Arguments of `hash_prompt`."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field("default", description="tenant or app; keys never cross namespaces")
    tier: Literal["auto", "small", "large"] = Field("auto", description="tier asked for")
    models: dict[str, str] = Field(default_factory=dict, description="model id per tier")
    system: str | None = Field(None, description="system prompt")
    prompt: str | None = Field(None, description="user prompt, appended last")
    messages: list[Message] | None = Field(None, description="earlier chat messages")
    params: dict[str, Any] = Field(default_factory=dict, description="output-changing parameters")
    pipeline: str = Field("", description="pipeline name")
    version: str = Field("", description="pipeline version")
    group: bool = Field(False, description="also the key without the user message: return {exact, group}")


def request_key(request: HashRequest) -> str:
    """The sha256 hex key of a request. Pure: same request, same key, in any process."""
    return request_identity(
        namespace=request.namespace,
        tier=request.tier,
        models=request.models,
        messages=build_messages(request.system, request.prompt, request.messages),
        params=request.params,
        pipeline=request.pipeline,
        version=request.version,
    ).key


def group_key(request: HashRequest) -> str:
    """The key of the request without its user message (`prompt`): what a semantic cache groups by."""
    return request_key(request.model_copy(update={"prompt": None}))


async def hash_prompt(request: HashRequest) -> str | dict[str, str]:
    """Return the request key (64 hex characters); with `group`, `{"exact": key, "group": group_key}`."""
    if request.group:
        return {"exact": request_key(request), "group": group_key(request)}
    return request_key(request)
