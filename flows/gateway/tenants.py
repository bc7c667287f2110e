"""Tenants: API keys (stored as sha256 hashes, never in clear) mapped to a namespace, a daily
budget in US dollars and a request rate.

The keys file (``FRUGAL_GATEWAY_KEYS_FILE``, YAML) is written by ``frugal gateway-key add``:

    tenants:
      - name: acme
        namespace: acme            # the cache namespace: tenants never see each other's answers
        key_sha256: 9f86d0...      # sha256 of the key; the key itself is shown once, at creation
        budget_usd_per_day: 5.0    # null: no budget
        requests_per_minute: 600   # null: no limit

Spending is read from the cost ledger (shared by every worker and process) every
``FRUGAL_GATEWAY_BUDGET_REFRESH_SECONDS`` and counted here in between, so a tenant is
stopped within one refresh of reaching its budget, wherever its requests ran. The request
rate is counted per worker process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.ledger.entry import LedgerEntry
from tasks.core.errors import ConfigError

log = logging.getLogger("frugal.gateway")
KEY_PREFIX = "ff-"


class Tenant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    namespace: str = Field("", description="cache namespace; default: the tenant's name")
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    budget_usd_per_day: Decimal | None = Field(None, ge=0)
    requests_per_minute: int | None = Field(None, ge=1)

    def model_post_init(self, _context: object) -> None:
        if not self.namespace:
            self.namespace = self.name


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenants: list[Tenant] = Field(default_factory=list)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_keys(path: Path | None) -> dict[str, Tenant]:
    """Tenants by key hash; empty when no file is configured."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        parsed = KeysFile.model_validate(data)
    except OSError as exc:
        raise ConfigError(f"FRUGAL_GATEWAY_KEYS_FILE={path} cannot be read: {exc.strerror}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"FRUGAL_GATEWAY_KEYS_FILE={path} is not a valid keys file: {exc}".splitlines()[0]) from exc
    tenants: dict[str, Tenant] = {}
    for tenant in parsed.tenants:
        if tenant.key_sha256 in tenants:
            raise ConfigError(f"FRUGAL_GATEWAY_KEYS_FILE={path}: two tenants share one key ({tenant.name})")
        tenants[tenant.key_sha256] = tenant
    return tenants


def add_key(path: Path, name: str, budget: Decimal | None, rpm: int | None, namespace: str = "") -> str:
    """Create a key for a new tenant, store its hash in `path`, and return the key (shown once)."""
    current = load_keys(path) if path.exists() else {}
    if any(t.name == name for t in current.values()):
        raise ConfigError(f"tenant '{name}' already has a key in {path}; remove its entry to replace it")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    tenant = Tenant(name=name, namespace=namespace, key_sha256=key_hash(key), budget_usd_per_day=budget, requests_per_minute=rpm)
    tenants = [*current.values(), tenant]
    data = {"tenants": [t.model_dump(mode="json", exclude_none=True) for t in tenants]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
    return key


def find_tenant(tenants: dict[str, Tenant], key: str) -> Tenant | None:
    """The tenant of a key, compared in constant time against the stored hash."""
    digest = key_hash(key)
    tenant = tenants.get(digest)
    if tenant is not None and hmac.compare_digest(tenant.key_sha256, digest):
        return tenant
    return None


@dataclass
class RateLimiter:
    """Requests per minute per tenant, over a sliding minute, in this worker process."""

    _seen: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))

    def retry_after(self, tenant: Tenant, now: float | None = None) -> float | None:
        """None if the request may go (and count it); else the seconds until it may."""
        limit = tenant.requests_per_minute
        if limit is None:
            return None
        now = time.monotonic() if now is None else now
        seen = self._seen[tenant.name]
        while seen and seen[0] <= now - 60:
            seen.popleft()
        if len(seen) >= limit:
            return max(0.0, seen[0] + 60 - now)
        seen.append(now)
        return None


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


@dataclass
class Spending:
    """Dollars spent today per namespace: the ledger's figure at the last refresh, plus what this
    process answered since (each response's cost). Conservative: an answer recorded in the ledger
    after a refresh is counted twice until the next one."""

    day: str = field(default_factory=_today)
    from_ledger: dict[str, Decimal] = field(default_factory=dict)
    since_refresh: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    def spent(self, namespace: str) -> Decimal:
        if self.day != _today():  # a new day: yesterday's spending no longer counts
            self.reset(_today(), {})
        return self.from_ledger.get(namespace, Decimal(0)) + self.since_refresh.get(namespace, Decimal(0))

    def add(self, namespace: str, cost: object) -> None:
        if cost is None:
            return
        try:
            self.since_refresh[namespace] += Decimal(str(cost))
        except ArithmeticError:
            log.warning("gateway: a response's cost %r is not a number; not counted against the budget", cost)

    def reset(self, day: str, totals: dict[str, Decimal]) -> None:
        self.day, self.from_ledger, self.since_refresh = day, totals, defaultdict(Decimal)


def ledger_totals(entries: list[LedgerEntry]) -> dict[str, Decimal]:
    """Today's spending per namespace from ledger entries: the model calls paid for answers."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for entry in entries:
        if entry.kind == "call" and entry.paid and entry.cost is not None:
            totals[entry.namespace] += entry.cost
    return dict(totals)
