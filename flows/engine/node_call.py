"""One node's call: its arguments built from the run's context, its step called with the node's
retries and timeout, its value made JSON-native. Shared by the engine and the batch."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ValidationError

from flows.language.compiler import Node
from flows.language.templates import TemplateProblem, evaluate
from tasks.core.errors import StepError
from tasks.core.log import step_logger


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.__pydantic_serializer__.to_python(value, mode="json")  # model_dump without its Python wrapper
    return value


def build_request(node: Node, context: dict[str, Any]) -> BaseModel:
    try:
        raw = evaluate(node.args, context)
    except TemplateProblem as exc:
        raise StepError(node.id, f"with: {exc}") from exc
    if node.spec.cache_ttl is not None and "ttl" in node.step.request.model_fields and raw.get("ttl") is None:
        raw["ttl"] = node.spec.cache_ttl
    try:
        return node.step.request.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise StepError(node.id, f"invalid arguments for '{node.step.name}': {problems}") from exc


async def call_with_retries(node: Node, request: BaseModel) -> Any:
    """Call the node's step function directly, with the node's retries and timeout."""
    spec = node.spec
    if not spec.retries and spec.timeout_seconds is None:  # the usual node: a plain call
        return await node.step.fn(request)
    for attempt in range(spec.retries + 1):
        try:
            coro = node.step.fn(request)
            if spec.timeout_seconds is None:
                return await coro
            return await asyncio.wait_for(coro, spec.timeout_seconds)
        except TimeoutError as exc:
            error: Exception = StepError(node.id, f"timed out after {spec.timeout_seconds:g}s")
            error.__cause__ = exc
        except Exception as exc:  # retried like Prefect retries any task failure
            error = exc
        if attempt == spec.retries:
            raise error
        step_logger().warning("node '%s' failed (%s); retry %d/%d", node.id, error, attempt + 1, spec.retries)
        await asyncio.sleep(spec.retry_delay_seconds)
    raise AssertionError("unreachable")
