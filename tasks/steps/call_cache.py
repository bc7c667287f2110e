"""A Prefect cache policy for model calls: the key is the request actually sent.

Prefect's default policy hashes the task's inputs, source and run id, so a
re-run of a flow would pay again. This one hashes only a JSON-native identity
of the request (provider, model, endpoint, normalised messages, output-changing
parameters), resolved against settings, so a retried or re-run flow never pays
twice for a call it already made, even when the prompt cache was down. API keys
are never part of the identity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from tasks.core.canonical import sha256_of


@dataclass
class RequestKey(CachePolicy):
    """Key = sha256 of `identify(inputs["request"])`, namespaced by `kind`."""

    kind: str = "call"
    identify: Callable[[Any], dict[str, Any]] | None = None

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        request = inputs.get("request")
        if request is None or self.identify is None:
            return None
        return f"{self.kind}-{sha256_of(self.identify(request))}"
