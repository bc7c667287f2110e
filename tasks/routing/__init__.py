"""The learned router: a prompt's embedding -> P(needs the large model) -> small or large.

    routed = route("Prove that sqrt(2) is irrational.")    # Routed(large=True, probability=0.97, ...)

Trained and calibrated by `frugal router train|calibrate|eval`; see docs/routing.md.
"""

from __future__ import annotations

from .curve import CurvePoint, curve, pick
from .labels import Example, read_examples
from .router import Routed, route, route_async
from .router_file import PACKAGED, RouterDoc, RouterFileError, default_router_path, load_router, save_router
from .train import calibrate, train

__all__ = [
    "PACKAGED",
    "CurvePoint",
    "Example",
    "Routed",
    "RouterDoc",
    "RouterFileError",
    "calibrate",
    "curve",
    "default_router_path",
    "load_router",
    "pick",
    "read_examples",
    "route",
    "route_async",
    "save_router",
    "train",
]
