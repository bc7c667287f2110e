"""Install the run observers every entry point wants: the cost ledger (with its cost table
artifact on flow runs) and the Markdown artifact of orchestrated runs.

Called by the entry points (`run_inline`, the pipeline flows, the CLI, `frugal serve`),
never as a side effect of an import. Idempotent and cheap.
"""

from __future__ import annotations

from flows import ledger
from flows.engine.observers import add_observer
from flows.ledger.entry import LedgerEntry
from flows.orchestration import cost_artifact
from flows.orchestration.run_artifact import RUN_ARTIFACT


async def _publish_table(pipeline: str, entries: list[LedgerEntry], failed: bool, per_model: bool) -> None:
    await cost_artifact.publish(pipeline, entries, failed=failed, per_model=per_model)


def install() -> None:
    add_observer(RUN_ARTIFACT)
    ledger.LEDGER.publish_table = _publish_table
    ledger.install()
