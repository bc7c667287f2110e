"""Run an ASGI app with uvicorn on a loopback port, in a background thread.

    with LoopbackServer(app) as server:
        httpx.get(server.url + "/health")

The socket is bound before the thread starts (port 0, so the kernel picks a free
port), ``start()`` returns only once the server accepts connections, and
``stop()`` joins the thread, so nothing is left running after a test.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

__all__ = ["LoopbackServer"]


class LoopbackServer:
    """A uvicorn server for ``app`` on ``host`` (127.0.0.1) and an ephemeral port."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 10.0,
        shutdown_timeout: float = 10.0,
        graceful_timeout: float = 1.0,
        lifespan: str = "off",
    ) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        # Seconds uvicorn waits for in-flight requests at stop before cancelling them.
        self.graceful_timeout = graceful_timeout
        self.lifespan = lifespan  # "on" runs the app's startup and shutdown
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self.port is None:
            raise RuntimeError("LoopbackServer is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> LoopbackServer:
        if self._thread is not None:
            raise RuntimeError("LoopbackServer is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # proto set: asyncio then sets TCP_NODELAY
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan=self.lifespan,  # type: ignore[arg-type]
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=self.graceful_timeout,  # type: ignore[arg-type]
        )
        self._server = uvicorn.Server(config)
        self._error = None
        self._thread = threading.Thread(
            target=self._run, args=(self._server, sock), name=f"loopback-server:{self.port}", daemon=True
        )
        self._thread.start()
        try:
            self._wait_until_ready(sock)
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
        finally:
            sock.close()

    def _wait_until_ready(self, sock: socket.socket) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"LoopbackServer failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"LoopbackServer did not start within {self.startup_timeout}s")
            time.sleep(0.005)
        # The listener is registered with the event loop; prove it accepts a connection.
        with socket.create_connection((self.host, self.port), timeout=self.startup_timeout):
            pass

    def stop(self) -> None:
        """Stop serving and join the thread. Idempotent."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(self.shutdown_timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(self.shutdown_timeout)
        if thread.is_alive():
            raise RuntimeError(f"LoopbackServer thread {thread.name} did not stop")
        self._server = self._thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self.running else "stopped"
        return f"<LoopbackServer {state}>"
