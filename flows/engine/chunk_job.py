"""A chunk of a `for_each:` node as plain data, so a process on another machine can run it.

`ChunkJob` carries what the chunk's items need and nothing live: the pipeline by reference
(a name in the pipelines folder, or a YAML path, as `flows.language.catalog.load` takes it)
with a digest of its spec, the node id, the run context its templates read (inputs, the public
settings, the pipeline's identity, the outputs of the nodes it depends on), the chunk's items
(a document from a folder is already a reference: its path), and where its progress goes.
It round-trips through JSON and pickle unchanged.

`flows.engine.job_runner` runs a job in the process it lands in (a Dask worker, say).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from flows.language import catalog
from tasks.core.canonical import sha256_of

if TYPE_CHECKING:
    from flows.language.compiler import Node, Pipeline


class ChunkJob(BaseModel):
    """One chunk of a `for_each:` node, as JSON-native data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: str = Field(description="the pipeline's name in the pipelines folder, or its YAML path")
    digest: str = Field(description="sha256 of the pipeline's spec: the worker checks it loaded the same one")
    node: str = Field(description="the for_each node's id")
    context: dict[str, Any] = Field(description="inputs, settings, pipeline identity and the node's upstream outputs")
    chunk: int = Field(ge=0, description="the chunk's index in the batch")
    items: list[tuple[int, Any]] = Field(description="(index in the batch, item) pairs")
    run_id: str = Field(description="the batch's run (the flow run id): progress is counted under it")
    concurrency: int = Field(ge=1, description="items of this chunk in flight at once")


def pipeline_reference(pipeline: Pipeline) -> str:
    """How another process finds this pipeline: its name when it lives in the pipelines folder
    (each worker reads its own copy of the project), else its file's absolute path."""
    return file_reference(pipeline.file, pipeline.name)


def file_reference(file: str, name: str) -> str:
    """`pipeline_reference` of the pipeline `name` read from `file`."""
    path = Path(file).resolve()
    if path.parent == catalog.pipelines_dir().resolve() and path.stem == name:
        return name
    return str(path)


def pipeline_digest(pipeline: Pipeline) -> str:
    return sha256_of(pipeline.spec.model_dump(mode="json"))


def job_context(node: Node, context: dict[str, Any]) -> dict[str, Any]:
    """What the node's templates may read: inputs, settings, the pipeline, and its dependencies' outputs."""
    chosen = {name: context[name] for name in ("inputs", "settings", "pipeline")}
    for dep in node.deps:
        chosen[dep] = context.get(dep)
    return chosen


class JobMaker:
    """Makes the jobs of one batch node (the reference, digest and context are worked out once)."""

    def __init__(self, pipeline: Pipeline, node: Node, context: dict[str, Any], run_id: str, concurrency: int) -> None:
        self._base: dict[str, Any] = {
            "pipeline": pipeline_reference(pipeline),
            "digest": pipeline_digest(pipeline),
            "node": node.id,
            "context": job_context(node, context),
            "run_id": run_id,
            "concurrency": concurrency,
        }

    def __call__(self, chunk: int, items: list[tuple[int, Any]]) -> ChunkJob:
        return ChunkJob.model_construct(**self._base, chunk=chunk, items=items)
