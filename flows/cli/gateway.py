"""`frugal gateway` and `frugal gateway-key`: the OpenAI-compatible endpoint and its keys.

The parsers are cheap to build; the gateway itself (uvicorn, the engine) is imported only when
one of these commands runs, so the rest of the CLI starts without it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from decimal import Decimal
from pathlib import Path

from tasks.core.errors import ConfigError


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    gw = sub.add_parser("gateway", help="serve the pipelines as an OpenAI-compatible API (POST /v1/chat/completions)")
    gw.add_argument("--host", default="127.0.0.1", help="address to listen on (non-loopback needs API keys)")
    gw.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    gw.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    gw.add_argument(
        "--keys-file",
        type=Path,
        default=None,
        help="tenants' API keys (`frugal gateway-key add`); default: FRUGAL_GATEWAY_KEYS_FILE",
    )
    gw.add_argument(
        "--server", choices=("uvicorn", "granian"), default="uvicorn", help="ASGI server (granian: pip install granian)"
    )
    gw.set_defaults(handler="gateway", func=run)
    key = sub.add_parser("gateway-key", help="create an API key for a tenant of the gateway")
    key_sub = key.add_subparsers(dest="key_command", required=True)
    add = key_sub.add_parser("add", help="create a key (printed once; only its hash is stored)")
    add.add_argument("tenant", help="tenant name (also its cache namespace unless --namespace)")
    add.add_argument("--namespace", default="", help="cache namespace; default: the tenant name")
    add.add_argument("--budget", type=Decimal, default=None, help="US dollars per day (UTC); default: none")
    add.add_argument("--rpm", type=int, default=None, help="requests per minute; default: no limit")
    add.add_argument("--keys-file", type=Path, default=None, help="default: FRUGAL_GATEWAY_KEYS_FILE")
    key.set_defaults(handler="gateway-key", func=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `frugal --help` and the other commands start without them
    from flows.gateway.server import serve
    from flows.gateway.tenants import add_key
    from tasks.core.settings import get_settings

    if args.handler == "gateway":
        if args.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if args.keys_file is not None:  # the workers read it from the environment
            if not args.keys_file.is_file():
                raise ConfigError(f"--keys-file {args.keys_file}: no such file (create keys with `frugal gateway-key add`)")
            os.environ["FRUGAL_GATEWAY_KEYS_FILE"] = str(args.keys_file.resolve())
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(
            f"gateway: http://{host}:{args.port}/v1 ({args.workers} worker(s), {args.server}); ready when it says so",
            file=sys.stderr,
        )
        serve(args.host, args.port, args.workers, server=args.server)
        return 0
    path = args.keys_file or get_settings().gateway.keys_file
    if path is None:
        raise ConfigError("say where keys are kept: --keys-file PATH or FRUGAL_GATEWAY_KEYS_FILE")
    key = add_key(path, args.tenant, args.budget, args.rpm, args.namespace)
    print(key)
    print(f"tenant '{args.tenant}' added to {path}; this key is shown once: keep it secret", file=sys.stderr)
    return 0
