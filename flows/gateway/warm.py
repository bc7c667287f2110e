"""What a worker loads before it says it is ready: the models the mapped pipelines' first miss would load.

Without it, the first miss of each worker process loads the router's embedder (~1 s, 65 MB of
weights) and the answer check's language identifier (~0.3 s) on the request path, and a load
test's first seconds (or a new worker's first callers) see those seconds as latency.
"""

from __future__ import annotations

import logging

from flows.language import catalog
from tasks.core.errors import FrugalError
from tasks.core.language import identify
from tasks.routing import route

log = logging.getLogger("frugal.gateway")


def steps_used(pipelines: set[str]) -> set[tuple[str, str]]:
    """(step, router) of every node of these pipelines; a pipeline that does not load is left to its requests."""
    used: set[tuple[str, str]] = set()
    for name in pipelines:
        try:
            pipeline = catalog.load(name)
        except FrugalError:
            continue
        used |= {(node.step.name, str(node.spec.with_.get("router", ""))) for node in pipeline.nodes.values()}
    return used


def warm(pipelines: set[str]) -> None:
    """Load the router (with its embedder) and the language identifier if these pipelines use them (blocking)."""
    used = steps_used(pipelines)
    try:
        if ("classify", "embedding") in used:
            route("warm up")
        if any(step == "check_answer" for step, _ in used):
            identify("warm up")
    except FrugalError as exc:  # the requests that need it will say what is wrong
        log.warning("gateway: could not load a model before the first request: %s", exc)
