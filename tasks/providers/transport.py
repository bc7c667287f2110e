"""The transport under the providers' httpx clients: aiohttp (through `httpx-aiohttp`) by default.

httpx's own transport (httpcore on anyio) costs a lot of CPU per request once many are in
flight. Measured with `tests/benchmarks/bench_http_transport.py` (one client, a loopback
stand-in answering in 50 ms, the same run): at 32 requests in flight httpx's transport spent
4.9-9.3 ms of the client's CPU per request and topped out at 88-155 requests/s on one core,
aiohttp's 0.76-0.90 ms and 410-441 requests/s; one at a time, 2.1-2.7 against 1.4-1.8 ms
(a loaded 2-core host). A batch at concurrency 32, or the gateway, spends that on every model
call. `httpx-aiohttp` (the transport the OpenAI SDK offers for the same reason) keeps httpx's
API above it, so requests, responses, auth and errors stay httpx's; FRUGAL_HTTP_TRANSPORT=httpx
goes back to httpx's own transport.

What this module adds around it:

- **Proxies as httpx has them**: HTTP_PROXY, HTTPS_PROXY and NO_PROXY, read when the client is
  made (as httpx does), each host's answer kept. Not aiohttp's `trust_env`: it reads the
  environment and `~/.netrc` again on every request, on two trips through a thread pool
  (`run_in_executor`, `to_thread`) per model call. Measured with `bench_gateway.py --compare`
  (docs/performance.md, 2 rounds interleaved): a miss's overhead at concurrency 1 +10.37 -> +9.74 ms,
  the gateway's CPU per miss at concurrency 32 3.71 -> 3.50 ms. Like httpx, no `.netrc` credentials.
- **One TLS context** for every client (`tls_context`), as before.
- **Errors that say what happened**: `httpx-aiohttp` reports a refused or dropped connection
  as `httpx.ConnectTimeout`; `timed_out` looks at the aiohttp error beneath, so a model that
  is down is "cannot be reached", not "did not answer in time".
- **No "Unclosed client session"**: a session is closed, without its event loop, when its
  client is dropped (its loop gone) or the process ends (`weakref.finalize`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import urllib.request
import weakref
from typing import Any

import httpx

from tasks.core.settings import get_settings

log = logging.getLogger("frugal")

#: No cap on connections of the pool's own: how many calls are in flight to a model is its gate's
#: (FRUGAL_LIMITS `concurrency`, 64 per process and model by default; `tasks.providers.limits`).
#: A 64-connection pool used to cap every model of a provider below what was configured: 200
#: calls at once of 1 s each to a model allowed 512 in flight took 4.37 s (64 at a time).
LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=64)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client of this process (httpx's default: certifi's CA bundle, or
    SSL_CERT_FILE / SSL_CERT_DIR): each client would otherwise load the CA bundle itself, ~25 ms of CPU."""
    return httpx.create_ssl_context()


def _close_without_loop(session: Any) -> None:
    """Close a session's connections with no event loop to await on (aiohttp's `close()` is a coroutine)."""
    connector = getattr(session, "connector", None)
    if connector is not None and not connector.closed:
        connector._close()  # its synchronous part: marks it closed, closes the transports if the loop lives


@functools.cache
def _transport_class() -> type[Any]:
    from httpx_aiohttp import AiohttpTransport

    class Transport(AiohttpTransport):  # type: ignore[misc]
        """httpx-aiohttp's transport, its session made on the first request (inside the event loop)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._proxies = EnvProxies()

        def get_client(self) -> Any:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=LIMITS.max_connections or 0, ssl=tls_context())  # 0: no cap
            session = aiohttp.ClientSession(connector=connector)
            weakref.finalize(self, _close_without_loop, session)  # when the client is dropped, or at exit
            return session

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            # read by the base class before its first await: no other request can change it meanwhile
            self.proxy = self._proxies.for_url(request.url)
            return await super().handle_async_request(request)

    return Transport


_said_ignored: set[str] = set()  # proxies ignored, said once per process


class EnvProxies:
    """The proxy of each URL from HTTP_PROXY / HTTPS_PROXY / NO_PROXY as they were when the client
    was made (httpx's rule), decided once per scheme and host. HTTPS proxies (a TLS connection to
    the proxy itself) are not supported by aiohttp and are left out, as aiohttp leaves them out."""

    def __init__(self) -> None:
        found = {scheme: url for scheme, url in urllib.request.getproxies().items() if scheme in ("http", "https")}
        self._proxies = {scheme: url for scheme, url in found.items() if not url.lower().startswith("https://")}
        for scheme in sorted(found.keys() - self._proxies.keys()):
            if scheme not in _said_ignored:
                _said_ignored.add(scheme)
                log.warning("the %s proxy from the environment is an https:// URL, which aiohttp cannot use: ignored", scheme)
        self._decided: dict[tuple[str, str], httpx.Proxy | None] = {}

    def for_url(self, url: httpx.URL) -> httpx.Proxy | None:
        if not self._proxies:
            return None
        place = (url.scheme, url.host)
        if place not in self._decided:
            proxy = self._proxies.get(url.scheme)
            bypassed = proxy is None or bool(url.host and urllib.request.proxy_bypass(url.host))
            self._decided[place] = None if bypassed else httpx.Proxy(proxy)  # type: ignore[arg-type]
        return self._decided[place]


def load_transport() -> None:
    """Import the configured transport now (a Dask worker warming up before its first model call:
    aiohttp takes ~0.2 s to import)."""
    if get_settings().engine.http_transport == "aiohttp":
        _transport_class()


def make_client(timeout: float, **options: Any) -> httpx.AsyncClient:
    """An httpx client on the configured transport (FRUGAL_HTTP_TRANSPORT); `options` go to httpx."""
    if get_settings().engine.http_transport == "aiohttp":
        return httpx.AsyncClient(timeout=timeout, transport=_transport_class()(verify=tls_context()), **options)
    return httpx.AsyncClient(timeout=timeout, limits=LIMITS, verify=tls_context(), **options)


def underlying(exc: httpx.TransportError) -> BaseException:
    """The aiohttp error beneath an httpx one, if the aiohttp transport raised it; else `exc`."""
    cause = exc.__cause__
    return cause if cause is not None and type(cause).__module__.startswith("aiohttp") else exc


def timed_out(exc: httpx.TransportError) -> bool:
    """Whether a transport error is a timeout (rather than a connection refused or dropped)."""
    cause = underlying(exc)
    if cause is not exc:
        return isinstance(cause, asyncio.TimeoutError | TimeoutError)
    return isinstance(exc, httpx.TimeoutException)
