"""The providers' HTTP transport (FRUGAL_HTTP_TRANSPORT): aiohttp by default, httpx's own on request;
the same answers, errors that say what happened, proxies from the environment, no unclosed sessions."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import threading
import warnings
from collections.abc import Iterator

import httpx
import pytest

from tasks.core.errors import ModelTimeout, ModelUnavailable
from tasks.steps.call_llm import LlmRequest, answer_large
from tests.tasks.providers.test_call_llm import closed_port

COMPLETION = {
    "id": "chatcmpl-proxy",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "via the proxy"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
}


@pytest.fixture(params=["aiohttp", "httpx"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FRUGAL_HTTP_TRANSPORT", request.param)
    return str(request.param)


class RawServer:
    """A loopback TCP server that hands each connection to `serve(conn)` on a thread of its own."""

    def __init__(self, serve: object) -> None:
        self.serve = serve
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(self, conn), daemon=True).start()  # type: ignore[operator]

    def close(self) -> None:
        self.sock.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def answer_completion(server: RawServer, conn: socket.socket) -> None:
    """Keep the request, answer COMPLETION."""
    server.seen.append(read_request(conn))
    body = json.dumps(COMPLETION).encode()
    conn.sendall(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
        % (len(body), body)
    )
    conn.close()


@pytest.fixture
def raw() -> Iterator[list[RawServer]]:
    made: list[RawServer] = []
    yield made
    for server in made:
        server.close()


async def test_both_transports_answer_through_the_peer(transport, peer):
    peer.responder = lambda protocol, body: f"answered over {transport}"
    answer = await answer_large(LlmRequest(prompt="hi"))
    assert answer.text == f"answered over {transport}"
    assert peer.count("/v1/chat/completions") == 1


async def test_a_refused_connection_is_unreachable_not_a_timeout(transport, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(ModelUnavailable) as caught:
        await answer_large(LlmRequest(prompt="hi"))
    assert not isinstance(caught.value, ModelTimeout)
    assert "cannot be reached" in str(caught.value)


async def test_a_connection_dropped_before_the_answer_is_unreachable(transport, monkeypatch, raw):
    def drop(server: RawServer, conn: socket.socket) -> None:
        server.seen.append(read_request(conn))
        conn.close()

    server = RawServer(drop)
    raw.append(server)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.port}/v1")
    with pytest.raises(ModelUnavailable) as caught:
        await answer_large(LlmRequest(prompt="hi"))
    assert not isinstance(caught.value, ModelTimeout)
    assert "cannot be reached" in str(caught.value)
    assert len(server.seen) == 4  # retried as a down model is: 4 attempts


async def test_a_silent_server_is_a_timeout(transport, monkeypatch, raw):
    release = threading.Event()

    def hold(server: RawServer, conn: socket.socket) -> None:
        server.seen.append(read_request(conn))
        release.wait(30)
        conn.close()

    server = RawServer(hold)
    raw.append(server)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.port}/v1")
    monkeypatch.setenv("FRUGAL_LLM_TIMEOUT", "0.3")
    monkeypatch.setenv("FRUGAL_LLM_MAX_ATTEMPTS", "1")
    try:
        with pytest.raises(ModelTimeout):
            await answer_large(LlmRequest(prompt="hi"))
    finally:
        release.set()


async def test_an_http_proxy_from_the_environment_is_used(transport, monkeypatch, raw):
    """Like httpx, the aiohttp transport sends plain-HTTP requests through HTTP_PROXY."""

    server = RawServer(answer_completion)
    raw.append(server)
    unreachable = f"http://127.0.0.1:{closed_port()}/v1"  # only the proxy can answer for it
    monkeypatch.setenv("OPENAI_BASE_URL", unreachable)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    answer = await answer_large(LlmRequest(prompt="hi"))
    assert answer.text == "via the proxy"
    request_line = server.seen[0].split(b"\r\n", 1)[0]
    assert request_line.startswith(b"POST " + unreachable.encode() + b"/chat/completions")


async def test_a_request_body_is_compact_utf8_json_with_one_content_type(transport, monkeypatch, raw):
    """What httpx's `json=` sent: compact JSON in UTF-8 (not \\u escapes), one content-type, its length."""
    server = RawServer(answer_completion)
    raw.append(server)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.port}/v1")
    prompt = "Wie spät ist es in Zürich? 東京は?"
    await answer_large(LlmRequest(prompt=prompt))
    head, _, body = server.seen[0].partition(b"\r\n\r\n")
    headers = [line.split(b":", 1) for line in head.split(b"\r\n")[1:]]
    assert [value.strip() for name, value in headers if name.lower() == b"content-type"] == [b"application/json"]
    assert [int(value) for name, value in headers if name.lower() == b"content-length"] == [len(body)]
    sent = json.loads(body)
    assert body == json.dumps(sent, ensure_ascii=False, separators=(",", ":")).encode()
    assert prompt.encode() in body
    assert sent["messages"][-1] == {"role": "user", "content": prompt}


def test_a_client_whose_loop_is_gone_leaves_no_unclosed_session(peer, monkeypatch):
    """Prefect runs sync tasks on loops of their own: their clients are dropped when those loops end."""
    monkeypatch.setenv("FRUGAL_HTTP_TRANSPORT", "aiohttp")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            asyncio.run(answer_large(LlmRequest(prompt="hi")))  # a new loop each time, then closed
        asyncio.run(answer_large(LlmRequest(prompt="hi")))  # the next loop's client drops the closed loops' ones
        gc.collect()
    assert not [w for w in caught if "Unclosed" in str(w.message)], [str(w.message) for w in caught]
    assert peer.count("/v1/chat/completions") == 4


def test_no_proxy_hosts_are_reached_directly_and_the_environment_is_read_once(monkeypatch):
    """NO_PROXY wins over HTTP_PROXY; the environment is read when the client is made, as httpx does."""
    from tasks.providers.transport import EnvProxies

    monkeypatch.setenv("HTTP_PROXY", "http://user:secret@proxy.example:3128")
    monkeypatch.setenv("HTTPS_PROXY", "https://tls-proxy.example:3129")  # aiohttp cannot use a TLS proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,internal.example")
    for name in ("http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxies = EnvProxies()
    monkeypatch.setenv("HTTP_PROXY", "http://other.example:1")  # too late for this client
    proxy = proxies.for_url(httpx.URL("http://models.example/v1"))
    assert proxy is not None and proxy.url == httpx.URL("http://proxy.example:3128")
    assert proxy.auth == ("user", "secret")
    assert proxies.for_url(httpx.URL("http://127.0.0.1:11434/api/chat")) is None
    assert proxies.for_url(httpx.URL("http://internal.example/v1")) is None
    assert proxies.for_url(httpx.URL("https://api.openai.com/v1")) is None


def test_an_https_proxy_is_said_to_be_ignored_once(monkeypatch, caplog):
    from tasks.providers import transport

    monkeypatch.setattr(transport, "_said_ignored", set())
    monkeypatch.setenv("HTTPS_PROXY", "https://tls-proxy.example:3129")
    monkeypatch.delenv("https_proxy", raising=False)
    with caplog.at_level("WARNING", logger="frugal"):
        transport.EnvProxies()
        transport.EnvProxies()
    said = [r.getMessage() for r in caplog.records if "https:// URL" in r.getMessage()]
    assert len(said) == 1 and "https proxy" in said[0]
