"""`cache_lookup` and `cache_store`: the prompt cache, exact match on the request key.

Fail open: a cache that cannot be reached is a miss with ``cache: "error"`` and
a logged warning, never a failed request. A value that does not parse as the
current `CachedAnswer` version is a miss too. Only valid answers are stored, and never one the answer check
rejected (``accepted: false``, see `check_answer`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.core.errors import CacheError
from tasks.core.log import step_logger
from tasks.core.pricing import Money
from tasks.core.records import CACHE_VALUE_VERSION, CachedAnswer, ModelAnswer
from tasks.core.settings import CacheSettings, get_settings
from tasks.stores import open_store
from tasks.stores.leases import claim_or_wait, release


def cache_key(prefix: str, namespace: str, key: str) -> str:
    return f"{prefix}:{namespace}:{key}"


class LookupRequest(BaseModel):
    """Arguments of `cache_lookup`."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, description="the request key from hash_prompt")
    namespace: str = Field("default", description="keys never cross namespaces")
    bypass: bool = Field(False, description="skip the cache for this request (cache: bypass)")


class Lookup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hit: bool
    cache: Literal["hit", "miss", "error", "bypass"]
    answer: CachedAnswer | None = None


class StoreRequest(BaseModel):
    """Arguments of `cache_store`."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1)
    namespace: str = "default"
    answer: ModelAnswer | None = Field(None, description="the model answer to keep")
    ttl: int | None = Field(None, ge=1, description="seconds; default FRUGAL_CACHE_TTL")
    bypass: bool = False
    spent: list[ModelAnswer | None] | None = Field(
        None, description="every model answer this request paid for, an escalated one too; default: [answer]"
    )


class Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stored: bool
    cache: Literal["stored", "skipped", "error", "bypass"]
    answer: CachedAnswer | None = Field(None, description="the answer, stored or not")
    reason: str | None = None
    cost_usd: Money | None = Field(None, description="what this request's model calls cost (`spent`); None: one has no price")


def spent_cost(request: StoreRequest) -> Decimal | None:
    """The sum of what the request's model calls cost; None if any of them has no price."""
    answers = request.spent if request.spent is not None else [request.answer]
    total = Decimal(0)
    for answer in answers:
        if answer is not None:
            if answer.cost_usd is None:
                return None
            total += answer.cost_usd
    return total


async def lookup(request: LookupRequest, settings: CacheSettings | None = None) -> Lookup:
    if request.bypass:
        return Lookup(hit=False, cache="bypass")
    settings = settings or get_settings().cache
    key = cache_key(settings.prefix, request.namespace, request.key)
    try:
        store = open_store(settings)
        raw, claimed = (
            await store.get_or_claim(key, settings.lease_seconds) if settings.lease_seconds > 0 else (await store.get(key), None)
        )
    except CacheError as exc:
        step_logger().warning("prompt cache unavailable, treating as a miss: %s", exc)
        return Lookup(hit=False, cache="error")
    if raw is None:
        raw = await claim_or_wait(store, key, settings.lease_seconds, claimed)
        if raw is None:
            return Lookup(hit=False, cache="miss")
    try:
        answer = CachedAnswer.model_validate_json(raw)
    except ValidationError:
        step_logger().warning("cache value for %s is not a v%d answer; treating as a miss", request.key[:12], CACHE_VALUE_VERSION)
        return Lookup(hit=False, cache="miss")
    return Lookup(hit=True, cache="hit", answer=answer)


async def store(request: StoreRequest, settings: CacheSettings | None = None) -> Stored:
    """Store a valid answer; in every case release the request's lease (see tasks.stores.leases).

    Storing releases the lease in the same round trip; an answer that is not
    stored (none, invalid) releases it here.
    """
    settings = settings or get_settings().cache
    stored = await _store(request, settings)
    if stored.cache == "skipped":
        try:
            backend = open_store(settings)
        except CacheError:
            return stored
        await release(backend, cache_key(settings.prefix, request.namespace, request.key))
    return stored


async def _store(request: StoreRequest, settings: CacheSettings) -> Stored:
    answer = request.answer
    cost = spent_cost(request)
    if answer is None:
        return Stored(stored=False, cache="skipped", reason="no answer to store", cost_usd=cost)
    record = CachedAnswer.from_answer(answer)
    if not answer.valid:
        return Stored(stored=False, cache="skipped", answer=record, reason=f"invalid answer: {answer.reason}", cost_usd=cost)
    if answer.accepted is False:
        reason = f"rejected answer: {answer.reject_reason}"
        return Stored(stored=False, cache="skipped", answer=record, reason=reason, cost_usd=cost)
    if request.bypass:
        return Stored(stored=False, cache="bypass", answer=record, cost_usd=cost)
    try:
        backend = open_store(settings)
        await backend.set(
            cache_key(settings.prefix, request.namespace, request.key),
            record.model_dump_json().encode("utf-8"),
            request.ttl or settings.ttl,
        )
    except CacheError as exc:
        step_logger().warning("prompt cache unavailable, answer not stored: %s", exc)
        return Stored(stored=False, cache="error", answer=record, reason=str(exc), cost_usd=cost)
    return Stored(stored=True, cache="stored", answer=record, cost_usd=cost)


@task(name="cache_lookup", cache_policy=NO_CACHE, persist_result=False)
async def cache_lookup(request: LookupRequest) -> Lookup:
    """Exact-match lookup of a request key; a down cache is a logged miss."""
    return await lookup(request)


@task(name="cache_store", cache_policy=NO_CACHE, persist_result=False)
async def cache_store(request: StoreRequest) -> Stored:
    """Store a valid, not rejected answer under its request key, with a TTL."""
    return await store(request)
