"""The trade-off curve of a router, and the threshold that meets a stated target.

A prompt goes to the large model when P(large) >= threshold. Lowering the threshold
sends more prompts large (cost) and fewer large-needing prompts small (risk). The curve
lists, for each candidate threshold, the risk (share of large-needing prompts sent small),
the share sent large, and the accuracy; `pick` chooses the cheapest point that meets
`max_risk`, or the safest that stays within `large_share`.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from tasks.core.errors import InputError


class CurvePoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float
    risk: float
    large_share: float
    accuracy: float


def curve(probabilities: np.ndarray, large: np.ndarray) -> list[CurvePoint]:
    """Every distinct operating point: thresholds midway between consecutive distinct probabilities, plus 0 and 1."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(large, dtype=bool)
    if p.size == 0 or not y.any():
        raise InputError("a trade-off curve needs labelled prompts, some of them labelled large")
    values = np.unique(np.round(p, 4))  # 4 decimals: every midpoint below sits strictly between two values
    cuts = np.concatenate([[0.0], (values[:-1] + values[1:]) / 2, [1.0 + 1e-9]])
    points = []
    for t in cuts:
        sent_large = p >= t
        points.append(
            CurvePoint(
                threshold=round(float(min(t, 1.0)), 6),
                risk=round(float((y & ~sent_large).sum() / y.sum()), 6),
                large_share=round(float(sent_large.mean()), 6),
                accuracy=round(float((sent_large == y).mean()), 6),
            )
        )
    return points


def pick(points: list[CurvePoint], *, max_risk: float | None = None, large_share: float | None = None) -> CurvePoint:
    """The point meeting one target: the highest threshold with risk <= max_risk (fewest sent large),
    or the lowest threshold with share sent large <= large_share (least risk)."""
    if (max_risk is None) == (large_share is None):
        raise InputError("state one target: --max-risk R or --large-share S")
    if max_risk is not None:
        meeting = [pt for pt in points if pt.risk <= max_risk]
        if not meeting:
            raise InputError(f"no threshold keeps the risk at or below {max_risk}")
        return max(meeting, key=lambda pt: (pt.threshold, -pt.risk))
    assert large_share is not None
    within = [pt for pt in points if pt.large_share <= large_share]
    if not within:
        raise InputError(f"no threshold sends at most {large_share} of prompts large")
    return min(within, key=lambda pt: (pt.threshold, pt.risk))
