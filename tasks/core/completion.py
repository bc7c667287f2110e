"""What every model adapter returns, whichever wire it speaks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Usage(BaseModel):
    """Token counts as the provider reported them.

    `input_tokens` counts the whole prompt, as OpenAI's ``prompt_tokens`` does;
    Anthropic reports cache reads and writes beside its ``input_tokens``, so its
    adapter adds them in. The cache fields say how many of those tokens were
    read from or written to the provider's prompt cache.
    """

    model_config = ConfigDict(extra="forbid")

    input_tokens: int = Field(0, description="every prompt token, cached ones included")
    output_tokens: int = Field(0, description="completion tokens billed")
    cached_input_tokens: int = Field(0, description="prompt tokens read from the provider's prompt cache (a part of input)")
    cache_write_tokens: int = Field(0, description="prompt tokens written to the provider's prompt cache (a part of input)")
    estimated: bool = Field(False, description="the server sent no usage: counted here, not by the provider")


class TopToken(BaseModel):
    """One alternative the model considered at a position, with its log-probability."""

    model_config = ConfigDict(extra="forbid")

    token: str
    logprob: float


class TokenLogprob(BaseModel):
    """One generated token, its log-probability, and the best alternatives at its position
    (as many as the provider returned, the chosen one usually among them)."""

    model_config = ConfigDict(extra="forbid")

    token: str
    logprob: float
    top: list[TopToken] = Field(default_factory=list)


class Completion(BaseModel):
    """One chat completion: the text, the model that wrote it, its usage and latency."""

    model_config = ConfigDict(extra="forbid")

    text: str
    model: str = Field(description="provider-qualified id of the model asked for, e.g. 'ollama/llama3.2:1b'")
    served_model: str | None = Field(
        None, description="the model id the server said answered, when it differs (a dated version, a llama.cpp file path)"
    )
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float = 0.0
    finish_reason: str | None = Field(
        None, description="why generation stopped, normalised: 'stop', 'length' (the token limit), or the provider's word"
    )
    logprobs: list[TokenLogprob] | None = Field(
        None, description="per generated token, where the provider returns them (OpenAI-compatible, Ollama, llama.cpp)"
    )


#: provider words for "the model ended its answer" and "the token limit cut it"
_FINISH_WORDS = {
    "stop": "stop",
    "end_turn": "stop",  # Anthropic
    "stop_sequence": "stop",  # Anthropic
    "eos": "stop",
    "length": "length",
    "max_tokens": "length",  # Anthropic
    "model_length": "length",
}


def normalise_finish_reason(word: str | None) -> str | None:
    """'stop' or 'length' for the providers' words for them, else the provider's own word."""
    if word is None or word == "":
        return None
    return _FINISH_WORDS.get(word, word)
