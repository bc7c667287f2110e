"""Several Ollama servers behind one small tier (``OLLAMA_HOSTS=http://gpu1:11434,http://gpu2:11434``).

Each call goes to the healthy host with the fewest calls in flight from this process (ties taken in
turn). A host that cannot be connected to is taken out at once and the call goes to the next one;
it is probed again (GET /api/version) after a back-off of 1 s, doubled on each failed probe up to
30 s, and serves again as soon as a probe answers. When every host is out, the one due back first
is tried all the same. The hosts' state is kept per process and shared by every provider object and
event loop of it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import httpx

from tasks.core.redact import public_url, url_secrets

log = logging.getLogger("frugal")

#: seconds before a failed host is probed again: FIRST_BACKOFF, doubled per failed probe, at most MAX_BACKOFF
FIRST_BACKOFF, MAX_BACKOFF = 1.0, 30.0
#: seconds a probe waits for /api/version
PROBE_TIMEOUT = 1.0


def split_hosts(endpoint: str) -> list[str]:
    """``a,b`` (OLLAMA_HOSTS, or a node's ``host:``) as URLs: ``host:port`` gets ``http://``."""
    hosts = [h.strip() for h in endpoint.split(",") if h.strip()]
    return [h if "://" in h else f"http://{h}" for h in hosts]


@dataclass
class Host:
    """One Ollama server as this process sees it."""

    url: str
    public: str = ""
    secrets: tuple[str, ...] = ()
    auth: httpx.BasicAuth | None = None
    in_flight: int = 0
    #: time.monotonic() before which the host is out; 0: serving
    out_until: float = 0.0
    failures: int = 0
    probing: bool = False

    def __post_init__(self) -> None:
        self.public = public_url(self.url).rstrip("/")
        self.secrets = url_secrets(self.url)
        parts = httpx.URL(self.url)
        self.auth = httpx.BasicAuth(parts.username, parts.password) if parts.username or parts.password else None

    @property
    def serving(self) -> bool:
        return self.failures == 0


_hosts: dict[str, Host] = {}
_lock = threading.Lock()
_probes: set[asyncio.Task[None]] = set()


class HostPool:
    """The hosts of one OLLAMA_HOSTS list; their state is the process's (`Host`, one per URL)."""

    def __init__(self, endpoint: str) -> None:
        urls = split_hosts(endpoint)
        if not urls:
            raise ValueError("no Ollama host given")
        with _lock:
            self.hosts = [_hosts.setdefault(url, Host(url)) for url in urls]
        self._next = 0

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for h in self.hosts for s in h.secrets)

    @property
    def public(self) -> str:
        return ",".join(h.public for h in self.hosts)

    def pick(self, tried: set[str]) -> Host | None:
        """The host for the next call (one in flight more), or None when every host was tried."""
        now = time.monotonic()
        with _lock:
            for host in self.hosts:
                if not host.serving and not host.probing and now >= host.out_until and len(self.hosts) > 1:
                    self._probe_later(host)
            candidates = [h for h in self.hosts if h.url not in tried]
            if not candidates:
                return None
            serving = [h for h in candidates if h.serving]
            if serving:
                start = self._next % len(self.hosts)
                self._next += 1
                # fewest in flight; among equals, the next in turn after the last pick
                order = {h.url: (i - start) % len(self.hosts) for i, h in enumerate(self.hosts)}
                host = min(serving, key=lambda h: (h.in_flight, order[h.url]))
            else:  # every host is out: try the one due back first
                host = min(candidates, key=lambda h: h.out_until)
            host.in_flight += 1
            return host

    def done(self, host: Host) -> None:
        with _lock:
            host.in_flight -= 1

    def answered(self, host: Host) -> None:
        """A call to `host` got an answer: it serves (again)."""
        if not host.serving and len(self.hosts) > 1:
            with _lock:
                host.failures, host.out_until = 0, 0.0
            log.warning("ollama host %s answers again: back in service", host.public)

    def failed(self, host: Host, reason: str) -> None:
        """`host` could not be connected to: out of service until a probe answers (one host alone: always tried)."""
        if len(self.hosts) == 1:
            return
        with _lock:
            first = host.serving
            host.failures += 1
            backoff = min(FIRST_BACKOFF * 2 ** (host.failures - 1), MAX_BACKOFF)
            host.out_until = time.monotonic() + backoff
            others = sum(1 for h in self.hosts if h.serving)
        if first:
            log.warning(
                "ollama host %s failed (%s): taken out, probed again in %gs; %d other host(s) serving",
                host.public,
                reason,
                backoff,
                others,
            )

    def _probe_later(self, host: Host) -> None:
        """Start a probe of `host` on the running loop (called under `_lock`)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        host.probing = True
        task = loop.create_task(self._probe(host))
        _probes.add(task)
        task.add_done_callback(_probes.discard)

    async def _probe(self, host: Host) -> None:
        ok = False
        try:
            async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, trust_env=False, auth=host.auth) as client:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    response = await client.get(host.public + "/api/version")
            ok = response.status_code == 200
        except (httpx.HTTPError, TimeoutError):
            ok = False
        finally:
            with _lock:
                host.probing = False
        if ok:
            self.answered(host)
        else:
            self.failed(host, "health check")


def forget_hosts() -> None:
    """Forget every host's state (tests that restart a server)."""
    with _lock:
        _hosts.clear()
