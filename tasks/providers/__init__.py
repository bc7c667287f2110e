"""Model providers, registered by name.

    register_provider("my-server", MyProvider.from_settings)   # factory(settings, endpoint) -> Provider
    provider = get_provider("openai", endpoint="http://127.0.0.1:8000/v1")
    completion = await provider.complete(ChatCall(...))

The built-in providers (openai, anthropic, ollama, local) register here the same
way an extension would. `get_provider` builds a provider once per (name,
endpoint) and settings snapshot, and hands the same object out until the
settings change; a provider keeps one HTTP client per event loop.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from tasks.core.errors import ConfigError
from tasks.core.settings import Settings, get_settings
from tasks.providers.anthropic import AnthropicProvider
from tasks.providers.base import ChatCall, Provider
from tasks.providers.local import LocalProvider
from tasks.providers.ollama import OllamaProvider
from tasks.providers.openai import OpenAIProvider

__all__ = ["ChatCall", "Provider", "ProviderFactory", "get_provider", "provider_names", "register_provider"]

#: builds a provider from the settings and an endpoint (None: the provider's setting or default)
ProviderFactory = Callable[[Settings, "str | None"], Provider]

_factories: dict[str, ProviderFactory] = {}
#: providers built, most recently used last: a few settings snapshots' worth
_built: OrderedDict[tuple[str, str | None], tuple[Settings, Provider]] = OrderedDict()
_KEEP = 32
_lock = threading.Lock()


def register_provider(name: str, factory: ProviderFactory) -> None:
    """Make `name` a provider the model steps can use (a later registration replaces an earlier one)."""
    with _lock:
        _factories[name] = factory
        for key in [k for k in _built if k[0] == name]:
            del _built[key]


def provider_names() -> tuple[str, ...]:
    return tuple(_factories)


def get_provider(name: str, *, endpoint: str | None = None, settings: Settings | None = None) -> Provider:
    """The provider registered as `name`, for `endpoint`, configured from `settings` (default: the current ones).

    Raises ConfigError for an unknown name, or when the provider lacks a setting (naming its variable).
    """
    settings = settings or get_settings()
    key = (name, endpoint)
    with _lock:
        found = _built.get(key)
        if found is not None and found[0] is settings:
            _built.move_to_end(key)
            return found[1]
        factory = _factories.get(name)
    if factory is None:
        raise ConfigError(f"no model provider named '{name}'; known: {', '.join(sorted(_factories))}")
    provider = factory(settings, endpoint)
    with _lock:
        _built[key] = (settings, provider)
        _built.move_to_end(key)
        while len(_built) > _KEEP:
            _built.popitem(last=False)
    return provider


register_provider("openai", OpenAIProvider.from_settings)
register_provider("anthropic", AnthropicProvider.from_settings)
register_provider("ollama", OllamaProvider.from_settings)
register_provider("local", LocalProvider.from_settings)
