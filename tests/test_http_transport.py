"""The lean plain-http transport (tasks/adapters/http_transport.py) against real loopback servers.

- The official Ollama and OpenAI clients chat through it with the model peer.
- Keep-alive: one connection for sequential requests; a connection the server
  closed is replaced, and a request is sent again only when it got no answer.
- Response bodies: chunked (streamed as they arrive), ended by the connection's
  close, gzip-encoded.
- Errors are httpx's: refused, read timeout, a body cut short, a malformed
  status line, write timeout, pool timeout (and a pool waiter cancelled as it
  is woken passes its turn on).
- Large and streamed request bodies arrive whole, sent with a Content-Length.
- HEAD, https:// and proxied setups are left to httpx's own transport.
- A cancelled request leaves the pool usable.
- `tasks.providers.clients` mounts it for the project's Ollama and HTTP clients.

Servers that must misbehave precisely are written by hand on asyncio streams
(`RawServer`): each accepted connection is served by a small handler.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import ollama
import openai
import pytest

from tasks.providers.clients import close_clients, http_client, ollama_client
from tasks.providers.http_transport import LeanTransport, lean_mounts
from tests.peers.model_peer import ModelPeer

# -- a hand-written HTTP server ------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the raw server read it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    connection: int  # which accepted connection (0-based) it came on


class Conn:
    """One accepted connection, for a handler: read requests, write bytes."""

    def __init__(self, server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        self.server, self.reader, self.writer, self.index = server, reader, writer, index

    async def request(self) -> Seen:
        """The next request on this connection (IncompleteReadError when the client hung up)."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        line, *fields = head.decode("latin-1").split("\r\n")[:-2]
        headers = {name.strip().lower(): value.strip() for name, _, value in (f.partition(":") for f in fields)}
        body = await self.reader.readexactly(int(headers.get("content-length", 0)))
        method, path, _ = line.split(" ")
        seen = Seen(method, path, headers, body, self.index)
        self.server.requests.append(seen)
        return seen

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_client_leaves(self) -> None:
        """Read nothing more of use until the client closes its end."""
        while await self.reader.read(65536):
            pass


Handler = Callable[[Conn], Awaitable[None]]


class RawServer:
    """An HTTP server on 127.0.0.1 and an ephemeral port; `handler` serves each accepted connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[Seen] = []
        self.url = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Conn(self, reader, writer, self.connections)
        self.connections += 1
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up
        except asyncio.CancelledError:
            pass  # the test is over
        finally:
            writer.close()


def answer(body: bytes = b"ok", *headers: str, status: str = "200 OK") -> bytes:
    """A complete response with a Content-Length."""
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def keep_answering(conn: Conn) -> None:
    """Answer every request on the connection with its path, and keep the connection open."""
    while True:
        seen = await conn.request()
        await conn.send(answer(seen.path.encode()))


def lean_client(timeout: float | httpx.Timeout = 5.0, **limits: Any) -> httpx.AsyncClient:
    mounts = lean_mounts(httpx.Limits(**limits))
    assert isinstance(mounts.get("http://"), LeanTransport)
    return httpx.AsyncClient(mounts=mounts, timeout=timeout)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


# -- the official clients, against the model peer ------------------------------------------------


async def test_official_ollama_client_chats_through_it(peer: ModelPeer) -> None:
    peer.responder = lambda protocol, body: "the sky is blue"
    host = os.environ["OLLAMA_HOST"]
    mounts = lean_mounts(httpx.Limits(max_connections=4))
    transport = mounts["http://"]
    assert isinstance(transport, LeanTransport)
    client = ollama.AsyncClient(host=host, mounts=mounts)
    try:
        messages = [{"role": "user", "content": "What colour is the sky?"}]
        reply = await client.chat(model="llama3.2:1b", messages=messages)
        assert reply.message.content == "the sky is blue"
        streamed = [part.message.content async for part in await client.chat("llama3.2:1b", messages, stream=True)]
        assert "".join(c or "" for c in streamed) == "the sky is blue" and len(streamed) > 1  # NDJSON, chunked
        assert peer.count("/api/chat") == 2
        [pool] = transport._pools.values()
        assert len(pool.idle) == 1 and pool.open == 0  # both calls went through it, on one kept-alive connection
    finally:
        await client._client.aclose()


async def test_official_openai_client_chats_through_it(peer: ModelPeer) -> None:
    peer.responder = lambda protocol, body: "Paris."
    base_url, key = os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"]
    http = lean_client(max_connections=4)
    # openai types `http_client` as an httpx2 client; it takes an httpx one as well
    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, http_client=http)  # type: ignore[arg-type]
    try:
        messages: Any = [{"role": "user", "content": "Capital of France?"}]
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert completion.choices[0].message.content == "Paris."
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
        text = "".join([event.choices[0].delta.content or "" async for event in stream if event.choices])
        assert text == "Paris."  # server-sent events, chunked
        assert [r.path for r in peer.requests] == ["/v1/chat/completions"] * 2
        transport = http._transport_for_url(httpx.URL(base_url))
        assert isinstance(transport, LeanTransport)
        [pool] = transport._pools.values()
        assert len(pool.idle) == 1 and pool.open == 0
    finally:
        await client.close()


def test_it_runs_on_uvloop_too(peer: ModelPeer) -> None:
    """uvloop calls connection_made later than asyncio does, with transports of its own classes."""
    import uvloop

    peer.responder = lambda protocol, body: "on uvloop"

    async def chat() -> list[str | None]:
        client = ollama.AsyncClient(host=os.environ["OLLAMA_HOST"], mounts=lean_mounts(httpx.Limits(max_connections=2)))
        try:
            messages = [{"role": "user", "content": "which loop?"}]
            return [(await client.chat(model="llama3.2:1b", messages=messages)).message.content for _ in range(3)]
        finally:
            await client._client.aclose()

    assert uvloop.run(chat()) == ["on uvloop"] * 3


# -- keep-alive ----------------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection() -> None:
    async with RawServer(keep_answering) as server, lean_client() as client:
        for n in range(5):
            response = await client.get(f"{server.url}/{n}")
            assert (response.status_code, response.text) == (200, f"/{n}")
        assert server.connections == 1
        assert [(r.path, r.connection) for r in server.requests] == [(f"/{n}", 0) for n in range(5)]


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def answer_once(conn: Conn) -> None:
        await conn.request()
        await conn.send(answer())  # keep-alive by the headers, yet the server closes it right after

    async with RawServer(answer_once) as server, lean_client() as client:
        assert (await client.get(server.url + "/1")).text == "ok"
        await asyncio.sleep(0.05)  # the close reaches the client
        assert (await client.get(server.url + "/2")).text == "ok"
        assert server.connections == 2
        assert [r.path for r in server.requests] == ["/1", "/2"]


async def test_a_request_the_closing_server_did_not_answer_is_sent_again() -> None:
    async def close_on_second_request(conn: Conn) -> None:
        if conn.index > 0:
            return await keep_answering(conn)
        seen = await conn.request()
        await conn.send(answer(seen.path.encode()))
        await conn.request()  # the close of an idle connection crossed this request: no byte of answer

    async with RawServer(close_on_second_request) as server, lean_client() as client:
        assert (await client.get(server.url + "/1")).text == "/1"
        assert (await client.get(server.url + "/2")).text == "/2"
        assert [(r.path, r.connection) for r in server.requests] == [("/1", 0), ("/2", 0), ("/2", 1)]


async def test_a_request_the_server_began_to_answer_is_not_sent_again() -> None:
    async def break_off_second_answer(conn: Conn) -> None:
        await conn.request()
        await conn.send(answer())
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\n")  # then the connection closes

    async with RawServer(break_off_second_answer) as server, lean_client() as client:
        await client.get(server.url + "/1")
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(server.url + "/2", content=b"charge the card")
        assert server.connections == 1
        assert [r.path for r in server.requests] == ["/1", "/2"]


async def test_a_new_connection_closed_without_an_answer_is_not_retried() -> None:
    async def hang_up(conn: Conn) -> None:
        await conn.request()

    async with RawServer(hang_up) as server, lean_client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(server.url, content=b"once")
        assert server.connections == 1 and len(server.requests) == 1


# -- response bodies -----------------------------------------------------------------------------


async def test_chunked_body_then_the_connection_is_reused() -> None:
    async def chunked(conn: Conn) -> None:
        while True:
            await conn.request()
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            await conn.send(head + chunk(b"one ") + chunk(b"two ") + chunk(b"three") + b"0\r\n\r\n")

    async with RawServer(chunked) as server, lean_client() as client:
        for _ in range(2):
            assert (await client.get(server.url)).content == b"one two three"
        assert server.connections == 1


async def test_a_streamed_chunked_body_arrives_before_the_server_finished() -> None:
    first_seen = asyncio.Event()

    async def trickle(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"first"))
        await first_seen.wait()  # the rest only once the client has the first piece
        await conn.send(chunk(b"second") + b"0\r\n\r\n")
        await conn.until_client_leaves()

    async with RawServer(trickle) as server, lean_client() as client:
        pieces = []
        async with asyncio.timeout(5), client.stream("GET", server.url) as response:
            async for piece in response.aiter_bytes():
                pieces.append(piece)
                first_seen.set()
        assert pieces[0] == b"first" and b"".join(pieces) == b"firstsecond"


async def test_a_body_ended_by_the_connection_close() -> None:
    async def until_close(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it, ")
        await conn.send(b"up to the close")

    async with RawServer(until_close) as server, lean_client() as client:
        for _ in range(2):
            assert (await client.get(server.url)).text == "all of it, up to the close"
        assert server.connections == 2


async def test_a_gzip_body_is_decoded() -> None:
    text = "positive " * 1000

    async def gzipped(conn: Conn) -> None:
        await conn.request()
        await conn.send(answer(gzip.compress(text.encode()), "Content-Encoding: gzip", "Content-Type: text/plain"))

    async with RawServer(gzipped) as server, lean_client() as client:
        response = await client.get(server.url)
        assert response.text == text
        assert server.requests[0].headers["accept-encoding"].startswith("gzip")


# -- errors --------------------------------------------------------------------------------------


async def test_connection_refused_is_a_connect_error() -> None:
    async with lean_client() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{closed_port()}/")


async def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    async def silent(conn: Conn) -> None:
        await conn.request()
        await conn.until_client_leaves()

    async with RawServer(silent) as server, lean_client(httpx.Timeout(5, read=0.2)) as client:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            async with asyncio.timeout(5):  # a transport that ignores the read timeout fails here, not hangs
                await client.get(server.url)
        assert 0.15 < time.monotonic() - started < 2


@pytest.mark.parametrize(
    "cut",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 50,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"half") + b"3\r\nha",
    ],
    ids=["content-length", "chunked"],
)
async def test_a_body_cut_short_is_a_transport_error(cut: bytes) -> None:
    async def half(conn: Conn) -> None:
        await conn.request()
        await conn.send(cut)

    async with RawServer(half) as server, lean_client() as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await client.get(server.url)


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 2x0 OK", b"SSH-2.0-OpenSSH_9.6", b"HTTP/1.1 200 OK\nBroken header"])
async def test_a_malformed_answer_is_a_remote_protocol_error(status_line: bytes) -> None:
    async def garbled(conn: Conn) -> None:
        await conn.request()
        await conn.send(status_line + b"\r\nContent-Length: 2\r\n\r\nok")
        await conn.until_client_leaves()  # the error must come from parsing, not from a close

    async with RawServer(garbled) as server, lean_client(2.0) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url)


async def test_a_server_that_takes_no_request_body_is_a_write_timeout() -> None:
    async def not_reading(conn: Conn) -> None:
        await asyncio.Event().wait()

    async with RawServer(not_reading) as server, lean_client(httpx.Timeout(5, write=0.2)) as client:
        with pytest.raises(httpx.WriteTimeout):
            async with asyncio.timeout(5):
                await client.post(server.url, content=b"x" * (64 << 20))  # more than the socket buffers take


def slow_until(go: asyncio.Event) -> Callable[[Conn], Awaitable[None]]:
    """A handler that answers each request with its path, holding "/slow" until `go` is set."""

    async def handler(conn: Conn) -> None:
        while True:
            seen = await conn.request()
            if seen.path == "/slow":
                await go.wait()
            await conn.send(answer(seen.path.encode()))

    return handler


async def test_a_full_pool_waits_then_times_out() -> None:
    go = asyncio.Event()
    first_waits = slow_until(go)

    async with RawServer(first_waits) as server, lean_client(max_connections=1) as client:
        slow = asyncio.create_task(client.get(server.url + "/slow"))
        await until(lambda: len(server.requests) == 1)
        started = time.monotonic()
        with pytest.raises(httpx.PoolTimeout):
            async with asyncio.timeout(5):
                await client.get(server.url + "/next", timeout=httpx.Timeout(5, pool=0.05))
        assert time.monotonic() - started < 1
        waiting = asyncio.create_task(client.get(server.url + "/waits"))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # held until the slow one is done
        go.set()
        assert (await slow).text == "/slow"
        assert (await waiting).text == "/waits"
        assert server.connections == 1


async def test_a_pool_waiter_cancelled_as_it_is_woken_passes_its_turn_on() -> None:
    go = asyncio.Event()
    first_waits = slow_until(go)

    async with RawServer(first_waits) as server, lean_client(max_connections=1) as client:
        waiters: list[asyncio.Task[httpx.Response]] = []

        async def slow_then_cancel_the_next() -> httpx.Response:
            response = await client.get(server.url + "/slow")  # its end gives the slot to the first waiter ...
            waiters[0].cancel()  # ... which is cancelled before it could take it
            return response

        first = asyncio.create_task(slow_then_cancel_the_next())
        await until(lambda: len(server.requests) == 1)
        waiters.append(asyncio.create_task(client.get(server.url + "/second")))
        third = asyncio.create_task(client.get(server.url + "/third", timeout=httpx.Timeout(5, pool=1)))
        await asyncio.sleep(0.05)  # both wait for the one connection
        go.set()
        assert (await first).text == "/slow"
        with pytest.raises(asyncio.CancelledError):
            await waiters[0]
        assert (await third).text == "/third"


# -- request bodies ------------------------------------------------------------------------------


async def test_a_large_request_body_arrives_whole() -> None:
    payload = os.urandom(1 << 20)

    async def digest(conn: Conn) -> None:
        while True:
            await asyncio.sleep(0.05)  # let the client's buffers fill first
            seen = await conn.request()
            await conn.send(answer(hashlib.sha256(seen.body).hexdigest().encode()))

    async def parts() -> AsyncIterator[bytes]:
        for n in range(3):
            yield payload[n * 1000 : (n + 1) * 1000]

    async with RawServer(digest) as server, lean_client() as client:
        response = await client.post(server.url, content=payload)
        assert response.text == hashlib.sha256(payload).hexdigest()
        assert server.requests[0].headers["content-length"] == str(len(payload))
        response = await client.post(server.url, content=parts())  # httpx would send it chunked
        assert response.text == hashlib.sha256(payload[:3000]).hexdigest()
        assert "transfer-encoding" not in server.requests[1].headers
        assert server.connections == 1


# -- what is left to httpx's own transport -------------------------------------------------------


async def test_head_goes_to_httpx_own_transport() -> None:
    async def head_answer(conn: Conn) -> None:
        while True:
            await conn.request()
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")  # no body: it is a HEAD

    async with RawServer(head_answer) as server, lean_client(1.0) as client:
        response = await client.head(server.url)
        assert (response.status_code, response.headers["content-length"], response.content) == (200, "1000", b"")
        assert server.requests[0].method == "HEAD"


@pytest.mark.parametrize("mounted", [True, False], ids=["lean_mounts", "transport"])
async def test_https_goes_to_httpx_own_transport(mounted: bool) -> None:
    first_bytes: list[bytes] = []

    async def record(conn: Conn) -> None:
        first_bytes.append(await conn.reader.read(5))

    async with RawServer(record) as server:
        https = server.url.replace("http://", "https://")
        if mounted:
            client = lean_client(2.0)
        else:
            client = httpx.AsyncClient(transport=LeanTransport(httpx.Limits()), timeout=2.0)
        async with client:
            with pytest.raises(httpx.ConnectError):
                await client.get(https)
        assert first_bytes[0][:2] == b"\x16\x03"  # a TLS handshake, not a plain request line


@pytest.mark.parametrize("name", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_no_lean_mount_when_a_proxy_is_set(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    assert isinstance(lean_mounts(httpx.Limits())["http://"], LeanTransport)
    monkeypatch.setenv(name, "http://127.0.0.1:3128")
    assert lean_mounts(httpx.Limits()) == {}


# -- cancellation --------------------------------------------------------------------------------


async def test_cancelled_requests_leave_the_pool_usable() -> None:
    async def slow_paths(conn: Conn) -> None:
        while True:
            seen = await conn.request()
            if seen.path == "/slow":
                return await conn.until_client_leaves()
            if seen.path == "/trickle":
                await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"a bit"))
                return await conn.until_client_leaves()
            await conn.send(answer(seen.path.encode()))

    async def read_trickle(client: httpx.AsyncClient) -> None:
        async with client.stream("GET", server.url + "/trickle") as response:
            async for _ in response.aiter_bytes():
                pass

    async with RawServer(slow_paths) as server, lean_client(httpx.Timeout(2, pool=0.5), max_connections=1) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.get(server.url + "/slow"), 0.1)  # waiting for the answer
        assert (await client.get(server.url + "/after-slow")).text == "/after-slow"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(read_trickle(client), 0.1)  # in the middle of the body
        assert (await client.get(server.url + "/after-trickle")).text == "/after-trickle"
        assert [r.connection for r in server.requests] == [0, 1, 1, 2]  # no spoiled connection reused


# -- through the project -------------------------------------------------------------------------


async def test_project_clients_use_it() -> None:
    chat = b'{"model":"m","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant","content":"hi"},"done":true}'

    async def ollama_like(conn: Conn) -> None:
        while True:
            await conn.request()
            await conn.send(answer(chat, "Content-Type: application/json"))

    async with RawServer(ollama_like) as server:
        try:
            client = ollama_client(server.url, 5.0)
            for _ in range(3):
                reply = await client.chat(model="m", messages=[{"role": "user", "content": "hello"}])
                assert reply.message.content == "hi"
            transport = client._client._transport_for_url(httpx.URL(server.url))
            assert isinstance(transport, LeanTransport)
            [pool] = transport._pools.values()
            assert len(pool.idle) == 1 and server.connections == 1 and len(server.requests) == 3

            http = http_client(5.0)
            assert (await http.post(server.url + "/v1/chat/completions", json={})).json()["done"] is True
            assert isinstance(http._transport_for_url(httpx.URL(server.url)), LeanTransport)
            assert server.connections == 2
        finally:
            await close_clients()
