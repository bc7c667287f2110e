"""A Prefect cache policy for model calls: the key is the request actually sent.

Prefect's default policy hashes the task's inputs, source and run id, so a
re-run of a flow would pay again. This one is the request's identity
(`tasks.core.request_key`, through `model_call.prepare`): provider, model,
endpoint without credentials, normalised messages and output-changing
parameters, resolved against settings. A retried or re-run flow never pays
twice for a call it already made, even when the prompt cache was down. API keys
are never part of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from tasks.steps.model_call import PreparedCall


@dataclass
class RequestKey(CachePolicy):
    """Key = `kind` + the identity key of `prepare(inputs["request"])`."""

    kind: str = "call"
    prepare: Callable[[Any], PreparedCall] | None = None

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        request = inputs.get("request")
        if request is None or self.prepare is None:
            return None
        return f"{self.kind}-{self.prepare(request).identity.key}"
