"""What a step is: a Prefect task and the pydantic model its `with:` arguments must fit.

Steps describe themselves with `Step` (see `tasks.steps.BUILTIN_STEPS`); the pipeline
language's registry (`flows.language.registry`) collects them, together with any
extension registered through the same `register()` call, the way `llm`'s plugin hooks
are collected. Nothing in `tasks/` imports the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import Task
from pydantic import BaseModel

__all__ = ["Step"]


@dataclass(frozen=True)
class Step:
    """A step: its Prefect task and the model its `with:` must fit."""

    name: str
    task: Task[Any, Any]
    request: type[BaseModel]
    summary: str
    #: model calls report model/usage and take `cache_ttl` as Prefect's cache expiration
    model_call: bool = False
