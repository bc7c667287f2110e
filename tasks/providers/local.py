"""Answer with the in-process local model, for either tier."""

from __future__ import annotations

from tasks.core.completion import Usage
from tasks.core.constraints import output_schema
from tasks.core.errors import ModelOutputInvalid
from tasks.core.model_request import ModelRequest, to_answer
from tasks.core.pricing import cost_of
from tasks.core.records import ModelAnswer, Tier
from tasks.core.settings import SlmSettings
from tasks.providers.llama_cpp import get_local_model
from tasks.providers.tiers import Choice


async def answer_local(request: ModelRequest, tier: Tier, choice: Choice, slm: SlmSettings) -> ModelAnswer:
    model = get_local_model(slm.local_model_path, n_threads=slm.local_threads, n_ctx=slm.local_ctx)
    try:
        completion = await model.acomplete(
            request.chat_messages(),
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            json_schema=output_schema(request.labels, request.json_schema),
        )
    except ModelOutputInvalid as exc:
        return ModelAnswer(
            text="",
            model=choice.model_id,
            tier=tier,
            cost_usd=cost_of(choice.model_id, Usage(), request.price),
            valid=False,
            reason=str(exc),
        )
    completion.model = choice.model_id
    return to_answer(completion, tier, request)
