"""Shared fixtures: real Redis, real Prefect, loopback model peers, and guards.

- Every test runs with a clean environment: no proxies, no provider keys, an
  embedded cache in its own temporary data directory, its own Redis key prefix,
  and batch files confined to its own temporary folder (FRUGAL_FILE_ROOTS).
- An autouse guard refuses any connection to a host that is not loopback, so
  no test can reach a paid model by accident.
- `peer` is one loopback server speaking the Ollama, OpenAI and Anthropic wire
  formats (see tests/peers), reset before each test.
- `prefect` starts Prefect's test harness once per session.
- `s3` is a fresh versioned bucket on a loopback S3 server (tests/peers/s3_server.py).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401  (see below)
import pytest
import redis

from tasks.core.settings import variables
from tasks.providers.limits import forget_limits
from tests.peers.model_peer import ModelPeer
from tests.peers.s3_server import S3Bucket, new_bucket, s3_environment, s3_server
from tests.peers.server import LoopbackServer

REDIS_URL = os.environ.get("FRUGAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
API_KEY = "sk-test-0123456789abcdef"

# hypothesis is imported here, before any test runs: its pytest plugin otherwise imports it in the
# terminal summary, and that late compile failed with CPython 3.11's "AST constructor recursion
# depth mismatch" after some batch tests (seen under pytest only), turning a green run red.

_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy")
#: every variable the settings read (derived from the settings models), and the proxies
_CLEARED = (*_PROXIES, *(name for name in variables() if name != "XDG_DATA_HOME"))

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback_only(address: object) -> None:
    if not isinstance(address, tuple) or not address:
        return  # unix sockets
    host = str(address[0])
    try:
        if ipaddress.ip_address(host.split("%")[0]).is_loopback:
            return
    except ValueError:
        if host == "localhost":
            return
    raise ConnectionRefusedError(f"tests may only connect to loopback, not {host}")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _loopback_only(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _loopback_only(address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Iterator[None]:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FRUGAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FRUGAL_FILE_ROOTS", str(tmp_path))  # batches read and write the test's own folder
    monkeypatch.setenv("FRUGAL_CACHE_PREFIX", f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> Iterator[None]:
    """Each test starts without another test's 429 back-offs and Retry-After pauses (kept per process)."""
    forget_limits()
    yield
    forget_limits()


@pytest.fixture(scope="session")
def _served_peer() -> Iterator[tuple[ModelPeer, LoopbackServer]]:
    peer = ModelPeer(ollama_models=[])
    with peer.serve() as server:
        yield peer, server


@pytest.fixture
def peer(_served_peer: tuple[ModelPeer, LoopbackServer], monkeypatch: pytest.MonkeyPatch) -> ModelPeer:
    """The model peer, reset, with both tiers pointed at it (Ollama small, OpenAI large)."""
    model_peer, server = _served_peer
    model_peer.reset(settings=True)
    model_peer.ollama_models = []
    model_peer.url = server.url  # type: ignore[attr-defined]
    monkeypatch.setenv("FRUGAL_SLM_PROVIDER", "ollama")
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    monkeypatch.setenv("FRUGAL_LLM_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-test")
    monkeypatch.setenv("FRUGAL_LLM_BACKOFF_BASE", "0.01")
    return model_peer


@pytest.fixture
def redis_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """The prompt cache on the real Redis; this test's keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis is not running at {REDIS_URL}: start it (`make redis`) or set FRUGAL_TEST_REDIS_URL")
    monkeypatch.setenv("FRUGAL_CACHE_URL", REDIS_URL)
    prefix = os.environ["FRUGAL_CACHE_PREFIX"]
    yield client
    from flows.ledger.writer import WRITER

    WRITER.flush(timeout=5)  # the test's cost entries are stored before its keys are deleted, not after
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def _s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3(_s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A fresh versioned bucket on a loopback S3 server (moto), s3fs pointed at it by the standard AWS
    variables; FRUGAL_FILE_WRITE_ROOTS is left to the test (the bucket is not a root until it says so)."""
    for name, value in s3_environment(_s3_endpoint).items():
        monkeypatch.setenv(name, value)
    return new_bucket(_s3_endpoint)


@pytest.fixture(scope="session")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Prefect's test harness (a temporary server and database) for orchestrated runs."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture(scope="session")
def served_prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real Prefect server on loopback, the pipelines deployed from prefect.yaml and served by
    `frugal serve`, models on a loopback peer, the prompt cache on the real Redis (see tests/prefect_server.py)."""
    from tests.prefect_server import FAILING_PIPELINE, served_prefect

    folder = tmp_path_factory.mktemp("served-prefect")
    pipelines = folder / "pipelines"
    pipelines.mkdir()
    for path in (Path(__file__).resolve().parent.parent / "deployments").glob("*.yaml"):
        (pipelines / path.name).write_text(path.read_text())
    (pipelines / "fails.yaml").write_text(FAILING_PIPELINE)
    prefix = f"t{uuid.uuid4().hex[:12]}"
    peer = ModelPeer(ollama_models=[], responder=lambda protocol, body: "Paris.")
    with peer.serve() as server:
        env: dict[str, str | None] = {name: None for name in _CLEARED} | {
            "FRUGAL_SLM_PROVIDER": "ollama",
            "OLLAMA_HOST": server.url,
            "FRUGAL_LLM_PROVIDER": "openai",
            "OPENAI_BASE_URL": server.url + "/v1",
            "OPENAI_API_KEY": API_KEY,
            "FRUGAL_LLM_MODEL": "gpt-test",
            "FRUGAL_CACHE_URL": REDIS_URL,
            "FRUGAL_CACHE_PREFIX": prefix,
            "FRUGAL_DATA_DIR": str(folder / "data"),
            "FRUGAL_FILE_ROOTS": str(folder / "data"),  # the served worker's batch files: this session's folder
        }
        with served_prefect(folder, env, pipelines) as served:
            yield served
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()
