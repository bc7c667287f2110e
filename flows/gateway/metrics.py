"""Prometheus metrics of the gateway (`GET /metrics`), in a registry of its own.

Per worker process: with ``--workers N``, scrape each worker or sum them (the usual
Prometheus practice for pre-forked servers); the cost ledger has the exact totals.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "frugal_gateway_requests", "Chat completion requests by pipeline and HTTP status", ["pipeline", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "frugal_gateway_request_seconds",
    "Time to answer a chat completion request",
    ["pipeline", "cache"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
CACHE = Counter(
    "frugal_gateway_cache", "Answers by prompt-cache outcome (hit, miss, error, bypass, ...)", ["kind"], registry=REGISTRY
)
ROUTES = Counter("frugal_gateway_routes", "Answers by the tier that produced them (small, large)", ["route"], registry=REGISTRY)
COST = Counter("frugal_gateway_cost_usd", "US dollars spent on answers, by tenant", ["tenant"], registry=REGISTRY)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
