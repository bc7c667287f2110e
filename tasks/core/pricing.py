"""What a model call costs: the genai-prices database, overrides, self-hosted models at $0.

A model is named ``provider/model`` as answers name it (``openai/gpt-4o-mini``,
``anthropic/claude-haiku-4-5``, ``ollama/llama3.2:1b``, ``local/smollm2-135m``).
Its rates come from the first of:

1. the node's own ``price:`` (``with: {price: {...}}`` on `call_slm` / `call_llm`);
2. ``FRUGAL_PRICE_OVERRIDES`` (JSON), then ``FRUGAL_PRICES_FILE`` (JSON or YAML): the
   exact id first, then globs (``ollama/*``), the most specific first;
3. self-hosted providers (``local``, ``ollama``): $0 per token;
4. the genai-prices database (OpenAI, Anthropic and the other providers it knows),
   at today's prices.

A model none of these knows has no price: its calls are recorded with ``cost:
null`` and a warning says once how to price it, never a made-up number.

Costs are `Decimal` US dollars. Cache reads and writes are priced at the
provider's own rates (Anthropic: reads 0.1x input, 5-minute writes 1.25x;
OpenAI: cached input at its discount); a rate the database does not list is
priced as plain input, as genai-prices does.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, ValidationError, model_validator

from tasks.core.completion import Usage
from tasks.core.errors import ConfigError
from tasks.core.settings import PriceSettings, get_settings

log = logging.getLogger("frugal")

#: US dollars as Decimal; a JSON number in answers (exact to the 15 significant digits a float keeps)
Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]

MTOK = Decimal(1_000_000)
ZERO = Decimal(0)
SELF_HOSTED = ("local", "ollama")

if TYPE_CHECKING:
    from genai_prices.types import TieredPrices

#: a flat price, or genai-prices' tiers (imported when the database is first read: it takes ~0.1 s)
Rate = Union[Decimal, "TieredPrices"]  # noqa: UP007 - a string forward reference cannot use |


class PriceOverride(BaseModel):
    """A model's price, in US dollars, given by hand: per million tokens, per call, or per hour."""

    model_config = ConfigDict(extra="forbid")

    input_mtok: Decimal = Field(ZERO, ge=0, description="per million prompt tokens")
    output_mtok: Decimal = Field(ZERO, ge=0, description="per million completion tokens")
    cache_read_mtok: Decimal | None = Field(None, ge=0, description="per million cached prompt tokens; default: input")
    cache_write_mtok: Decimal | None = Field(None, ge=0, description="per million tokens written to the cache; default: input")
    per_call: Decimal = Field(ZERO, ge=0, description="a fixed amount per call")
    hourly_usd: Decimal | None = Field(None, ge=0, description="a machine's hourly cost, amortised over calls_per_hour")
    calls_per_hour: int | None = Field(None, gt=0, description="calls the machine serves in an hour")

    @model_validator(mode="after")
    def _hourly_needs_calls(self) -> PriceOverride:
        if (self.hourly_usd is None) != (self.calls_per_hour is None):
            raise ValueError("hourly_usd and calls_per_hour go together: the hourly cost is shared by that many calls")
        return self

    def rates(self, model: str, source: str) -> Rates:
        per_call = self.per_call
        if self.hourly_usd is not None and self.calls_per_hour:
            per_call += self.hourly_usd / self.calls_per_hour
        return Rates(model, source, self.input_mtok, self.output_mtok, self.cache_read_mtok, self.cache_write_mtok, per_call)


def _rate(rate: Rate, total_input: int) -> Decimal:
    """A flat rate, or the tier the whole prompt falls in (genai-prices' "cliff" tiers)."""
    if isinstance(rate, Decimal):
        return rate
    for tier in reversed(rate.tiers):
        if total_input > tier.start:
            return tier.price
    return rate.base


@dataclass(frozen=True)
class Rates:
    """One model's prices: USD per million tokens, plus a fixed amount per call."""

    model: str
    source: str
    input_mtok: Rate
    output_mtok: Rate
    cache_read_mtok: Rate | None = None
    cache_write_mtok: Rate | None = None
    per_call: Decimal = ZERO

    def cost(self, usage: Usage) -> Decimal:
        """What the call cost: cached tokens at the cache rates, the rest at the input rate."""
        total = usage.input_tokens
        read, write = usage.cached_input_tokens, usage.cache_write_tokens
        uncached = max(total - read - write, 0)
        in_rate = _rate(self.input_mtok, total)
        read_rate = in_rate if self.cache_read_mtok is None else _rate(self.cache_read_mtok, total)
        write_rate = in_rate if self.cache_write_mtok is None else _rate(self.cache_write_mtok, total)
        tokens = uncached * in_rate + read * read_rate + write * write_rate + usage.output_tokens * _rate(self.output_mtok, total)
        return tokens / MTOK + self.per_call

    def full_cost(self, usage: Usage) -> Decimal:
        """What the same tokens cost without the provider's prompt cache: every prompt token at the input rate."""
        return self.list_price(usage.input_tokens, usage.output_tokens)

    def list_price(self, input_tokens: int, output_tokens: int) -> Decimal:
        """`full_cost` from two counts."""
        tokens = input_tokens * _rate(self.input_mtok, input_tokens) + output_tokens * _rate(self.output_mtok, input_tokens)
        return tokens / MTOK + self.per_call

    def describe(self) -> str:
        parts = [f"${_show(self.input_mtok)}/M in", f"${_show(self.output_mtok)}/M out"]
        if self.cache_read_mtok is not None:
            parts.append(f"${_show(self.cache_read_mtok)}/M cache read")
        if self.cache_write_mtok is not None:
            parts.append(f"${_show(self.cache_write_mtok)}/M cache write")
        if self.per_call:
            parts.append(f"${self.per_call:f}/call")
        return f"{self.model}: {', '.join(parts)} ({self.source})"


def _show(rate: Rate) -> str:
    return f"{rate}" if isinstance(rate, Decimal) else f"{rate.base}+tiers"


# -- overrides ---------------------------------------------------------------------------


def _parse_overrides(raw: Any, where: str) -> list[tuple[str, PriceOverride]]:
    if not isinstance(raw, dict):
        raise ConfigError(f'{where} must be an object mapping model ids (or globs) to prices, e.g. {{"ollama/*": {{}}}}')
    out: list[tuple[str, PriceOverride]] = []
    for pattern, value in raw.items():
        try:
            out.append((str(pattern).lower(), PriceOverride.model_validate(value or {})))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'price'}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{where}: price of '{pattern}' is invalid: {problems}") from exc
    return out


def _load_overrides(prices: PriceSettings) -> list[tuple[str, PriceOverride]]:
    """Overrides in the order they are tried: the environment's before the file's."""
    found: list[tuple[str, PriceOverride]] = []
    if prices.price_overrides.strip():
        try:
            raw = json.loads(prices.price_overrides)
        except ValueError as exc:
            raise ConfigError(f"FRUGAL_PRICE_OVERRIDES is not valid JSON: {exc}") from exc
        found += _parse_overrides(raw, "FRUGAL_PRICE_OVERRIDES")
    if prices.prices_file is not None:
        path = prices.prices_file.expanduser()
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"FRUGAL_PRICES_FILE={path} cannot be read: {exc}") from exc
        found += _parse_overrides(raw or {}, f"FRUGAL_PRICES_FILE ({path})")
    return found


def _match(model: str, overrides: list[tuple[str, PriceOverride]]) -> PriceOverride | None:
    key = model.lower()
    for pattern, price in overrides:
        if pattern == key:
            return price
    globs = [(p, price) for p, price in overrides if any(c in p for c in "*?[")]
    globs.sort(key=lambda item: -len(item[0].replace("*", "")))  # most specific first, stable otherwise
    for pattern, price in globs:
        if fnmatch.fnmatchcase(key, pattern):
            return price
    return None


# -- the database ------------------------------------------------------------------------


def _from_database(model: str, day: date) -> Rates | None:
    from genai_prices import data_snapshot

    provider, _, name = model.partition("/")
    if not name:
        provider, name = "", provider
    try:
        found_provider, info = data_snapshot.get_snapshot().find_provider_model(name, None, provider or None, None)
    except LookupError:
        return None
    when = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    price = info.get_prices(when)
    if price.input_mtok is None and price.output_mtok is None:
        return None
    requests = price.requests_kcount
    per_call = (requests / 1000) if isinstance(requests, Decimal) else ZERO
    return Rates(
        model,
        f"genai-prices: {found_provider.id}/{info.id}",
        price.input_mtok or ZERO,
        price.output_mtok or ZERO,
        price.cache_read_mtok,
        price.cache_write_mtok,
        per_call,
    )


# -- resolution --------------------------------------------------------------------------

_lock = threading.Lock()
_resolved: dict[tuple[str, date], Rates | None] = {}
_overrides: tuple[PriceSettings, list[tuple[str, PriceOverride]]] | None = None
_warned: set[str] = set()


def _settings_overrides(prices: PriceSettings) -> list[tuple[str, PriceOverride]]:
    global _overrides
    if _overrides is None or _overrides[0] is not prices:  # a new settings snapshot: prices may have changed
        _overrides = (prices, _load_overrides(prices))
        _resolved.clear()
    return _overrides[1]


def rates_for(model: str, override: PriceOverride | None = None) -> Rates | None:
    """The rates of `model` (``provider/model``), or None when nothing prices it."""
    if override is not None:
        return override.rates(model, "node price")
    prices = get_settings().prices
    day = datetime.now(UTC).date()
    with _lock:
        overrides = _settings_overrides(prices)
        key = (model, day)
        if key in _resolved:
            return _resolved[key]
    found = _match(model, overrides)
    if found is not None:
        rates: Rates | None = found.rates(model, "price override")
    elif model.split("/", 1)[0] in SELF_HOSTED:
        rates = Rates(model, "self-hosted", ZERO, ZERO)
    else:
        rates = _from_database(model, day)
    with _lock:
        if len(_resolved) > 4096:
            _resolved.clear()
        _resolved[key] = rates
    return rates


def warn_unpriced(model: str) -> None:
    """Say once per model that it has no price, and how to give it one."""
    with _lock:
        if model in _warned:
            return
        _warned.add(model)
    log.warning(
        "no price for model '%s': its calls are recorded with cost null. Price it with "
        'FRUGAL_PRICE_OVERRIDES=\'{"%s": {"input_mtok": "...", "output_mtok": "..."}}\' (USD per million tokens)',
        model,
        model,
    )


def cost_of(model: str, usage: Usage, override: PriceOverride | None = None) -> Decimal | None:
    """What a call of `model` with `usage` cost, or None (and a warning) when it has no price."""
    rates = rates_for(model, override)
    if rates is None:
        warn_unpriced(model)
        return None
    return rates.cost(usage)
