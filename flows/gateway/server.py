"""`frugal gateway`: the OpenAI-compatible endpoint as a long-lived service on uvicorn (or granian).

uvicorn (with uvloop and httptools) is the default; granian (`--server granian`, where it is
installed) was measured beside it on this 2-core machine (docs/gateway.md): no difference
that outlasted the noise of a shared machine, so the dependency stays the one already used.
SIGTERM / Ctrl-C: the server stops accepting connections, finishes the requests in flight
(up to `graceful_seconds`), then the application flushes the cost ledger.
"""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from flows.gateway.tenants import load_keys
from tasks.core.errors import ConfigError
from tasks.core.settings import get_settings

log = logging.getLogger("frugal.gateway")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str) -> None:
    """Without keys, the gateway answers anyone who can reach it: only on loopback, with a warning."""
    settings = get_settings().gateway
    if load_keys(settings.keys_file):
        return
    if not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without API keys: set FRUGAL_GATEWAY_KEYS_FILE (create keys with "
            "`frugal gateway-key add TENANT`), or listen on 127.0.0.1"
        )
    log.warning("gateway: no API keys configured (FRUGAL_GATEWAY_KEYS_FILE): anyone on this machine can call it")


def serve(
    host: str = "127.0.0.1", port: int = 8000, workers: int = 1, graceful_seconds: float = 30.0, server: str = "uvicorn"
) -> None:
    check_bind(host)
    if server == "granian":
        serve_granian(host, port, workers, graceful_seconds)
        return
    uvicorn.run(
        "flows.gateway.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,  # our own access log line carries the tenant, cache, route, model and cost
        timeout_graceful_shutdown=int(graceful_seconds),
        server_header=False,
    )


def serve_granian(host: str, port: int, workers: int, graceful_seconds: float) -> None:
    """The same application on granian (a Rust HTTP server), where it is installed."""
    try:
        from granian import Granian
        from granian.constants import Interfaces
        from granian.log import LogLevels
    except ImportError as exc:
        raise ConfigError("--server granian needs the granian package: pip install granian") from exc
    Granian(
        "flows.gateway.app:create_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        log_level=LogLevels.warning,
        log_access=False,
        workers_kill_timeout=int(graceful_seconds),
    ).serve()
