"""One Prefect flow per pipeline, whose parameters are the pipeline's inputs.

A deployment's run form in the Prefect UI is drawn from its
`parameter_openapi_schema`, which Prefect builds from the flow function's
signature and docstring. `run_pipeline(pipeline, inputs)` has one `inputs`
dict, so its form is a raw JSON box; the flows here have one keyword parameter
per declared input instead, typed (string, integer, number, boolean, list,
object), with the input's description, default and constraints (minimum,
maximum, min_length, max_length, pattern, enum), so the form shows named,
typed fields, and the server checks a run's parameters against them before the
run is created (`enforce_parameter_schema`): ``max_tokens: -5``, an empty
prompt or a parameter the pipeline does not declare is refused at submission
(the last one for deployments made by `to_deployment`, as `frugal serve` does;
`prefect deploy` builds its schema without the flow's help). An input whose
default is null is optional (may be null).

Every pipeline in the pipelines folder is an attribute of this module, named
after the pipeline (`-` becomes `_`), so `prefect.yaml` entrypoints read
`flows/orchestration/pipeline_flows.py:answer`:

    from flows.orchestration.pipeline_flows import answer
    await answer(prompt="hi")        # same result dict as run_pipeline("answer", {"prompt": "hi"})

The flow is named after the pipeline and runs the same engine as
`run_pipeline`: each node a task run named after its node id.
"""

from __future__ import annotations

import inspect
import keyword
import re
from pathlib import Path
from typing import Any, Optional

from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.utilities.callables import ParameterSchema
from pydantic import StrictBool, StrictInt, StrictStr

from flows.language import catalog
from flows.language.compiler import Pipeline
from flows.language.spec import InputSpec, annotation
from flows.orchestration.flow import orchestrate
from tasks.core.errors import InputError

#: JSON-schema-friendly parameter types; `number` is a plain float so the form shows one number field
PARAMETER_TYPES: dict[str, Any] = {
    "string": StrictStr,
    "integer": StrictInt,
    "number": float,
    "boolean": StrictBool,
    "list": list[Any],
    "object": dict[str, Any],
}
#: parameter names a Prefect flow cannot take
RESERVED = frozenset({"return_state", "wait_for"})

_flows: dict[tuple[Path, int], Flow[..., Any]] = {}


def attribute_name(pipeline_name: str) -> str:
    """`my-pipeline` → `my_pipeline`: the name in entrypoints (`flows/orchestration/pipeline_flows.py:my_pipeline`)."""
    name = pipeline_name.replace("-", "_")
    return f"{name}_" if keyword.iskeyword(name) or name[0].isdigit() else name


def _docstring(pipeline: Pipeline) -> str:
    summary = " ".join(pipeline.spec.description.split()) or f"Run the pipeline '{pipeline.name}'."
    lines = [summary, "", "Args:"]
    for name, spec in pipeline.spec.inputs.items():
        lines.append(f"    {name}: {' '.join(spec.description.split()) or spec.type}")
    return "\n".join(lines) + "\n"


def signature(pipeline: Pipeline) -> inspect.Signature:
    """Keyword-only parameters, one per input: required inputs have no default."""
    params = []
    for name, spec in pipeline.spec.inputs.items():
        if name in RESERVED:
            raise InputError(f"pipeline '{pipeline.name}': input '{name}' is reserved by Prefect flows; rename it")
        default = inspect.Parameter.empty if spec.required else spec.default
        kind = inspect.Parameter.KEYWORD_ONLY
        annotation = parameter_annotation(spec)
        if default is None:  # `default: null`: the form may leave it empty, and a run may send null
            annotation = Optional[annotation]  # noqa: UP045 (Prefect's schema reads Optional[...] as "may be null")
        params.append(inspect.Parameter(name, kind, default=default, annotation=annotation))
    return inspect.Signature(params, return_annotation=dict[str, Any])


def parameter_annotation(spec: InputSpec) -> Any:
    """The parameter's type with the input's constraints (minimum, maximum, min_length, max_length, pattern,
    enum), so Prefect's schema carries them and its server refuses a run that breaks them at submission."""
    return annotation(spec, PARAMETER_TYPES)


class ClosedParameterSchema(ParameterSchema):
    """Prefect's parameter schema with ``additionalProperties: false``: a run given a parameter the
    pipeline does not declare is refused when it is created, not failed when it starts."""

    additionalProperties: bool = False  # noqa: N815 (the JSON-schema keyword)


def _closed(deployment: RunnerDeployment) -> RunnerDeployment:
    schema = deployment._parameter_openapi_schema
    deployment._parameter_openapi_schema = ClosedParameterSchema(**schema.model_dump(), additionalProperties=False)
    return deployment


class PipelineFlow(Flow[..., Any]):
    """A pipeline's flow; its deployments refuse parameters the pipeline does not declare."""

    async def ato_deployment(self, *args: Any, **kwargs: Any) -> RunnerDeployment:  # type: ignore[override]
        return _closed(await super().ato_deployment(*args, **kwargs))

    def to_deployment(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        made = super().to_deployment(*args, **kwargs)
        if inspect.isawaitable(made):  # called from a running event loop: Prefect's dispatch made a coroutine

            async def closed() -> RunnerDeployment:
                return _closed(await made)

            return closed()
        return _closed(made)


def build_flow(pipeline: Pipeline) -> Flow[..., Any]:
    """A flow named after the pipeline, with the pipeline's inputs as its parameters."""
    path = pipeline.file

    async def run(**inputs: Any) -> dict[str, Any]:
        return await orchestrate(catalog.load(path), inputs)

    attr = attribute_name(pipeline.name)
    run.__signature__ = signature(pipeline)  # type: ignore[attr-defined]
    run.__name__ = run.__qualname__ = attr
    run.__module__ = __name__
    run.__doc__ = _docstring(pipeline)
    return PipelineFlow(
        run,
        name=pipeline.name,
        description=" ".join(pipeline.spec.description.split()) or None,
        version=pipeline.spec.version,
        log_prints=False,
    )


def flow_for(name_or_path: str) -> Flow[..., Any]:
    """The typed flow of a pipeline (a name in the pipelines folder or a YAML path); rebuilt when the file changes."""
    pipeline = catalog.load(name_or_path)
    path = Path(pipeline.file)
    key = (path, path.stat().st_mtime_ns)
    found = _flows.get(key)
    if found is None:
        found = _flows[key] = build_flow(pipeline)
    return found


def __getattr__(attr: str) -> Flow[..., Any]:
    """`flows.orchestration.pipeline_flows.answer`: the typed flow of `deployments/answer.yaml` (PEP 562)."""
    if attr.startswith("__") or not re.fullmatch(r"[a-z0-9_]+", attr):
        raise AttributeError(attr)
    for name in catalog.known_names():
        if attribute_name(name) == attr:
            return flow_for(name)
    raise AttributeError(f"module {__name__!r} has no pipeline flow {attr!r}; pipelines: {', '.join(catalog.known_names())}")


def __dir__() -> list[str]:
    return sorted({*globals(), *(attribute_name(n) for n in catalog.known_names())})
