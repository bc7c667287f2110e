"""A temporary Prefect server for one `frugal run --orchestrated` without PREFECT_API_URL.

Prefect's own ephemeral server (`SubprocessASGIServer`) is stopped by an `atexit` hook, so a
`frugal run` killed with SIGKILL left it running (about 200 MB, still alive 15 minutes later).
This starts the same server (uvicorn on Prefect's app factory, SQLite under PREFECT_HOME, no UI)
as a child that the kernel stops when its parent dies (Linux `PR_SET_PDEATHSIG`), and stops it
on a normal exit too. Elsewhere the child is still stopped on a normal exit.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import prefect
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from tasks.core.errors import ConfigError

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(port: int) -> list[str]:
    """The server Prefect's ephemeral mode runs: its API app on uvicorn, errors only."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(Path(prefect.__file__).parent.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]


def start(timeout: float = 120.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server; return the process and its API URL once it answers /health."""
    port = _free_port()
    env = {
        **os.environ,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        "PREFECT_UI_ENABLED": "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT__SERVER_EPHEMERAL": "1",
    }
    process = subprocess.Popen(command(port), env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509 (no threads yet)
    api_url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as http:
        while True:
            if process.poll() is not None:
                raise ConfigError(f"the temporary Prefect server exited with code {process.returncode}; set PREFECT_API_URL")
            try:
                if http.get(f"{api_url}/health").status_code == 200:
                    return process, api_url
            except httpx.TransportError:  # not listening yet: poll again until the deadline below
                pass
            if time.monotonic() > deadline:
                stop(process)
                raise ConfigError(
                    f"the temporary Prefect server did not answer within {timeout:g}s; "
                    "start one (`prefect server start`) and set PREFECT_API_URL"
                )
            time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def temporary_server() -> Iterator[tuple[str, int]]:
    """A server for the duration of the block, PREFECT_API_URL pointing at it; yields its API URL and pid."""
    process, api_url = start()
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            try:
                yield api_url, process.pid
            finally:  # the run's last events and log lines reach the server before it stops
                EventsWorker.drain_all(timeout=10)
                APILogWorker.drain_all(timeout=10)
    finally:
        stop(process)
