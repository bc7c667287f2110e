"""A lean HTTP/1.1 transport for httpx, for plain-http model endpoints (a local Ollama, vLLM, llama.cpp).

httpx's default transport (httpcore over anyio, parsing with h11) spends about
0.4 ms of CPU per request on a loopback model call: a batch at hundreds of
items a second spends more there than anywhere else. This one speaks HTTP/1.1
on asyncio protocols with llhttp's C parser (`httptools`) and a keep-alive pool
per origin, and hands httpx the raw response (httpx still decodes content
encodings, raises for timeouts, builds the `Response`).

    httpx.AsyncClient(mounts=lean_mounts(limits))   # http:// goes here, https:// keeps httpx's own

What it does not do is left to httpx's own transport, per request: HTTPS (not
mounted), proxies (not mounted when an http proxy is configured), HEAD and
CONNECT, HTTP/2. Errors are httpx's: `ConnectError`, `ConnectTimeout`,
`ReadTimeout`, `WriteTimeout`, `PoolTimeout`, `ReadError`, `RemoteProtocolError`.
A request on a kept-alive connection the server closed meanwhile, which got no
byte of answer, is sent once more on a new connection (what httpcore does too).
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools
import httpx

__all__ = ["LeanTransport", "lean_mounts"]

Origin = tuple[str, int]
_DEFAULT_LIMITS = httpx.Limits()


def lean_mounts(limits: httpx.Limits) -> dict[str, httpx.AsyncBaseTransport]:
    """httpx `mounts` that send plain-http requests through a `LeanTransport`, unless a proxy is set for them."""
    proxies = urllib.request.getproxies()
    if "http" in proxies or "all" in proxies:
        return {}
    return {"http://": LeanTransport(limits)}


class _Connection(asyncio.Protocol):
    """One TCP connection; one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: BaseException | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._can_write: asyncio.Future[None] | None = None
        # the response being read
        self.received = False  # any byte of this response yet
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.chunks: deque[bytes] = deque()
        self.complete = False
        self.keep_alive = False

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self._parser is None:  # bytes between answers: the connection cannot be trusted
            self._fail(httpx.RemoteProtocolError("the server sent data without a request"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))
            return
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and self.error is None and not self._delimited():
            self.complete = True  # a body that ends with the connection (no length, not chunked) ends here
            self.keep_alive = False
        if not self.complete and self.error is None:
            if self.headers_done:
                self.error = httpx.RemoteProtocolError("the server closed the connection in the middle of the answer")
            else:
                self.error = httpx.RemoteProtocolError("Server disconnected without sending a response.")
        self._wake()
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def pause_writing(self) -> None:
        self._can_write = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._can_write = None

    def _delimited(self) -> bool:
        """The answer says where its body ends (a length, or chunks)."""
        return any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.headers)

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self.status = self._parser.get_status_code()
        if self.status < 200:  # 1xx: an interim answer; the real one follows
            self.headers = []
            return
        self.headers_done = True
        self.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.headers_done:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.headers_done:
            self.complete = True
            self._parser = None

    # -- used by the transport ---------------------------------------------------------------------

    def _fail(self, error: BaseException) -> None:
        self.error = error
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def start(self) -> None:
        """Ready for a new request's answer."""
        self._parser = httptools.HttpResponseParser(self)
        self.received = self.headers_done = self.complete = self.keep_alive = False
        self.status = 0
        self.headers = []
        self.chunks.clear()

    async def send(self, data: bytes, timeout: float | None) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if self._can_write is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self._can_write
            except TimeoutError:
                self.close()
                raise httpx.WriteTimeout("the server did not take the request in time") from None
        if self.closed and self.error is not None:
            raise self.error

    async def wait(self, timeout: float | None) -> None:
        """Until more of the answer arrived, it ended, or the connection failed."""
        self._waiter = waiter = self.loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            self.close()
            raise httpx.ReadTimeout("the server did not answer in time") from None
        finally:
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _Pool:
    """Connections to one origin: idle ones kept (most recent first), at most `limit` open at once."""

    def __init__(self, limit: int | None, keep: int) -> None:
        self.limit = limit
        self.keep = keep
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def slot(self, timeout: float | None) -> None:
        while self.limit is not None and self.open >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                async with asyncio.timeout(timeout):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake_next()  # woken for a free slot, yet leaving (cancelled, timed out): the next one gets it
                if isinstance(exc, TimeoutError):
                    raise httpx.PoolTimeout("no connection to the server came free in time") from None
                raise
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
        self.open += 1

    def release(self, connection: _Connection | None) -> None:
        """Give back a slot, and the connection if it can serve another request."""
        if connection is not None:
            if connection.closed or not connection.keep_alive or not connection.complete or len(self.idle) >= self.keep:
                connection.close()
            else:
                self.idle.append(connection)
        self.open -= 1
        self._wake_next()

    def _wake_next(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def take_idle(self) -> _Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed and not (connection.transport and connection.transport.is_closing()):
                return connection
        return None


class _Body(httpx.AsyncByteStream):
    def __init__(self, pool: _Pool, connection: _Connection, read: float | None) -> None:
        self._pool, self._connection, self._read = pool, connection, read
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            while connection.chunks:
                yield connection.chunks.popleft()
            if connection.complete:
                self._release()
                return
            if connection.error is not None:
                self._release()
                raise httpx.ReadError(str(connection.error)) from connection.error
            await connection.wait(self._read)

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._connection)

    async def aclose(self) -> None:
        if not self._released:
            if not self._connection.complete:
                self._connection.close()  # an answer not read to its end: the connection is spoiled
            self._release()


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio for `http://` URLs; everything else goes to httpx's own transport."""

    def __init__(self, limits: httpx.Limits = _DEFAULT_LIMITS) -> None:
        self._limit = limits.max_connections
        self._keep = limits.max_keepalive_connections if limits.max_keepalive_connections is not None else 1 << 30
        self._pools: dict[Origin, _Pool] = {}
        self._fallback: httpx.AsyncHTTPTransport | None = None
        self._limits = limits

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http" or request.method in ("HEAD", "CONNECT") or request.extensions.get("trace"):
            return await self._fallback_transport().handle_async_request(request)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        origin = (url.host, url.port or 80)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(self._limit, self._keep)
        body = await request.aread()
        head = _head(request, body)
        await pool.slot(timeouts.get("pool"))
        connection: _Connection | None = None
        try:
            for attempt in (0, 1):
                connection = pool.take_idle() if attempt == 0 else None
                reused = connection is not None
                if connection is None:
                    connection = await _connect(origin, timeouts.get("connect"))
                connection.start()
                try:
                    await connection.send(head + body if len(body) < 65536 else head, timeouts.get("write"))
                    if len(body) >= 65536:
                        await connection.send(body, timeouts.get("write"))
                    while not connection.headers_done:
                        if connection.error is not None:
                            raise connection.error
                        await connection.wait(timeouts.get("read"))
                    break
                except httpx.RemoteProtocolError:
                    connection.close()
                    if reused and not connection.received and attempt == 0:
                        continue  # a kept-alive connection the server had closed: once more, on a new one
                    raise
        except BaseException:
            pool.release(connection)
            raise
        assert connection is not None  # the loop above ends with a connection's answer, or raises
        return httpx.Response(
            connection.status,
            headers=connection.headers,
            stream=_Body(pool, connection, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _fallback_transport(self) -> httpx.AsyncHTTPTransport:
        if self._fallback is None:
            self._fallback = httpx.AsyncHTTPTransport(limits=self._limits)
        return self._fallback

    async def aclose(self) -> None:
        for pool in self._pools.values():
            for connection in pool.idle:
                connection.close()
            pool.idle.clear()
        self._pools.clear()
        if self._fallback is not None:
            await self._fallback.aclose()


def _head(request: httpx.Request, body: bytes) -> bytes:
    """The request line and headers, as httpx prepared them (Host, Content-Length, ... included)."""
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    chunked = False
    for name, value in request.headers.raw:
        if name.lower() == b"transfer-encoding":
            chunked = True  # the body is read whole below, so it is sent with a length instead
            continue
        lines.append(b"%s: %s\r\n" % (name, value))
    if chunked:
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    return b"".join(lines)


async def _connect(origin: Origin, timeout: float | None) -> _Connection:
    loop = asyncio.get_running_loop()
    host, port = origin
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await loop.create_connection(lambda: _Connection(loop), host, port)
    except TimeoutError:
        raise httpx.ConnectTimeout(f"no connection to {host}:{port} in time") from None
    except OSError as exc:
        raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    protocol.transport = transport  # uvloop may call connection_made only after this returns
    return protocol  # asyncio and uvloop set TCP_NODELAY on TCP connections themselves
