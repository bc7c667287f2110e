"""The in-process local model (`tasks.providers.llama_cpp`) as a provider, for either tier.

Its call runs in a worker thread under the call's deadline (FRUGAL_SLM_TIMEOUT,
within FRUGAL_LLM_MAX_RETRY_SECONDS). llama.cpp cannot be interrupted: at the
deadline the caller gets `ModelTimeout` at once, the thread finishes that
generation, and its answer is discarded. Not retried: a timed-out generation
still holds the model's one slot, so another attempt would only queue behind it.
"""

from __future__ import annotations

from dataclasses import replace

from tasks.core.completion import Completion
from tasks.core.settings import Settings
from tasks.providers.base import ChatCall
from tasks.providers.llama_cpp import LocalModel, get_local_model
from tasks.providers.retry import RetryPolicy, with_retries

NAME = "local"


class LocalProvider:
    """The GGUF model of `model`, loaded on first use."""

    name = NAME

    def __init__(self, model: LocalModel, *, policy: RetryPolicy | None = None) -> None:
        self.model = model
        self.policy = replace(policy or RetryPolicy(timeout_hint="raise FRUGAL_SLM_TIMEOUT"), max_attempts=1)

    @classmethod
    def from_settings(cls, settings: Settings, endpoint: str | None = None) -> LocalProvider:
        slm = settings.slm
        model = get_local_model(slm.local_model_path, n_threads=slm.local_threads, n_ctx=slm.local_ctx)
        policy = RetryPolicy.from_settings(settings.llm, attempt_timeout=slm.timeout, timeout_hint="raise FRUGAL_SLM_TIMEOUT")
        return cls(model, policy=policy)

    async def complete(self, call: ChatCall) -> Completion:
        async def attempt() -> Completion:
            return await self.model.acomplete(
                call.messages,
                max_tokens=call.max_tokens,
                temperature=call.temperature,
                json_schema=call.json_schema,
                logprobs=call.logprobs,
            )

        completion = await with_retries(attempt, self.policy, NAME)
        completion.model = f"{NAME}/{call.model}"
        return completion

    async def aclose(self) -> None:
        """Nothing per event loop: the model is shared by the whole process."""
