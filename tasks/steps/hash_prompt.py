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


async def hash_prompt(request: HashRequest) -> str:
    """Return the request key (64 hex characters)."""
    return request_key(request)
