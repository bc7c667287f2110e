"""Answer with the in-process local model, for either tier."""

from __future__ import annotations

from flows.errors import ModelOutputInvalid
from flows.settings import SlmSettings
from tasks.adapters.base import Usage
from tasks.adapters.local_llama import get_local_model
from tasks.constraints import output_schema
from tasks.model_request import ModelRequest, to_answer
from tasks.pricing import cost_of
from tasks.providers import Choice
from tasks.records import ModelAnswer, Tier


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
