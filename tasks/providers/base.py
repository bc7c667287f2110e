"""What a model provider is: a `ChatCall` in, a `Completion` out, within the call's deadline.

A provider owns its endpoint, its credentials, its HTTP client (one per event
loop, made on first use; an injected client is used as given), its retry policy
and the mapping of its wire's errors onto `tasks.core.errors`. The model steps
get one from the registry (`tasks.providers.get_provider`) by name and never
look at which one it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tasks.core.completion import Completion

#: alternatives asked for at each position when log-probabilities are asked for
TOP_LOGPROBS = 5


@dataclass(frozen=True)
class ChatCall:
    """One chat completion to make: built once per call by the model steps."""

    model: str
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    #: the JSON schema the answer must follow (labels become one), or None for free text
    json_schema: dict[str, Any] | None = None
    #: one line for the system prompt, for providers that cannot enforce the schema
    instruction: str | None = None
    #: ask for token log-probabilities (TOP_LOGPROBS alternatives each)
    logprobs: bool = False
    #: the system prompt and earlier messages are a static prefix the provider may cache
    cache_prefix: bool = False


class Provider(Protocol):
    """A model provider. `complete` makes one call, retried within the provider's policy."""

    name: str

    async def complete(self, call: ChatCall) -> Completion: ...

    async def aclose(self) -> None:
        """Close this event loop's client (short-lived loops and tests call it before their loop ends)."""
        ...
