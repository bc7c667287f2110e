"""What a step is: a plain async function, the pydantic model its `with:` arguments must fit, and
the Prefect task options of its task runs.

Steps describe themselves with `Step` (see `tasks.steps.BUILTIN_STEPS`); the pipeline
language's registry (`flows.language.registry`) collects them, together with any
extension registered through the same `register()` call, the way `llm`'s plugin hooks
are collected. Nothing in `tasks/` imports the registry.

The inline runner awaits `step.fn` directly; the orchestrated runner asks for `step.task`,
the Prefect task built from it on first use. So an inline run (`frugal run --inline`, the
gateway) never imports Prefect: importing it cost a cold `frugal run --inline` cache hit
~1.5 s of its ~2.4 s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from prefect import Task

__all__ = ["Step"]


@dataclass(frozen=True)
class Step:
    """A step: its function, the model its `with:` must fit, and how its Prefect task is made."""

    name: str
    fn: Callable[[Any], Awaitable[Any]]
    request: type[BaseModel]
    summary: str
    #: model calls report model/usage and take `cache_ttl` as Prefect's cache expiration
    model_call: bool = False
    #: Prefect task options beyond the default (no result cache, no persisted result), e.g. a model
    #: call's cache policy; a function, so that Prefect is imported only when a task is made
    task_options: Callable[[], dict[str, Any]] | None = None
    #: a Prefect task an extension registered as it is (its `fn` is `fn`)
    prefect_task: Any = None

    @cached_property
    def task(self) -> Task[Any, Any]:
        """The Prefect task of this step's task runs (Prefect is imported here, on first use)."""
        if self.prefect_task is not None:
            return self.prefect_task  # type: ignore[no-any-return]
        from prefect import task
        from prefect.cache_policies import NO_CACHE

        options: dict[str, Any] = {"name": self.name, "cache_policy": NO_CACHE, "persist_result": False}
        if self.task_options is not None:
            options |= self.task_options()
        return task(**options)(self.fn)
