"""Which provider answers for each tier, decided once per process and said once.

Small tier, ``FRUGAL_SLM_PROVIDER=auto`` (the default): Ollama when
``OLLAMA_HOST`` (or one of ``OLLAMA_HOSTS``) is set and answers at start, else the bundled in-process model
(`local`). Whether Ollama answers is asked once per host and process, without
blocking the event loop (`probe_tiers`, awaited before a pipeline run reads the
tiers). Large tier, ``FRUGAL_LLM_PROVIDER=auto``: Anthropic when
``ANTHROPIC_API_KEY`` is set, OpenAI(-compatible) when ``OPENAI_API_KEY`` or
``OPENAI_BASE_URL`` is, else the local model with a one-line warning, so the
pipelines still run. Results always name the model that answered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any

import httpx

from tasks.core.redact import public_url
from tasks.core.settings import LlmSettings, Settings, SlmSettings, get_settings
from tasks.providers.anthropic import DEFAULT_ANTHROPIC_URL
from tasks.providers.llama_cpp import DEFAULT_MODEL_ID
from tasks.providers.ollama import DEFAULT_OLLAMA_HOST, normalise_host
from tasks.providers.openai import DEFAULT_OPENAI_URL
from tasks.providers.single_flight import single_flight

__all__ = [
    "Choice",
    "DEFAULT_ANTHROPIC_URL",
    "DEFAULT_OPENAI_URL",
    "large_choice",
    "local_choice",
    "ollama_reachable",
    "probe_ollama",
    "probe_tiers",
    "public_settings",
    "reference_model",
    "small_choice",
]

log = logging.getLogger("frugal")
#: what a request key holds for the endpoint when a list of Ollama hosts (OLLAMA_HOSTS) serves it
OLLAMA_HOSTS_KEY = "ollama-hosts"
_lock = threading.Lock()
_probed: dict[str, bool] = {}
_said: set[str] = set()
#: seconds the start-up probe of Ollama waits for /api/version
PROBE_TIMEOUT = 1.0


@dataclass(frozen=True)
class Choice:
    provider: str
    model: str
    #: Ollama host or HTTP base URL (as configured, credentials included), None for the local model
    endpoint: str | None

    @property
    def model_id(self) -> str:
        return f"{self.provider}/{self.model}"

    @property
    def public_endpoint(self) -> str | None:
        """The endpoint without ``user:password@``: what messages and logs may hold."""
        if self.endpoint is None:
            return None
        return ",".join(public_url(part) for part in self.endpoint.split(","))

    @property
    def key_endpoint(self) -> str | None:
        """The endpoint as request keys hold it: several Ollama hosts serve alike, so a list of them is one
        name (adding or removing a host keeps the cached answers)."""
        if self.provider == "ollama" and self.endpoint is not None and "," in self.endpoint:
            return OLLAMA_HOSTS_KEY
        return self.public_endpoint


def _say_once(key: str, message: str, level: int = logging.WARNING) -> None:
    with _lock:
        if key in _said:
            return
        _said.add(key)
    log.log(level, message)


async def probe_ollama(host: str) -> bool:
    """GET /api/version once per host per process (PROBE_TIMEOUT), on the event loop without blocking it."""
    with _lock:
        if host in _probed:
            return _probed[host]

    async def ask() -> bool:
        try:
            async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, trust_env=False) as client:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    response = await client.get(host.rstrip("/") + "/api/version")
            return response.status_code == 200
        except (httpx.HTTPError, TimeoutError):
            return False

    ok = await single_flight("ollama-probe:" + host, ask)
    with _lock:
        _probed.setdefault(host, ok)
        return _probed[host]


def ollama_reachable(host: str) -> bool:
    """The probe's answer for `host`. Not yet probed in this process: probed now, in a thread of its
    own so that a running event loop is never asked to wait on itself (only a model step called outside
    a pipeline run gets here; a run awaits `probe_tiers` first)."""
    with _lock:
        if host in _probed:
            return _probed[host]
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(asyncio.run(probe_ollama(host))), name="ollama-probe")
    worker.start()
    worker.join()
    return bool(result and result[0])


async def probe_tiers(settings: Settings | None = None) -> None:
    """Ask, once per process, what the tiers' choice depends on (is Ollama up?), without blocking the loop."""
    slm = (settings or get_settings()).slm
    if slm.provider == "auto" and slm.ollama_hosts():
        await asyncio.gather(*(probe_ollama(normalise_host(h)) for h in slm.ollama_hosts()))


def ollama_endpoint(slm: SlmSettings) -> str:
    """OLLAMA_HOSTS (comma-separated URLs), else OLLAMA_HOST, else Ollama's default address."""
    return ",".join(normalise_host(h) for h in slm.ollama_hosts()) or DEFAULT_OLLAMA_HOST


def local_choice(slm: SlmSettings) -> Choice:
    model = DEFAULT_MODEL_ID.split("/", 1)[1] if slm.local_model_path is None else slm.local_model_path.stem
    return Choice("local", model, None)


def small_choice(slm: SlmSettings | None = None, provider: str | None = None) -> Choice:
    """The small tier's provider, model and endpoint; `provider` (a node's choice) wins over the setting."""
    slm = slm or get_settings().slm
    provider = provider or slm.provider
    if provider == "local":
        return local_choice(slm)
    if provider == "ollama":
        return Choice(provider, slm.model, ollama_endpoint(slm))
    if provider != "auto":  # another registered provider: its own endpoint setting
        return Choice(provider, slm.model, None)
    hosts = [normalise_host(h) for h in slm.ollama_hosts()]
    if any(ollama_reachable(h) for h in hosts):  # the hosts that do not answer are taken out by the provider
        return Choice("ollama", slm.model, ollama_endpoint(slm))
    choice = local_choice(slm)
    shown = ", ".join(public_url(h) for h in hosts)
    why = f"Ollama at {shown} does not answer" if hosts else "OLLAMA_HOST is not set"
    _say_once("slm-local", f"small model: {why}; using the bundled local model {choice.model_id}", logging.INFO)
    return choice


def large_choice(llm: LlmSettings | None = None, provider: str | None = None, slm: SlmSettings | None = None) -> Choice:
    """The large tier's provider, model and endpoint; `provider` (a node's choice) wins over the setting."""
    llm = llm or get_settings().llm
    provider = provider or llm.provider
    if provider == "auto":
        if llm.anthropic_api_key is not None:
            provider = "anthropic"
        elif llm.openai_api_key is not None or llm.openai_base_url:
            provider = "openai"
        else:
            provider = "local"
            _say_once(
                "llm-local",
                "large model: no OPENAI_API_KEY, OPENAI_BASE_URL or ANTHROPIC_API_KEY set; "
                "the large tier falls back to the bundled local model",
            )
    if provider == "local":
        return local_choice(slm or get_settings().slm)
    if provider == "anthropic":
        return Choice("anthropic", llm.model or "claude-haiku-4-5", llm.anthropic_base_url)
    if provider == "openai":
        return Choice("openai", llm.model or "gpt-4o-mini", llm.openai_base_url or DEFAULT_OPENAI_URL)
    return Choice(provider, llm.model or "", None)  # a registered provider of an extension: its own defaults


_public: tuple[object, dict[str, Any]] | None = None


def public_settings() -> dict[str, Any]:
    """What templates read as ``settings``: no secrets, JSON-native. Computed once per settings snapshot."""
    global _public
    s = get_settings()
    if _public is not None and _public[0] is s:
        return _public[1]
    small, large = small_choice(s.slm), large_choice(s.llm, slm=s.slm)
    value = {
        "cache": {"ttl": s.cache.ttl, "prefix": s.cache.prefix},
        "slm": {"provider": small.provider, "model": small.model},
        "llm": {"provider": large.provider, "model": large.model},
    }
    _public = (s, value)
    return value


def reference_model() -> str:
    """The model savings are measured against: FRUGAL_REFERENCE_MODEL, else the large tier's model."""
    s = get_settings()
    if s.prices.reference_model:
        return s.prices.reference_model
    return large_choice(s.llm, slm=s.slm).model_id
