"""Single Redis commands on redis-py connections, without the client's per-command machinery.

redis-py 8's `Redis.execute_command` takes the pool's asyncio lock, runs a
deprecated-arguments check, counts connections for its observability hooks and
wraps the call in a retry closure: ~25 µs of CPU per command on top of the ~50
µs of the command itself. A cache hit is one command, so that is a third of it.

`Connections.call(*args)` takes an idle connection (or makes one with the
pool's settings: address, db, credentials, TLS, HELLO), sends the command,
reads the reply and keeps the connection for the next call. A connection that
failed, or whose command was cancelled half-way, is dropped, never reused; a
reused connection that turns out closed (Redis restarted) gets the command
once more on a new one, as the client's one retry did. Replies are raw
(`b"OK"`, bytes, ints), not the client's parsed values.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: idle connections kept per store; more may be open while that many commands are in flight
KEEP = 64


class Connections:
    def __init__(self, pool: aioredis.ConnectionPool) -> None:
        self._pool = pool
        self._idle: deque[aioredis.Connection] = deque()

    async def call(self, *args: Any) -> Any:
        for attempt in (0, 1):
            connection = self._idle.pop() if self._idle else None
            reused = connection is not None
            if connection is None:
                connection = self._pool.make_connection()
                try:
                    await connection.connect()
                except BaseException:
                    _drop(connection)
                    raise
            try:
                await connection.send_packed_command(connection.pack_command(*args), check_health=False)
                reply = await connection.read_response()
            except ResponseError:  # an error reply (NOSCRIPT, WRONGTYPE, ...): read whole, the connection is fine
                self._keep(connection)
                raise
            except (RedisConnectionError, RedisTimeoutError, ConnectionError) as exc:
                _drop(connection)
                if reused and attempt == 0 and not isinstance(exc, RedisTimeoutError):
                    continue  # a kept connection the server had closed: once more, on a new one
                raise
            except BaseException:  # cancelled half-way, or a reply that could not be read: its state is unknown
                _drop(connection)
                raise
            self._keep(connection)
            return reply
        raise AssertionError("unreachable")

    def _keep(self, connection: aioredis.Connection) -> None:
        if len(self._idle) < KEEP:
            self._idle.append(connection)
        else:
            _drop(connection)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, deque()
        for connection in idle:
            await connection.disconnect()


def _drop(connection: aioredis.Connection) -> None:
    """Close a connection now, without waiting (this may run in a cancelled task)."""
    with contextlib.suppress(Exception):
        connection._parser.on_disconnect()
    writer = connection._writer
    if writer is not None:
        writer.transport.abort()
    connection._reader = None
    connection._writer = None
