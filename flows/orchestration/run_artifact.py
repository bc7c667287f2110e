"""What an orchestrated run leaves on the Prefect server, besides its task runs.

- A **result artifact** (`type: result`, no key, attached to the flow run) holding the run's
  result (`output` plus one report per node). This is how a REST caller reads the output
  back: one `POST /api/artifacts/filter` by flow run id. The flow's return value is also
  persisted as a Prefect result, but the API only holds a pointer to it (a storage key on the
  worker's disk or in a bucket), which a caller without that storage cannot read; a
  variable would be global and never cleaned up. (The UI lists `result` artifacts only
  through the API: its Artifacts tab shows the Markdown one.)
- A **Markdown artifact** drawn by `RunArtifactObserver`: the run's output first (where a
  Prefect user looks: the run page's Artifacts tab), the pipeline's diagram, coloured by
  the path this run took (ran, skipped, cache hit, failed), and a table of the nodes. The
  output is also one line of the run's log (`output: ...`), shown on the run page. The
  picture is an SVG drawn by Graphviz when `dot` is installed (cached per path, so a
  pipeline pays for each distinct path once), and always the Mermaid source.

The observer is registered by `flows.orchestration.observers.install`; it does nothing for inline runs.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from prefect.client.schemas.actions import ArtifactCreate
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger

from flows.language import graph
from tasks.core.errors import ConfigError, StepError

if TYPE_CHECKING:
    from flows.engine.observers import RunInfo
    from flows.engine.results import NodeReport, RunResult
    from flows.language.compiler import Pipeline

log = logging.getLogger("frugal")

RESULT_TYPE = "result"
#: the most characters of the output written to the run's log line
LOG_CHARS = 2000


def output_text(output: Any) -> str:
    """The output as a user reads it: an answer's text, anything else as JSON."""
    if isinstance(output, dict) and isinstance(output.get("text"), str):
        return str(output["text"])
    return json.dumps(output, indent=2, ensure_ascii=False, default=str)


def _fenced(text: str) -> list[str]:
    """`text` verbatim in a fenced block (a fence longer than any backtick run inside it)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


async def publish_result(result: dict[str, Any], client: Any, flow_run_id: Any) -> None:
    """The run's result as a `result` artifact of the flow run: what REST callers read."""
    await client.create_artifact(
        artifact=ArtifactCreate(
            type=RESULT_TYPE,
            description=f"Result of pipeline `{result.get('pipeline')}`: `output` and one report per node.",
            flow_run_id=flow_run_id,
            data=result,
        )
    )


_svgs: dict[tuple[str, int, tuple[tuple[str, str], ...]], str | None] = {}


def _svg(pipeline: Pipeline, statuses: tuple[tuple[str, str], ...]) -> str | None:
    """The diagram as base64 SVG, drawn once per pipeline and path."""
    key = (pipeline.file, id(pipeline), statuses)
    if key not in _svgs:
        if len(_svgs) > 256:
            _svgs.clear()
        try:
            _svgs[key] = base64.b64encode(graph.render(pipeline, "svg", dict(statuses))).decode()
        except ConfigError as exc:  # no Graphviz on this worker: the Mermaid source still shows the path
            log.debug("no diagram image in the run artifact: %s", exc)
            _svgs[key] = None
    return _svgs[key]


def markdown(
    pipeline: Pipeline, reports: dict[str, NodeReport], failed: str | None, error: str | None, output: Any = None
) -> str:
    """The artifact's text: headline, output, diagram, node table, Mermaid source."""
    statuses: dict[str, str] = {n: r.status for n, r in reports.items()}
    if failed:
        statuses[failed] = "failed"
    for node_id in pipeline.nodes:
        statuses.setdefault(node_id, "not reached")
    taken = [n for n in pipeline.order if statuses[n] in ("ran", "cache_hit")]
    path = " → ".join(f"{n} (cache hit)" if statuses[n] == "cache_hit" else n for n in taken) or "none"
    skipped = [n for n in pipeline.order if statuses[n] == "skipped"]
    lines = [f"## Pipeline `{pipeline.name}` v{pipeline.spec.version}: {'failed' if failed or error else 'completed'}", ""]
    lines.append(f"**Path:** {path}{' → output' if not (failed or error) else ''}  ")
    lines.append(f"**Skipped:** {', '.join(skipped) or 'none'}  ")
    if failed or error:
        lines.append(f"**Failed:** {failed or '-'}: {error}  ")
    lines.append("")
    if output is not None and not (failed or error):
        lines += ["### Output", "", *_fenced(output_text(output)), ""]
    svg = _svg(pipeline, tuple(sorted((n, s) for n, s in statuses.items() if s in graph.STYLES)))
    if svg is not None:
        lines += [f"![{pipeline.name}: the path of this run](data:image/svg+xml;base64,{svg})", ""]
    lines += ["| node | task | status | ms | note |", "|---|---|---|---|---|"]
    for node_id in pipeline.order:
        report = reports.get(node_id)
        note = (report.reason or report.error or report.cache or "") if report else ""
        if report and report.model:
            note = f"{report.model}, {report.tokens_in}/{report.tokens_out} tokens"
        ms = f"{report.duration_ms:.1f}" if report else ""
        note = re.sub(r"\{\{\s*(.*?)\s*\}\}", r"\1", note).replace("|", "\\|").strip()
        status = statuses[node_id].replace("_", " ")
        lines.append(f"| {node_id} | {pipeline.nodes[node_id].step.name} | {status} | {ms} | {note} |")
    lines += ["", "Mermaid source of the diagram:", "", "```mermaid", graph.mermaid(pipeline, statuses).rstrip(), "```", ""]
    return "\n".join(lines)


class RunArtifactObserver:
    """Publishes the Markdown run artifact at the end of each orchestrated run, successful or not,
    and before it the result artifact of a successful one: REST callers wait for that one
    (`flows.orchestration.rest_client`). Posted together with the Markdown and cost artifacts, it
    waited behind them in the server's database (SQLite writes one at a time)."""

    modes = frozenset({"orchestrated"})

    async def run_done(self, run: RunInfo, result: RunResult | None, error: BaseException | None) -> None:
        ctx = FlowRunContext.get()
        if run.mode != "orchestrated" or ctx is None or ctx.flow_run is None:
            return
        client: Any = ctx.client  # the engine's async client: flows here are async
        if result is not None:
            await publish_result(result.model_dump(mode="json"), client, ctx.flow_run.id)
        reports = dict(result.nodes) if result is not None else dict(run.reports)
        failed = error.node if isinstance(error, StepError) else None
        output = result.output if result is not None else None
        text = markdown(
            run.pipeline, reports, failed if failed in run.pipeline.nodes else None, str(error) if error else None, output
        )
        if result is not None:
            shown = output_text(output)
            cut = f" ... ({len(shown)} characters; the whole output is in the run's Markdown artifact)"
            get_run_logger().info("output: %s", shown if len(shown) <= LOG_CHARS else shown[:LOG_CHARS] + cut)
        await client.create_artifact(
            artifact=ArtifactCreate(
                type="markdown",
                description=f"The path this run of `{run.pipeline.name}` took through the pipeline.",
                flow_run_id=ctx.flow_run.id,
                data=text,
            )
        )


RUN_ARTIFACT = RunArtifactObserver()
