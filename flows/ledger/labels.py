"""Labels for the router, from the ledger: which requests the small model could answer, and which it could not.

    from flows.ledger.labels import router_labels
    for label in router_labels(since):        # label.label: "small" or "large"
        train(label.messages, label.label)    # messages: None unless prompts are kept

A small-model answer the check rejected (escalated, retried or flagged) is
labelled ``large``; an audited one (`flows.ledger.audit`) is labelled ``small``
when the large model agreed and ``large`` when it did not. The ledger holds no
prompt, only the request key. The prompts of labelled answers are kept beside
it only with ``FRUGAL_AUDIT_KEEP_PROMPTS=true``: in a Redis sorted set
``PREFIX:ledger:prompts`` (member: JSON id + messages, score: time) or a table
``ledger_prompts`` of the SQLite file, dropped with the ledger's retention.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import redis
from redis.exceptions import RedisError

from flows.ledger.entry import LedgerEntry
from flows.ledger.stores import Target, open_ledger
from tasks.core.errors import CacheError

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class RouterLabel:
    """One labelled request: what the router should have chosen."""

    entry_id: str  # the ledger entry of the small answer
    key: str | None  # the request key
    pipeline: str
    node: str
    model: str  # the small model whose answer was judged
    label: Literal["small", "large"]
    why: str  # "rejected: REASON", "audit agreed", "audit disagreed"
    messages: Messages | None  # only when prompts are kept


def labels_from(entries: Iterable[LedgerEntry], prompts: dict[str, Messages] | None = None) -> list[RouterLabel]:
    """The router labels the entries give (oldest first), with the kept prompts joined in by entry id."""
    prompts = prompts or {}
    out: list[RouterLabel] = []
    for e in entries:
        if e.kind == "call" and e.route == "small" and e.verdict == "rejected":
            label: Literal["small", "large"] = "large"
            why = f"rejected: {e.reject_reason or 'malformed'}"
            entry_id, model = e.id, e.model
        elif e.kind == "audit" and e.agreed is not None and e.audit_of is not None:
            label, why = ("small", "audit agreed") if e.agreed else ("large", "audit disagreed")
            entry_id, model = e.audit_of, e.audited_model or ""
        else:
            continue
        out.append(RouterLabel(entry_id, e.key, e.pipeline, e.node, model, label, why, prompts.get(entry_id)))
    return out


def router_labels(target: Target, since: datetime | None = None) -> list[RouterLabel]:
    """The labels of a ledger (`flows.ledger.observer.config().target`), with prompts where kept."""
    entries = open_ledger(target).read(since)
    return labels_from(entries, read_prompts(target, since))


# -- kept prompts --------------------------------------------------------------------------

_lock = threading.Lock()
_redis: dict[Target, redis.Redis] = {}
_sqlite: dict[Target, sqlite3.Connection] = {}


def _prompts_key(target: Target) -> str:
    return f"{target.key}:prompts"


def _db(target: Target) -> sqlite3.Connection:
    db = _sqlite.get(target)
    if db is None:
        try:
            Path(target.location).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(target.location, check_same_thread=False, isolation_level=None, timeout=10)
            db.execute(
                "CREATE TABLE IF NOT EXISTS ledger_prompts (id TEXT PRIMARY KEY, ts REAL NOT NULL, messages TEXT NOT NULL)"
            )
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(f"kept prompts in {target.location} cannot be opened: {exc}") from exc
        _sqlite[target] = db
    return db


def _client(target: Target) -> redis.Redis:
    client = _redis.get(target)
    if client is None:
        client = _redis[target] = redis.Redis.from_url(
            target.location, socket_connect_timeout=target.timeout, socket_timeout=target.timeout
        )
    return client


def keep_prompt(target: Target, entry_id: str, messages: Messages, retention_days: int) -> None:
    """Keep the messages of a labelled answer (only called with FRUGAL_AUDIT_KEEP_PROMPTS=true)."""
    now = time.time()
    with _lock:
        if target.kind == "redis":
            member = orjson.dumps({"id": entry_id, "messages": messages})
            try:
                pipe = _client(target).pipeline(transaction=False)
                pipe.zadd(_prompts_key(target), {member: now})
                if retention_days:
                    pipe.zremrangebyscore(_prompts_key(target), "-inf", f"({now - retention_days * 86400}")
                pipe.execute()
            except (RedisError, OSError) as exc:
                raise CacheError(f"kept prompts in {target.describe()} cannot be written: {exc}") from exc
            return
        try:
            db = _db(target)
            db.execute(
                "INSERT OR REPLACE INTO ledger_prompts (id, ts, messages) VALUES (?, ?, ?)",
                (entry_id, now, orjson.dumps(messages).decode()),
            )
            if retention_days:
                db.execute("DELETE FROM ledger_prompts WHERE ts < ?", (now - retention_days * 86400,))
        except sqlite3.Error as exc:
            raise CacheError(f"kept prompts in {target.location} cannot be written: {exc}") from exc


def read_prompts(target: Target, since: datetime | None = None) -> dict[str, Messages]:
    """The kept prompts by entry id (empty when none were kept)."""
    low = since.timestamp() if since else None
    with _lock:
        if target.kind == "redis":
            try:
                raw: list[bytes] = _client(target).zrangebyscore(_prompts_key(target), low or "-inf", "+inf")  # type: ignore[assignment]
            except (RedisError, OSError) as exc:
                raise CacheError(f"kept prompts in {target.describe()} cannot be read: {exc}") from exc
            items: list[Any] = [orjson.loads(r) for r in raw]
            return {item["id"]: item["messages"] for item in items}
        try:
            rows = _db(target).execute("SELECT id, messages FROM ledger_prompts WHERE ts >= ?", (low or 0.0,)).fetchall()
        except sqlite3.Error as exc:
            raise CacheError(f"kept prompts in {target.location} cannot be read: {exc}") from exc
        return {row[0]: orjson.loads(row[1]) for row in rows}
