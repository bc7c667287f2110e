"""What a run returns, inline or orchestrated: the output plus an account per node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

NodeStatus = Literal["ran", "skipped", "cache_hit", "failed"]


@dataclass(slots=True)
class NodeReport:
    """What one node did. A dataclass: the engine makes six of these per request."""

    uses: str
    status: NodeStatus
    duration_ms: float
    reason: str | None = None
    error: str | None = None
    cache: str | None = None
    model: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_ms: float | None = None


class RunResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipeline: str
    version: str
    mode: Literal["inline", "orchestrated"]
    output: Any
    nodes: dict[str, NodeReport]
    duration_ms: float

    def account(self) -> str:
        """One line: cache, route, model, tokens, latency. A batch's output counts them per value
        (`cache=hit:3,miss:2 route=small:5`); tokens it does not know are `-`, not 0."""
        out = self.output if isinstance(self.output, dict) else {}
        calls = [r for r in self.nodes.values() if r.model is not None and r.status != "skipped"]
        tokens = "-"
        if calls:
            tokens = f"{sum(r.tokens_in or 0 for r in calls)}/{sum(r.tokens_out or 0 for r in calls)}"
        elif isinstance(out.get("usage"), dict):
            tokens = f"{out['usage'].get('input_tokens', 0)}/{out['usage'].get('output_tokens', 0)}"
        parts = [
            f"cache={_counted(out.get('cache', '-'))}",
            f"route={_counted(out.get('route', out.get('routes', '-')))}",
            f"model={_counted(out.get('model', out.get('models', calls[-1].model if calls else '-')))}",
            f"tokens={tokens}",
            f"latency={self.duration_ms:.0f}ms",
            f"mode={self.mode}",
        ]
        return " ".join(parts)


def _counted(value: Any) -> Any:
    """A batch's counts ({"hit": 3, "miss": 2}) as `hit:3,miss:2`; anything else as it is."""
    if isinstance(value, dict):
        return ",".join(f"{key}:{count}" for key, count in value.items()) or "-"
    return value
