"""What every model adapter returns, whichever wire it speaks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Usage(BaseModel):
    """Token counts as the provider reported them."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int = Field(0, description="prompt tokens billed")
    output_tokens: int = Field(0, description="completion tokens billed")


class Completion(BaseModel):
    """One chat completion: the text, the model that wrote it, its usage and latency."""

    model_config = ConfigDict(extra="forbid")

    text: str
    model: str = Field(description="provider-qualified id, e.g. 'ollama/llama3.2:1b'")
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float = 0.0
    finish_reason: str | None = None
