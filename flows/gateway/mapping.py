"""Which pipeline a request's `model` runs, and a chat request as that pipeline's inputs.

- ``model: "frugal/answer"`` runs the pipeline `answer`, with the configured large model;
- any other name is looked up in ``FRUGAL_GATEWAY_MODELS`` (names or globs -> pipeline);
  the default ``{"*": "answer"}`` runs `answer` with that name as the large tier's model,
  so an app that called ``gpt-4o-mini`` changes only its base URL.

System (and developer) messages become the pipeline's `system` input, the last user message
its `prompt` (or its one required text input, e.g. `sentiment`'s `text`), earlier turns its
`messages` input when it has one.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from flows.gateway.openai_wire import ChatRequest, WireError
from flows.language import catalog
from flows.language.compiler import Pipeline
from tasks.core.errors import PipelineNotFound

PREFIX = "frugal/"


@dataclass(frozen=True)
class Target:
    pipeline: Pipeline
    #: the large tier's model for this request (None: the configured one)
    large_model: str | None


def resolve(model: str, model_map: dict[str, str]) -> Target:
    """The pipeline (and large model) a request's `model` names; 404 in OpenAI's words if none."""
    name: str | None
    large: str | None
    if model.startswith(PREFIX):
        name, large = model.removeprefix(PREFIX), None
    else:
        name = next((pipeline for pattern, pipeline in model_map.items() if fnmatch.fnmatchcase(model, pattern)), None)
        large = model
    if not name or "/" in name or name.startswith("."):
        raise WireError(
            404,
            f"The model '{model}' does not exist; use frugal/<pipeline> (see GET /v1/models)",
            code="model_not_found",
            param="model",
        )
    try:
        return Target(catalog.load(name), large)
    except PipelineNotFound as exc:
        raise WireError(404, f"The model '{model}' does not exist: {exc}", code="model_not_found", param="model") from exc


def listed_models(model_map: dict[str, str]) -> list[str]:
    """What `GET /v1/models` lists: every pipeline as frugal/<name>, and the mapped names that are not globs."""
    names = [PREFIX + name for name in catalog.known_names()]
    return names + [m for m in model_map if not any(ch in m for ch in "*?[")]


def _text_input(pipeline: Pipeline) -> str:
    inputs = pipeline.spec.inputs
    if "prompt" in inputs:
        return "prompt"
    required = [name for name, spec in inputs.items() if spec.required and spec.type == "string"]
    if len(required) == 1:
        return required[0]
    raise WireError(
        400,
        f"pipeline '{pipeline.spec.name}' does not take a chat prompt (it needs {', '.join(inputs)})",
        code="model_not_supported",
        param="model",
    )


def inputs_for(request: ChatRequest, target: Target, namespace: str) -> dict[str, Any]:
    """The pipeline's inputs for this chat request."""
    pipeline = target.pipeline
    declared = pipeline.spec.inputs
    system = [m.text() for m in request.messages if m.role in ("system", "developer")]
    turns = [m for m in request.messages if m.role not in ("system", "developer")]
    if not turns or turns[-1].role != "user":
        raise WireError(400, "the last message must be the user's", param="messages")
    prompt = turns[-1].text()
    if not prompt.strip():
        raise WireError(400, "the last user message is empty", param="messages")
    values: dict[str, Any] = {_text_input(pipeline): prompt}
    if system:
        if "system" not in declared:
            raise WireError(400, f"pipeline '{pipeline.spec.name}' takes no system message", param="messages")
        values["system"] = "\n\n".join(system)
    earlier = [{"role": m.role, "content": m.text()} for m in turns[:-1]]
    if earlier:
        if "messages" not in declared:
            raise WireError(400, f"pipeline '{pipeline.spec.name}' answers single prompts, not conversations", param="messages")
        values["messages"] = earlier
    max_tokens = request.max_completion_tokens or request.max_tokens
    if max_tokens is not None and "max_tokens" in declared:
        values["max_tokens"] = max_tokens
    if request.temperature is not None and "temperature" in declared:
        values["temperature"] = request.temperature
    if "namespace" in declared:
        values["namespace"] = namespace
    if target.large_model is not None and "large_model" in declared:
        values["large_model"] = target.large_model
    return values
