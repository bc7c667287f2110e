"""Single Redis commands on kept connections (tasks/stores/redis_connections.py), against the real Redis.

- Sequential commands share one connection; an error reply leaves it usable.
- A kept connection the server closed (CLIENT KILL) gets the command once more on a new one.
- A command cancelled half-way drops its connection: its late reply is never read as another's.
- Nothing listening: redis-py's ConnectionError.
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tasks.stores.redis_connections import Connections
from tests.conftest import REDIS_URL


@pytest.fixture
async def connections(redis_cache: redis.Redis) -> Connections:
    pool = aioredis.ConnectionPool.from_url(REDIS_URL, socket_timeout=None)
    made = Connections(pool)
    yield made
    await made.aclose()
    await pool.aclose()


async def test_commands_share_a_connection_and_an_error_reply_keeps_it(
    connections: Connections, redis_cache: redis.Redis
) -> None:
    key = f"{os.environ['FRUGAL_CACHE_PREFIX']}:conn-test"  # deleted by the fixture
    first = await connections.call("CLIENT", "ID")
    assert await connections.call("SET", key, b"not a number") == b"OK"
    with pytest.raises(ResponseError):
        await connections.call("INCR", key)
    assert await connections.call("CLIENT", "ID") == first


async def test_a_connection_the_server_closed_gets_the_command_again(connections: Connections, redis_cache: redis.Redis) -> None:
    first = await connections.call("CLIENT", "ID")
    assert redis_cache.client_kill_filter(_id=first) == 1
    second = await connections.call("CLIENT", "ID")  # the kept one is dead: sent again, on a new connection
    assert second != first
    assert await connections.call("CLIENT", "ID") == second


async def test_a_cancelled_command_drops_its_connection(connections: Connections, redis_cache: redis.Redis) -> None:
    first = await connections.call("CLIENT", "ID")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await connections.call("BLPOP", "frugal-test-never-filled", 5)  # its reply would come in 5 s
    assert await connections.call("PING") == b"PONG"  # not the late reply of the BLPOP
    assert await connections.call("CLIENT", "ID") != first
    ids = [line.split()[0] for line in redis_cache.execute_command("CLIENT", "LIST").decode().splitlines()]
    assert f"id={first}" not in ids  # closed at once, not left blocking on the server


async def test_nothing_listening_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = aioredis.ConnectionPool.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    with pytest.raises(RedisConnectionError):
        await Connections(pool).call("PING")
    await pool.aclose()
