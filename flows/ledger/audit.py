"""The shadow audit: a sample of accepted small-model answers, re-asked of the large model in the background.

Savings are only worth what quality they kept. When a run ends, the ledger's
observer hands this module the run's record (`consider`, a few microseconds on
the request path). A request is sampled by its key (`sampled`: the first 8
bytes of sha256("frugal-audit:" + key) below ``FRUGAL_AUDIT_RATE`` x 2^64, so the
same request is always sampled or never, in any process). Each accepted or
unchecked small answer of a sampled run becomes a job on a bounded queue
(`MAX_QUEUED`: beyond it jobs are dropped and counted, never the caller made to
wait), served by one background thread with its own event loop, `CONCURRENCY`
jobs at a time, after the caller has its answer. A job:

1. stops if the UTC day's audit spending has reached ``FRUGAL_AUDIT_BUDGET_USD``
   (`Budget`: a Redis counter beside a Redis ledger, shared by every process; the
   day's audit entries of an SQLite ledger, read once a day, plus this process's);
2. rebuilds the node's request from the run's values and sends it to the large
   tier through the providers' public call (`answer_large`);
3. judges agreement: exact for labels and for schema data; for free text, a
   second large-model call with a fixed rubric (`RUBRIC`) answering under the
   label constraint agree / disagree;
4. stores an ``audit`` entry (`flows.ledger.entry`): its cost, tokens, the
   verdict and the id of the entry it audited; never a prompt or an answer.

An audit never delays, changes or fails an answer: it starts after the run
ended, works on copies, and a failure is logged and dropped. The queue and the
thread buy exactly that: with every answer audited and large-model replies of
200 ms, the caller's p50 stayed at 0.91x that of audits off (13.2 vs 14.6 ms,
`tests/benchmarks/bench_audit.py --n 100`), while an inline audit would add
two large calls (~400 ms) to each answer. Semantic cache hits are audited the
same way (`AUDITED_HITS`): the new wording is re-asked of the pipeline's large
node and the cached answer judged against it, so `frugal report` shows how
often an answer served by meaning still served the question (their entries say
``audited_cache: semantic``); an exact hit repeats an answer already counted.

With ``FRUGAL_AUDIT_KEEP_PROMPTS=true`` the messages of audited and rejected
answers are kept beside the ledger (`flows.ledger.labels`) for router labels.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures.thread  # noqa: F401  (its exit hook registered before ours: see _at_exit_before_shutdown)
import hashlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import redis
from redis.exceptions import RedisError

from flows.engine.node_call import build_request
from flows.ledger.entry import LedgerEntry, Reference, settle
from flows.ledger.labels import keep_prompt
from flows.ledger.record import RunRecord, Seen
from flows.ledger.stores import Target, open_ledger
from flows.ledger.writer import WRITER, Batch
from tasks.core.canonical import canonical_json, sha256_of
from tasks.core.errors import CacheError
from tasks.core.model_request import ModelRequest
from tasks.core.records import ModelAnswer
from tasks.core.settings import Settings, get_settings, pin_settings, unpin_settings
from tasks.steps.call_llm import LlmRequest, answer_large

if TYPE_CHECKING:
    from flows.engine.observers import RunInfo
    from flows.language.compiler import Pipeline

log = logging.getLogger("frugal")

#: jobs queued or running at once; more are dropped (and counted): the queue never grows without limit
MAX_QUEUED = 256
#: audits in flight at once: enough for a 2 % sample of tens of requests a second at ~1 s per audit
CONCURRENCY = 4
#: lookups whose hits are audited like small answers: semantic hits (another wording's answer)
AUDITED_HITS: frozenset[str] = frozenset({"semantic"})
#: seconds the process waits at exit for audits still running
EXIT_WAIT = 10.0

VERDICTS = ["agree", "disagree"]
RUBRIC = (
    "You compare a candidate answer with a reference answer to the same request. Say agree when the "
    "candidate would serve the person who asked as well as the reference: it gives the same facts, "
    "figures, names, labels and conclusions, contradicts nothing in the reference, leaves out none of "
    "its key points and adds no claim the request does not support. Wording, length, order and style "
    'do not matter. Otherwise say disagree. Answer with JSON {"label": L} where L is agree or disagree.'
)


def sampled(key: str, rate: float) -> bool:
    """Whether the request with this key is audited at this rate: deterministic, uniform over keys."""
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    digest = hashlib.sha256(b"frugal-audit:" + key.encode()).digest()
    return int.from_bytes(digest[:8], "big") < rate * 2**64


def request_key(rec: RunRecord, inputs: dict[str, Any]) -> str:
    """The run's request key; for a pipeline without `hash_prompt`, a hash of its name, version and inputs."""
    if rec.key is not None:
        return rec.key
    return sha256_of({"pipeline": rec.pipeline, "version": rec.version, "inputs": inputs})


@dataclass
class Job:
    """One answer to audit (or, `keep_only`, a rejected answer whose prompt is kept for labels)."""

    pipeline: Pipeline
    ask: str  # the node whose request is re-asked
    values: dict[str, Any]  # the run's values: the request is rebuilt from them in the background
    answer: dict[str, Any]  # the answer audited, as the run's values hold it
    rec: RunRecord
    seen: Seen
    key: str
    settings: Settings
    target: Target
    reference: Reference
    retention_days: int
    keep_only: bool = False

    @property
    def entry_id(self) -> str:
        return f"{self.rec.run_id}:{self.seen.node}"


def _large_node(pipeline: Pipeline) -> str | None:
    """The node a hit's request is re-asked through: the pipeline's first plain large-model node."""
    for node_id, node in pipeline.nodes.items():
        if node.step.name == "call_llm" and node.for_each is None:
            return node_id
    return None


def candidates(run: RunInfo, rec: RunRecord) -> list[tuple[str, Seen, dict[str, Any]]]:
    """(node to re-ask, what the ledger saw, the answer) of every answer in the run that an audit may check."""
    out = []
    for s in rec.seen:
        if s.kind == "call" and s.route == "small" and s.cache != "result" and not s.rejected:
            answer = run.values.get(s.node)
            if isinstance(answer, dict):
                out.append((s.node, s, answer))
        elif s.kind == "hit" and s.lookup in AUDITED_HITS and (ask := _large_node(run.pipeline)) is not None:
            lookup = run.values.get(s.node)
            if isinstance(lookup, dict) and isinstance(lookup.get("answer"), dict):
                out.append((ask, s, lookup["answer"]))
    return out


class Budget:
    """What audits spent today (UTC), per ledger: read from and added to a Redis counter beside a Redis
    ledger (every process shares it), or from the day's audit entries of an SQLite ledger."""

    SCALE = 10**12  # the Redis counter counts picodollars (an integer: INCRBY is exact)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local: dict[tuple[Target, str], Decimal] = {}
        self._clients: dict[Target, redis.Redis] = {}

    @staticmethod
    def day() -> str:
        return datetime.now(UTC).date().isoformat()

    def _redis(self, target: Target) -> redis.Redis:
        with self._lock:
            client = self._clients.get(target)
            if client is None:
                client = self._clients[target] = redis.Redis.from_url(
                    target.location, socket_connect_timeout=target.timeout, socket_timeout=target.timeout
                )
            return client

    def counter(self, target: Target, day: str) -> str:
        return f"{target.key}:audit-spent:{day}"

    def spent(self, target: Target) -> Decimal:
        day = self.day()
        if target.kind == "redis":
            try:
                raw = self._redis(target).get(self.counter(target, day))
            except (RedisError, OSError) as exc:
                raise CacheError(f"audit budget in {target.describe()} cannot be read: {exc}") from exc
            return Decimal(int(raw or 0)) / self.SCALE  # type: ignore[arg-type]
        with self._lock:
            known = self._local.get((target, day))
        if known is None:
            start = datetime.fromisoformat(day).replace(tzinfo=UTC)
            known = sum((e.cost or Decimal(0) for e in open_ledger(target).read(start) if e.kind == "audit"), Decimal(0))
            with self._lock:
                known = self._local.setdefault((target, day), known)
        return known

    def add(self, target: Target, cost: Decimal) -> None:
        day = self.day()
        if target.kind == "redis":
            amount = int((cost * self.SCALE).to_integral_value(rounding="ROUND_CEILING"))
            try:
                pipe = self._redis(target).pipeline(transaction=False)
                pipe.incrby(self.counter(target, day), amount)
                pipe.expire(self.counter(target, day), 3 * 86400)
                pipe.execute()
            except (RedisError, OSError) as exc:
                raise CacheError(f"audit budget in {target.describe()} cannot be written: {exc}") from exc
            return
        self.spent(target)  # seeded from the ledger first
        with self._lock:
            self._local[(target, day)] += cost


@dataclass
class AuditCounts:
    """What the auditor did in this process (for logs and tests)."""

    queued: int = 0
    done: int = 0
    failed: int = 0
    dropped: int = 0  # the queue was full
    over_budget: int = 0
    unpriced: int = 0


@dataclass
class Auditor:
    """The audit queue and its background thread (one per process)."""

    counts: AuditCounts = field(default_factory=AuditCounts)
    budget: Budget = field(default_factory=Budget)
    #: called with each audit entry made (tests); the entry is queued to the ledger either way
    on_entry: Callable[[LedgerEntry], None] | None = None

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._pending = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._said: set[str] = set()
        self._unpriced_days: set[tuple[Target, str]] = set()

    # -- the request path ------------------------------------------------------------------

    def consider(self, run: RunInfo, rec: RunRecord, target: Target, reference: Reference, retention_days: int) -> int:
        """Queue the run's sampled answers for an audit; returns how many. Cheap: it runs when a run ends."""
        settings = get_settings()  # the run's snapshot
        audit = settings.audit
        if audit.rate <= 0 and not audit.keep_prompts:
            return 0
        queued = 0
        key: str | None = None
        for ask, seen, answer in candidates(run, rec):
            key = key or request_key(rec, run.inputs)
            if sampled(key, audit.rate):
                job = Job(run.pipeline, ask, run.values, answer, rec, seen, key, settings, target, reference, retention_days)
                queued += self.submit(job)
        if audit.keep_prompts:  # rejected small answers: labelled "large" for the router, with their prompt
            for s in rec.seen:
                if s.kind == "call" and s.route == "small" and s.rejected and s.cache != "result":
                    key = key or request_key(rec, run.inputs)
                    job = Job(run.pipeline, s.node, run.values, {}, rec, s, key, settings, target, reference, retention_days)
                    job.keep_only = True
                    self.submit(job)
        return queued

    def submit(self, job: Job) -> int:
        with self._cond:
            if self._pending >= MAX_QUEUED:
                self.counts.dropped += 1
                if self.counts.dropped in (1, 10, 100) or self.counts.dropped % 1000 == 0:
                    log.warning("audit: %d jobs dropped so far: the audit queue is full (%d)", self.counts.dropped, MAX_QUEUED)
                return 0
            self._pending += 1
            self.counts.queued += 1
            loop = self._ensure_loop()
        loop.call_soon_threadsafe(self._start, job)
        return 1

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="frugal-audit", daemon=True).start()
            self._loop = loop
        return self._loop

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued audit has finished; False if some are still running after `timeout`."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    @property
    def pending(self) -> int:
        return self._pending

    def _reset(self) -> None:  # a forked child starts without the parent's thread and queue
        self._cond = threading.Condition()
        self._pending = 0
        self._loop = None
        self._semaphore = None

    # -- the background thread -------------------------------------------------------------

    def _start(self, job: Job) -> None:
        asyncio.get_running_loop().create_task(self._run(job))

    async def _run(self, job: Job) -> None:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(CONCURRENCY)
        pinned = pin_settings(job.settings)  # the run's settings, whatever the environment says now
        try:
            async with self._semaphore:
                if job.keep_only:
                    await self._keep(job)
                else:
                    await self.audit(job)
        except Exception as exc:  # an audit never fails anything: said, and dropped
            self.counts.failed += 1
            log.warning(
                "audit of %s (%s, node %s) failed; the answer was not affected: %s",
                job.entry_id,
                job.rec.pipeline,
                job.seen.node,
                exc,
            )
        finally:
            unpin_settings(pinned)
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    def _request(self, job: Job) -> LlmRequest:
        asked = build_request(job.pipeline.nodes[job.ask], job.values)
        assert isinstance(asked, ModelRequest)
        shared = {name: getattr(asked, name) for name in ModelRequest.model_fields if name not in ("model", "price")}
        return LlmRequest(**shared)

    async def _keep(self, job: Job) -> None:
        request = self._request(job)
        await asyncio.to_thread(keep_prompt, job.target, job.entry_id, request.chat_messages(), job.retention_days)

    async def audit(self, job: Job) -> LedgerEntry | None:
        """Audit one answer: the large model's answer, the verdict, the entry. None: over budget."""
        limit = Decimal(str(job.settings.audit.budget_usd))
        day = Budget.day()
        if (job.target, day) in self._unpriced_days:
            self.counts.unpriced += 1
            return None
        spent = await asyncio.to_thread(self.budget.spent, job.target)
        if spent >= limit:
            self.counts.over_budget += 1
            self._say_once(
                f"budget {day}",
                f"audit: today's budget of ${limit} is spent (${spent}); audits resume tomorrow (FRUGAL_AUDIT_BUDGET_USD)",
            )
            return None
        request = self._request(job)
        large = await answer_large(request)
        calls = [large]
        judged_by: Literal["label", "schema", "rubric"]
        agreed: bool | None = None
        small = job.answer
        if request.labels:
            judged_by = "label"
            if large.valid and small.get("label") is not None:
                agreed = large.label == small.get("label")
        elif request.json_schema is not None:
            judged_by = "schema"
            if large.valid and small.get("data") is not None:
                agreed = canonical_json(large.data) == canonical_json(small.get("data"))
        else:
            judged_by = "rubric"
            if large.valid:
                verdict = await answer_large(judge_request(request, large.text, str(small.get("text", ""))))
                calls.append(verdict)
                agreed = None if verdict.label is None else verdict.label == "agree"
        entry = self._entry(job, calls, agreed, judged_by)
        if entry.cost is None:
            self._unpriced_days.add((job.target, day))
            log.warning(
                "audit: the large model %s has no price, so FRUGAL_AUDIT_BUDGET_USD cannot be kept: audits stop for "
                "today; price it in FRUGAL_PRICE_OVERRIDES",
                large.model,
            )
        else:
            await asyncio.to_thread(self.budget.add, job.target, entry.cost)
        WRITER.submit(Batch(job.target, job.reference, job.retention_days, entries=[entry], settled=True))
        if job.settings.audit.keep_prompts:
            await asyncio.to_thread(keep_prompt, job.target, job.entry_id, request.chat_messages(), job.retention_days)
        self.counts.done += 1
        if self.on_entry is not None:
            self.on_entry(entry)
        return entry

    def _entry(self, job: Job, calls: list[ModelAnswer], agreed: bool | None, judged_by: str) -> LedgerEntry:
        rec, seen = job.rec, job.seen
        costs = [c.cost_usd for c in calls]
        uncached = [c.uncached_cost_usd for c in calls]
        entry = LedgerEntry.model_validate(
            {
                "id": f"{job.entry_id}:audit",
                "ts": datetime.now(UTC),
                "run_id": rec.run_id,
                "pipeline": rec.pipeline,
                "version": rec.version,
                "node": seen.node,
                "mode": rec.mode,
                "deployment_id": rec.deployment_id,
                "flow_run_id": rec.flow_run_id,
                "namespace": rec.namespace,
                "kind": "audit",
                "key": job.key,
                "model": calls[0].model,
                "route": "large",
                "cache": "none",
                "input_tokens": sum(c.usage.input_tokens for c in calls),
                "output_tokens": sum(c.usage.output_tokens for c in calls),
                "cached_input_tokens": sum(c.usage.cached_input_tokens for c in calls),
                "cache_write_tokens": sum(c.usage.cache_write_tokens for c in calls),
                "estimated": any(c.usage.estimated for c in calls),
                "cost": None if None in costs else sum((Decimal(str(c)) for c in costs), Decimal(0)),
                "uncached_cost": None if None in uncached else sum((Decimal(str(c)) for c in uncached), Decimal(0)),
                "latency_ms": round(sum(c.latency_ms for c in calls), 3),
                "audit_of": job.entry_id,
                "audited_model": seen.model,
                "audited_cache": seen.lookup if seen.kind == "hit" else None,
                "agreed": agreed,
                "judged_by": judged_by,
            }
        )
        return settle(entry, job.reference)

    def _say_once(self, topic: str, text: str) -> None:
        if topic not in self._said:
            self._said.add(topic)
            log.warning("%s", text)


def judge_request(asked: LlmRequest, reference: str, candidate: str) -> LlmRequest:
    """The rubric call: the request as sent, the large model's answer as the reference, the audited one as the candidate."""
    request = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in asked.chat_messages())
    prompt = (
        f"Request:\n<<<\n{request}\n>>>\n\nReference answer:\n<<<\n{reference}\n>>>\n\nCandidate answer:\n<<<\n{candidate}\n>>>"
    )
    return LlmRequest(system=RUBRIC, prompt=prompt, labels=VERDICTS, max_tokens=16, temperature=0.0)


AUDITOR = Auditor()
os.register_at_fork(after_in_child=AUDITOR._reset)


def _finish_at_exit() -> None:
    if AUDITOR.pending and not AUDITOR.drain(EXIT_WAIT):
        print(f"frugal: {AUDITOR.pending} audits still running at exit were dropped", file=sys.stderr)


def _at_exit_before_shutdown(callback: Callable[[], None]) -> None:
    """Run `callback` when the interpreter starts to exit, while audits can still finish: threading's
    exit hooks run before Python's thread pools refuse work (what `asyncio.to_thread` needs; their own
    hook, registered earlier by the import above, runs after ours) and before the atexit handlers
    that close the providers' HTTP sessions. Then the ledger writer's atexit flush writes the
    audits' entries. (Under plain atexit a one-shot `frugal run` lost every audit it had paid for.)"""
    register = getattr(threading, "_register_atexit", None)  # CPython >= 3.9
    (register or atexit.register)(callback)


_at_exit_before_shutdown(_finish_at_exit)
