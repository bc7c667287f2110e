"""The closed registry of steps a pipeline node may `uses:`.

One place maps a name to a Prefect task and the pydantic model of its
arguments. Built-in steps register through the same `register()` call an
extension uses, so a pipeline can never name an import path:

    from flows.registry import register
    register("shout", shout_task, ShoutRequest, summary="upper-case a text")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import Task
from pydantic import BaseModel

__all__ = ["Step", "get", "names", "register"]


@dataclass(frozen=True)
class Step:
    """A registered step: its Prefect task and the model its `with:` must fit."""

    name: str
    task: Task[Any, Any]
    request: type[BaseModel]
    summary: str
    #: model calls report model/usage and take `cache_ttl` as Prefect's cache expiration
    model_call: bool = False


_steps: dict[str, Step] = {}
_builtins_loaded = False


def register(
    name: str,
    task: Task[Any, Any],
    request: type[BaseModel],
    *,
    summary: str,
    model_call: bool = False,
    replace: bool = False,
) -> Step:
    """Make `task` usable as `uses: NAME`. Names are unique unless `replace=True`."""
    if not name.isidentifier():
        raise ValueError(f"step name {name!r} must be an identifier (letters, digits, _)")
    if not task.isasync:
        raise ValueError(f"step {name!r} must be an async task (`async def`); the engine awaits every step")
    if name in _steps and not replace:
        raise ValueError(f"step {name!r} is already registered; pass replace=True to override it")
    step = Step(name=name, task=task, request=request, summary=summary, model_call=model_call)
    _steps[name] = step
    return step


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        import tasks  # noqa: F401  (registers the built-in steps)


def get(name: str) -> Step | None:
    _load_builtins()
    return _steps.get(name)


def names() -> list[str]:
    _load_builtins()
    return sorted(_steps)
