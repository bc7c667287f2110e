"""Which provider answers for each tier, decided once per process and said once.

Small tier, ``FRUGAL_SLM_PROVIDER=auto`` (the default): Ollama when
``OLLAMA_HOST`` is set and answers at start, else the bundled in-process model
(`local`). Large tier, ``FRUGAL_LLM_PROVIDER=auto``: Anthropic when
``ANTHROPIC_API_KEY`` is set, OpenAI(-compatible) when ``OPENAI_API_KEY`` or
``OPENAI_BASE_URL`` is, else the local model with a one-line warning, so the
pipelines still run. Results always name the model that answered.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import httpx

from tasks.core.settings import LlmSettings, SlmSettings, get_settings
from tasks.providers.llama_cpp import DEFAULT_MODEL_ID

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
log = logging.getLogger("frugal")
_lock = threading.Lock()
_probed: dict[str, bool] = {}
_said: set[str] = set()


@dataclass(frozen=True)
class Choice:
    provider: str
    model: str
    #: Ollama host or HTTP base URL, None for the local model
    endpoint: str | None

    @property
    def model_id(self) -> str:
        return f"{self.provider}/{self.model}"


def _say_once(key: str, message: str, level: int = logging.WARNING) -> None:
    with _lock:
        if key in _said:
            return
        _said.add(key)
    log.log(level, message)


def ollama_reachable(host: str) -> bool:
    """GET /api/version once per host per process (1 s timeout)."""
    with _lock:
        if host in _probed:
            return _probed[host]
    try:
        ok = httpx.get(host.rstrip("/") + "/api/version", timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        ok = False
    with _lock:
        _probed[host] = ok
    return ok


def _normalise_host(host: str) -> str:
    return host if "://" in host else f"http://{host}"


def local_choice(slm: SlmSettings) -> Choice:
    model = DEFAULT_MODEL_ID.split("/", 1)[1] if slm.local_model_path is None else slm.local_model_path.stem
    return Choice("local", model, None)


def small_choice(slm: SlmSettings | None = None) -> Choice:
    slm = slm or get_settings().slm
    if slm.provider == "local":
        return local_choice(slm)
    if slm.provider == "ollama":
        return Choice("ollama", slm.model, _normalise_host(slm.host or "http://127.0.0.1:11434"))
    if slm.host and ollama_reachable(_normalise_host(slm.host)):
        return Choice("ollama", slm.model, _normalise_host(slm.host))
    choice = local_choice(slm)
    why = f"Ollama at {slm.host} does not answer" if slm.host else "OLLAMA_HOST is not set"
    _say_once("slm-local", f"small model: {why}; using the bundled local model {choice.model_id}", logging.INFO)
    return choice


def large_choice(llm: LlmSettings | None = None) -> Choice:
    llm = llm or get_settings().llm
    provider = llm.provider
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
        return local_choice(get_settings().slm)
    if provider == "anthropic":
        return Choice("anthropic", llm.model or "claude-haiku-4-5", llm.anthropic_base_url)
    return Choice("openai", llm.model or "gpt-4o-mini", llm.openai_base_url or DEFAULT_OPENAI_URL)


_public: tuple[object, dict[str, Any]] | None = None


def public_settings() -> dict[str, Any]:
    """What templates read as ``settings``: no secrets, JSON-native. Computed once per settings snapshot."""
    global _public
    s = get_settings()
    if _public is not None and _public[0] is s:
        return _public[1]
    small, large = small_choice(s.slm), large_choice(s.llm)
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
    return large_choice(s.llm).model_id
