"""What `call_slm` and `call_llm` share: a request prepared once, then answered by its provider.

`prepare` resolves the provider, model and endpoint against the settings, builds
the messages and the request's identity (`tasks.core.request_key`) once per call:
Prefect's cache policy (`call_cache.RequestKey`), single-flight and the call
itself all read the same `PreparedCall`, kept on the request for as long as the
settings it was resolved against are the current ones. Every call goes through
its model's rate-limit gate (`tasks.steps.rate_limits`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tasks.core.completion import Usage
from tasks.core.constraints import instruction, output_schema
from tasks.core.errors import ModelOutputInvalid
from tasks.core.model_request import ModelRequest, to_answer
from tasks.core.pricing import cost_of
from tasks.core.records import ModelAnswer, Tier
from tasks.core.request_key import RequestIdentity, request_identity
from tasks.core.settings import Settings, get_settings
from tasks.providers import ChatCall, get_provider, provider_names
from tasks.providers.limits import gated
from tasks.providers.single_flight import single_flight
from tasks.providers.tiers import Choice
from tasks.steps.rate_limits import gate_for

#: resolves which provider, model and endpoint answer a request, for a settings snapshot
Chooser = Callable[[ModelRequest, Settings], Choice]


@dataclass(frozen=True)
class PreparedCall:
    """A model request resolved once: where it goes, what is sent, and its identity."""

    settings: Settings
    #: id() of the request it was made for: a copy of the request prepares itself again
    owner: int
    tier: Tier
    choice: Choice
    call: ChatCall
    identity: RequestIdentity


def prepare(request: ModelRequest, tier: Tier, choose: Chooser) -> PreparedCall:
    """The request resolved against the current settings (done once; kept on the request)."""
    settings = get_settings()
    kept = request.prepared
    if isinstance(kept, PreparedCall) and kept.settings is settings and kept.owner == id(request) and kept.tier == tier:
        return kept
    choice = choose(request, settings)
    messages = request.chat_messages()
    call = ChatCall(
        model=choice.model,
        messages=messages,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        json_schema=output_schema(request.labels, request.json_schema),
        instruction=instruction(request.labels, request.json_schema),
        logprobs=request.wants_logprobs,
        cache_prefix=request.cache_prefix,
    )
    identity = request_identity(
        namespace="model-call",
        tier=tier,
        models={tier: choice.model_id},
        messages=messages,
        params={
            "endpoint": choice.key_endpoint,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "labels": request.labels,
            "schema": request.json_schema,
            "logprobs": True if call.logprobs else None,
        },
    )
    prepared = PreparedCall(settings, id(request), tier, choice, call, identity)
    request.prepared = prepared
    return prepared


async def answer(prepared: PreparedCall, request: ModelRequest) -> ModelAnswer:
    """Answer a prepared request; identical requests in flight share one call."""
    return await single_flight(
        f"{prepared.tier}-{prepared.identity.key}",
        lambda: _answer(prepared, request),
        copy=lambda answer: answer.model_copy(deep=True),
    )


async def _answer(prepared: PreparedCall, request: ModelRequest) -> ModelAnswer:
    choice = prepared.choice
    provider = get_provider(choice.provider, endpoint=choice.endpoint, settings=prepared.settings)
    gate = gate_for(prepared.settings, choice.model_id, prepared.call)
    try:
        with gated(gate):  # each attempt waits for its turn under the model's rate limits
            completion = await provider.complete(prepared.call)
    except ModelOutputInvalid as exc:  # a constrained answer the provider could not make valid: escalate it
        return ModelAnswer(
            text="",
            model=choice.model_id,
            tier=prepared.tier,
            cost_usd=cost_of(choice.model_id, Usage(), request.price),
            valid=False,
            reason=str(exc),
        )
    await gate.settle(completion.usage)
    return to_answer(completion, prepared.tier, request)


def registered_provider(name: str | None) -> str | None:
    """A node's `provider:` argument, checked when the pipeline is validated: a registered name or None."""
    if name is not None and name not in provider_names():
        raise ValueError(f"no model provider named '{name}'; known: {', '.join(sorted(provider_names()))}")
    return name
