"""A real llama.cpp HTTP server (xllamacpp) on 127.0.0.1, for tests that want a live peer.

    url, stop = start_llama_http_server(find_bundled_model(), 0)
    try:
        httpx.post(url + "/v1/chat/completions", json={...})   # OpenAI wire, with "usage"
        httpx.post(url + "/v1/messages", json={...})           # Anthropic wire, with "usage"
    finally:
        stop()

``xllamacpp.Server`` *is* llama.cpp's ``llama-server``, run on native threads
inside this process: constructing it loads the model, binds
``params.hostnames`` x ``params.port`` (0 = an ephemeral port; the real address
is ``server.listening_address``) and returns once it serves. Dropping the last
reference runs the C++ destructor, which stops the loop and the listener and
joins its threads, so ``stop()`` is synchronous.

Run this file to check the endpoints: ``.venv/bin/python tests/peers/llama_http.py``.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["start_llama_http_server"]


def start_llama_http_server(
    model_path: Path | str,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    n_threads: int = 1,
    n_ctx: int = 2048,
    model_alias: str = "smollm2-135m",
    api_key: str | None = None,
    verbosity: int = 1,
) -> tuple[str, Callable[[], None]]:
    """Serve ``model_path`` over HTTP; return (base url without /v1, stop callable).

    ``api_key``, if given, is required as ``Authorization: Bearer`` or ``x-api-key``
    (``/health`` stays public). ``model_alias`` is what /v1/models lists and what
    answers report as their ``model``.
    """
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.model_alias = {model_alias}
    params.n_ctx = n_ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = n_threads
    params.cpuparams_batch.n_threads = n_threads
    params.fit_params = False
    params.verbosity = verbosity  # 1: errors only (llama.cpp's default is 3, info)
    params.hostnames = [host]
    params.port = port
    params.n_threads_http = 2
    if api_key:
        params.api_keys = [api_key]

    holder = [xllamacpp.Server(params)]  # raises RuntimeError if the model or the port is unusable
    url = holder[0].listening_address
    lock = threading.Lock()

    def stop() -> None:
        with lock:
            if holder:
                holder.clear()  # last reference: ~Server stops the loop and the listener
                gc.collect()

    return url, stop


def _check() -> None:  # pragma: no cover - a manual probe
    import json
    import sys
    import time

    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tasks.providers.llama_cpp import find_bundled_model

    started = time.perf_counter()
    url, stop = start_llama_http_server(find_bundled_model(), 0)
    print(f"serving {url} (started in {time.perf_counter() - started:.2f}s)")
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            print("GET /health", client.get("/health").json())
            print("GET /v1/models", [m["id"] for m in client.get("/v1/models").json()["data"]])

            r = client.post(
                "/v1/chat/completions",
                json={
                    "model": "smollm2-135m",
                    "max_tokens": 16,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": "Say hello."}],
                },
            )
            body = r.json()
            print(
                "POST /v1/chat/completions",
                r.status_code,
                repr(body["choices"][0]["message"]["content"]),
                "finish:",
                body["choices"][0]["finish_reason"],
                "model:",
                body["model"],
                "usage:",
                body["usage"],
            )

            schema = {
                "type": "object",
                "properties": {"label": {"enum": ["positive", "negative", "neutral"]}},
                "required": ["label"],
                "additionalProperties": False,
            }
            r = client.post(
                "/v1/chat/completions",
                json={
                    "max_tokens": 24,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": "Review: I love it. Sentiment as JSON?"}],
                    "response_format": {"type": "json_schema", "json_schema": {"name": "label", "schema": schema}},
                },
            )
            content = r.json()["choices"][0]["message"]["content"]
            print("POST /v1/chat/completions + response_format", r.status_code, json.loads(content))

            r = client.post(
                "/v1/messages",
                headers={"anthropic-version": "2023-06-01"},
                json={
                    "model": "smollm2-135m",
                    "max_tokens": 16,
                    "system": "Be brief.",
                    "messages": [{"role": "user", "content": "Say hello."}],
                },
            )
            body = r.json()
            print(
                "POST /v1/messages",
                r.status_code,
                repr(body["content"][0]["text"]),
                "stop:",
                body["stop_reason"],
                "usage:",
                body["usage"],
            )

            r = client.post(
                "/v1/messages/count_tokens",
                json={
                    "model": "smollm2-135m",
                    "messages": [{"role": "user", "content": "Say hello."}],
                },
            )
            print("POST /v1/messages/count_tokens", r.status_code, r.json())
    finally:
        stop()
    try:
        httpx.get(url + "/health", timeout=2)
        print("still listening after stop()!")
    except httpx.TransportError:
        print("stopped: the port is closed")


if __name__ == "__main__":  # pragma: no cover
    _check()
