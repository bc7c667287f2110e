"""The closed registry of steps a pipeline node may `uses:`.

One place maps a name to a `Step` (an async function, or a Prefect task, and the pydantic
model of its arguments). The built-in steps describe themselves in `tasks.steps.BUILTIN_STEPS`
and are collected here; an extension registers through the same `register()`
call, so a pipeline can never name an import path:

    from flows.language.registry import register
    register("shout", shout, ShoutRequest, summary="upper-case a text")   # `async def shout(request)`,
                                                                       # or a Prefect task of one
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from tasks.core.steps import Step
from tasks.steps import BUILTIN_STEPS

__all__ = ["Step", "get", "names", "register"]

_steps: dict[str, Step] = {}


def _add(step: Step, replace: bool) -> Step:
    if not step.name.isidentifier():
        raise ValueError(f"step name {step.name!r} must be an identifier (letters, digits, _)")
    if not inspect.iscoroutinefunction(step.fn):
        raise ValueError(f"step {step.name!r} must be an async function or task (`async def`); the engine awaits every step")
    if step.name in _steps and not replace:
        raise ValueError(f"step {step.name!r} is already registered; pass replace=True to override it")
    _steps[step.name] = step
    return step


def register(
    name: str,
    task: Callable[[Any], Awaitable[Any]] | Any,
    request: type[BaseModel],
    *,
    summary: str,
    model_call: bool = False,
    replace: bool = False,
) -> Step:
    """Make `task` (an async function, or a Prefect task of one) usable as `uses: NAME`. Names are unique
    unless `replace=True`. A Prefect task keeps its options for orchestrated runs; inline runs call its function."""
    fn = getattr(task, "fn", task)  # a Prefect task's function
    prefect_task = task if fn is not task else None
    step = Step(name=name, fn=fn, request=request, summary=summary, model_call=model_call, prefect_task=prefect_task)
    return _add(step, replace)


for _builtin in BUILTIN_STEPS:
    _add(_builtin, replace=False)


def get(name: str) -> Step | None:
    return _steps.get(name)


def names() -> list[str]:
    return sorted(_steps)
