"""`cache_lookup` and `cache_store`: the prompt cache, exact match on the request key, then
(opt-in, `semantic:`) by meaning.

Fail open: a cache that cannot be reached is a miss with ``cache: "error"`` and
a logged warning, never a failed request. A value that does not parse as the
current `CachedAnswer` version is a miss too. Only valid answers are stored, and never one the answer check
rejected (``accepted: false``, see `check_answer`).

Semantic reuse (`semantic: {text, group, threshold}`): on an exact miss, the cached prompts
of the same namespace and *group* (the key of every other part of the request: `hash_prompt`
without the user message) nearest in meaning to the user message are candidates
(`tasks.stores.semantic_index`); one at or above the threshold is served only if every
near-miss guard passes (`tasks.semantic.guards`), as ``cache: "semantic"`` with its
`similarity` and `matched_key`. Before any embedding, an entry of the group whose user message
is the same once normalised (case, spaces, edge punctuation: `tasks.semantic.normalise`) is
served at similarity 1 if the guards pass: such variants cost no encoder call (that entry is read
beside the exact key: on Redis in the same MGET, so an exact miss costs one round trip, not two),
and case variants, which the encoder scores anywhere from 0.34 to 0.93, are served at all.
Anything refused is a miss. Requests with a temperature
above 0, or marked ``mode: exact`` (personal data), never use it. With `verify:` (off by
default), a candidate in a similarity band is also confirmed by the small model
(`tasks.steps.semantic_verify`); `verified` is the probability it gave.

The user message is embedded as written, the vector the router needs too (the memo hands it
over: one encoder call per miss). The default threshold, 0.78, is the least (in hundredths)
with no false hit on the tune split of evals/semantic/pairs.jsonl for that form: on the eval
split it serves 87 % of paraphrases (de 80, en 93, es 87, fr 87 %) and 0 of 58 near-misses and
0 of 20 unrelated prompts (tests/benchmarks/bench_semantic_guards.py --split eval; 78 % before the
normalised text's key and the entity guard's German-noun rule; embedding the normalised message
instead served 85 % at 0.75, for a second encoder call per miss).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.core.errors import CacheError
from tasks.core.log import step_logger
from tasks.core.pricing import Money
from tasks.core.records import CACHE_VALUE_VERSION, CachedAnswer, ModelAnswer
from tasks.core.settings import CacheSettings, get_settings
from tasks.semantic.embedding import embed
from tasks.semantic.guards import first_difference
from tasks.semantic.normalise import normalise, text_key
from tasks.steps.semantic_verify import VerifierCall, Verify, same_question
from tasks.stores import AnswerStore, open_store
from tasks.stores.leases import claim_or_wait, release
from tasks.stores.semantic_index import Neighbour, open_index

#: the similarity at or above which a cached prompt is a candidate (see the module docstring)
DEFAULT_THRESHOLD = 0.78
#: nearest cached prompts checked per look-up: the first that passes the guards is served
CANDIDATES = 4
_warned: set[str] = set()
NO_VECTOR_SEARCH = CacheError(
    "the Redis of FRUGAL_CACHE_URL has no vector sets: run Redis 8 (e.g. the redis:8 image) for the semantic cache"
)


def cache_key(prefix: str, namespace: str, key: str) -> str:
    return f"{prefix}:{namespace}:{key}"


class Semantic(BaseModel):
    """The `semantic:` argument of `cache_lookup` and `cache_store`: reuse by meaning."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="the user message, compared by meaning")
    group: str = Field(min_length=1, description="key of every other part of the request (hash_prompt without the user message)")
    threshold: float = Field(DEFAULT_THRESHOLD, gt=0, le=1, description="least cosine similarity of a candidate")
    mode: Literal["auto", "exact"] = Field("auto", description="exact: this request never reuses another wording's answer")
    temperature: float = Field(0, ge=0, description="the request's temperature: above 0, exact match only")
    verify: Verify | None = Field(None, description="confirm candidates in a similarity band with the small model (off)")

    @property
    def usable(self) -> bool:
        return self.mode == "auto" and self.temperature == 0 and bool(normalise(self.text))


class LookupRequest(BaseModel):
    """Arguments of `cache_lookup`."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, description="the request key from hash_prompt")
    namespace: str = Field("default", description="keys never cross namespaces")
    bypass: bool = Field(False, description="skip the cache for this request (cache: bypass)")
    semantic: Semantic | Literal[False] | None = Field(None, description="on an exact miss, reuse by meaning (opt-in)")


class Lookup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hit: bool
    cache: Literal["hit", "semantic", "miss", "error", "bypass"]
    answer: CachedAnswer | None = None
    similarity: float | None = Field(None, description="cosine similarity of the semantic match, or of the best refused one")
    matched_key: str | None = Field(None, description="the request key whose answer a semantic hit served")
    refused: str | None = Field(
        None, description="the guard (or `verifier`) that refused the nearest candidate above the threshold"
    )
    verified: float | None = Field(None, description="the verifier's probability that the matched prompt is the same question")
    verifier_calls: list[VerifierCall] = Field(
        default_factory=list, description="the small-model calls the verifier made (the cost ledger records them)"
    )


class StoreRequest(BaseModel):
    """Arguments of `cache_store`."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1)
    namespace: str = "default"
    answer: ModelAnswer | None = Field(None, description="the model answer to keep")
    ttl: int | None = Field(None, ge=1, description="seconds; default FRUGAL_CACHE_TTL")
    bypass: bool = False
    semantic: Semantic | Literal[False] | None = Field(None, description="also index the user message for reuse by meaning")
    spent: list[ModelAnswer | None] | None = Field(
        None, description="every model answer this request paid for, an escalated one too; default: [answer]"
    )


class Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stored: bool
    cache: Literal["stored", "skipped", "error", "bypass"]
    answer: CachedAnswer | None = Field(None, description="the answer, stored or not")
    reason: str | None = None
    indexed: bool = Field(False, description="the user message was indexed for reuse by meaning")
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
    semantic = request.semantic if request.semantic and request.semantic.usable else None
    try:
        store = open_store(settings)
        exact = store.get_or_claim(key, settings.lease_seconds) if settings.lease_seconds > 0 else _get(store, key)
        # the normalised text's entry is read with the exact key (on Redis, in the same MGET)
        reading = asyncio.ensure_future(_same_text(request, semantic, settings)) if semantic is not None else None
        try:
            raw, claimed = await exact
        except BaseException:  # a down cache, or the request cancelled: the other read is not needed
            if reading is not None:
                reading.cancel()
            raise
        twin = await reading if reading is not None else None
    except CacheError as exc:
        step_logger().warning("prompt cache unavailable, treating as a miss: %s", exc)
        return Lookup(hit=False, cache="error")
    missed = Lookup(hit=False, cache="miss")
    if raw is None and claimed is not False and semantic is not None:
        missed = await semantic_lookup(request, semantic, store, settings, twin)
        if missed.hit:
            if claimed:
                await release(store, key)  # nothing to answer: identical requests waiting on it look again
            return missed
    if raw is None:
        raw = await claim_or_wait(store, key, settings.lease_seconds, claimed)
        if raw is None:
            return missed
    try:
        answer = CachedAnswer.model_validate_json(raw)
    except ValidationError:
        step_logger().warning("cache value for %s is not a v%d answer; treating as a miss", request.key[:12], CACHE_VALUE_VERSION)
        return Lookup(hit=False, cache="miss")
    return Lookup(hit=True, cache="hit", answer=answer)


#: what `_same_text` read: the entry of the same normalised text, none, or why it could not be read
Twin = Neighbour | CacheError | None


async def _get(store: AnswerStore, key: str) -> tuple[bytes | None, bool | None]:
    return await store.get(key), None


async def _same_text(request: LookupRequest, semantic: Semantic, settings: CacheSettings) -> Twin:
    """The group's entry whose user message is the same once normalised, read beside the exact key
    (a miss of both then costs one round trip, not two; a hit one key more in it)."""
    try:
        index = open_index(settings)
        if not await index.available():
            return None
        return await index.same_text(request.namespace, semantic.group, text_key(semantic.text))
    except CacheError as exc:
        return exc


def _warn_once(message: str, exc: Exception) -> None:
    """A semantic index that cannot work (down, or a Redis without vector sets) is logged once per
    process and cause, then at debug level. A down index makes every look-up say ``cache:
    error``; a Redis without vector sets (Redis 7) is a setup, not a failure: exact match only."""
    text = str(exc)
    if text in _warned:
        step_logger().debug(message, exc)
        return
    _warned.add(text)
    step_logger().warning(message, exc)


async def semantic_lookup(
    request: LookupRequest, semantic: Semantic, store: AnswerStore, settings: CacheSettings, twin: Twin
) -> Lookup:
    """The nearest cached prompt of the group that every guard lets through, or a miss. `twin`: what
    `_same_text` read."""
    try:
        index = open_index(settings)
        if not await index.available():
            _warn_once("semantic cache off, exact match only: %s", NO_VECTOR_SEARCH)
            return Lookup(hit=False, cache="miss")
        if isinstance(twin, CacheError):
            raise twin
        if twin is not None and twin.key != request.key and first_difference(twin.text, semantic.text) is None:
            served = await _serve(request, twin, store, settings, None, [])
            if served is not None:
                return served  # the same text once normalised: no embedding
        vector = (await embed([semantic.text]))[0]  # as written: the router's vector too
        neighbours = await index.nearest(request.namespace, semantic.group, vector, CANDIDATES)
    except CacheError as exc:
        _warn_once("semantic cache unavailable, exact match only: %s", exc)
        return Lookup(hit=False, cache="error")
    refused: Lookup | None = None
    calls: list[VerifierCall] = []
    for neighbour in neighbours:
        if neighbour.similarity < semantic.threshold:
            break
        similarity = round(neighbour.similarity, 4)
        reason = first_difference(neighbour.text, semantic.text)
        if reason is not None:
            refused = refused or Lookup(hit=False, cache="miss", similarity=similarity, refused=reason)
            continue
        verified = None
        if semantic.verify is not None and semantic.verify.applies(neighbour.similarity):
            probability, call = await same_question(neighbour.text, semantic.text, semantic.verify)
            verified = round(probability, 4)
            if call is not None:
                calls.append(call)
            if verified < semantic.verify.min_probability:
                refused = refused or Lookup(hit=False, cache="miss", similarity=similarity, refused="verifier", verified=verified)
                continue
        try:
            served = await _serve(request, neighbour, store, settings, verified, calls)
        except CacheError as exc:
            step_logger().warning("prompt cache unavailable, treating as a miss: %s", exc)
            return Lookup(hit=False, cache="error", verifier_calls=calls)
        if served is not None:
            return served
    missed = refused or Lookup(hit=False, cache="miss")
    missed.verifier_calls = calls
    return missed


async def _serve(
    request: LookupRequest,
    neighbour: Neighbour,
    store: AnswerStore,
    settings: CacheSettings,
    verified: float | None,
    calls: list[VerifierCall],
) -> Lookup | None:
    """The semantic hit on `neighbour`'s answer, or None when its exact entry is gone (purged,
    expired first) or unreadable."""
    raw = await store.get(cache_key(settings.prefix, request.namespace, neighbour.key))
    if raw is None:
        return None
    try:
        answer = CachedAnswer.model_validate_json(raw)
    except ValidationError:
        return None
    return Lookup(
        hit=True,
        cache="semantic",
        answer=answer,
        similarity=round(neighbour.similarity, 4),
        matched_key=neighbour.key,
        verified=verified,
        verifier_calls=calls,
    )


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
    indexed = False
    if request.semantic and request.semantic.usable:
        indexed = await index_prompt(request, request.semantic, settings)
    return Stored(stored=True, cache="stored", answer=record, cost_usd=cost, indexed=indexed)


async def index_prompt(request: StoreRequest, semantic: Semantic, settings: CacheSettings) -> bool:
    """Index the stored answer's user message in its group, for as long as the answer is kept."""
    try:
        index = open_index(settings)
        if not await index.available():
            _warn_once("semantic cache off, exact match only: %s", NO_VECTOR_SEARCH)
            return False
        vector = (await embed([semantic.text]))[0]  # as written: the router's vector too
        ttl = request.ttl or settings.ttl
        await index.add(request.namespace, semantic.group, request.key, semantic.text, vector, ttl, text_key(semantic.text))
    except CacheError as exc:
        _warn_once("semantic cache unavailable, answer stored for exact match only: %s", exc)
        return False
    return True


async def cache_lookup(request: LookupRequest) -> Lookup:
    """Exact-match lookup of a request key, then (with `semantic:`) by meaning; a down cache is a logged miss."""
    return await lookup(request)


async def cache_store(request: StoreRequest) -> Stored:
    """Store a valid, not rejected answer under its request key, with a TTL (and, with `semantic:`, index its prompt)."""
    return await store(request)
