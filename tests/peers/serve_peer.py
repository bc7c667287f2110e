"""The model peer in a process of its own, for benchmarks and multi-process tests.

    python -m tests.peers.serve_peer --delay 0.02 [--port 0] [--port-file PATH] [--server starlette|lean]
                                     [--rpm 600] [--tpm 200000]

Serves `ModelPeer` (Ollama /api/*, OpenAI and Anthropic /v1/*) with uvicorn in
the main thread, so it does not share a GIL with the process it answers. It
prints ``listening on http://127.0.0.1:PORT`` once it accepts connections
(and writes the URL to ``--port-file``, if given). Two extra routes:

    GET  /_peer/stats   {"requests": N, "by_path": {...}, "answered": N, "distinct_prompts": M,
                         "admitted": N, "refused": N (by the rate limit, --rpm / --tpm),
                         "duplicates": {"digest 'text'": count, ...}, "by_text": {text: count, ...}}
    POST /_peer/reset   forget every request
    POST /_peer/config  {"delay": seconds, "hold_until": n, "hold_seconds": s}: with hold_until,
                        an answer waits until n requests for the same prompt have arrived (or
                        hold_seconds passed), so callers that can race are sure to overlap

With ``--server lean`` it serves the chat routes only (and these three), on a
bare HTTP server that costs a quarter of the CPU per answer
(`tests.peers.lean_server`): what the batch benchmark uses.

`answered` counts the model calls that reached the responder (one per paid
call); `distinct_prompts` counts their distinct (protocol, messages) bodies, so
``answered - distinct_prompts`` is the number of duplicate paid calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from .model_peer import ModelPeer
from .wire import default_responder, last_user_text


class CountingResponder:
    """The default answer; counts every answered request by its prompt."""

    def __init__(self) -> None:
        self.prompts: Counter[str] = Counter()
        self.labels: dict[str, str] = {}
        self.hold_until = 0
        self.hold_seconds = 0.0
        self._arrived: dict[str, asyncio.Event] = {}
        self._lock = threading.Lock()

    async def __call__(self, protocol: str, body: dict[str, Any]) -> str:
        messages = body.get("messages") or body.get("prompt")
        digest = hashlib.sha256(json.dumps([protocol, messages], sort_keys=True).encode()).hexdigest()[:16]
        with self._lock:
            self.prompts[digest] += 1
            self.labels.setdefault(digest, last_user_text(body)[:60])
            seen = self.prompts[digest]
        if self.hold_until > 1:
            arrived = self._arrived.setdefault(digest, asyncio.Event())
            if seen >= self.hold_until:
                arrived.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), self.hold_seconds)
        return default_responder(protocol, body)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            dupes = {f"{d} {self.labels.get(d, '')!r}": n for d, n in self.prompts.items() if n > 1}
            by_text = {self.labels.get(d, d): n for d, n in self.prompts.items()}
            return {
                "answered": sum(self.prompts.values()),
                "distinct_prompts": len(self.prompts),
                "duplicates": dupes,
                "by_text": by_text,
            }

    def reset(self) -> None:
        with self._lock:
            self.prompts.clear()
            self.labels.clear()
            self._arrived.clear()


def build_app(peer: ModelPeer, responder: CountingResponder) -> Starlette:
    async def stats(request: Request) -> JSONResponse:
        by_path = Counter(r.path for r in list(peer.requests))
        rate = {"admitted": peer.rate.admitted, "refused": peer.rate.refused}
        return JSONResponse({"requests": sum(by_path.values()), "by_path": dict(by_path), **rate, **responder.stats()})

    async def reset(request: Request) -> JSONResponse:
        peer.reset()
        responder.reset()
        return JSONResponse({"reset": True})

    async def config(request: Request) -> JSONResponse:
        body = await request.json()
        if "delay" in body:
            peer.delay = float(body["delay"])
        if "hold_until" in body:
            responder.hold_until = int(body["hold_until"])
            responder.hold_seconds = float(body.get("hold_seconds", 10.0))
        return JSONResponse({"delay": peer.delay, "hold_until": responder.hold_until, "hold_seconds": responder.hold_seconds})

    return Starlette(
        routes=[
            Route("/_peer/stats", stats, methods=["GET"]),
            Route("/_peer/reset", reset, methods=["POST"]),
            Route("/_peer/config", config, methods=["POST"]),
            Mount("/", app=peer.app),
        ]
    )


def spawn(
    folder: Path, delay: float, server: str = "starlette", name: str = "peer", rpm: float | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start this module in a process of its own (its output in FOLDER/NAME.log); (the process, its URL)
    once it accepts connections. The caller terminates it. `rpm`: the rate limit it enforces."""
    port_file, log = folder / f"{name}.url", folder / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.peers.serve_peer",
                "--delay",
                str(delay),
                "--port-file",
                str(port_file),
                "--server",
                server,
                *(["--rpm", str(rpm)] if rpm else []),
            ],
            cwd=Path(__file__).resolve().parents[2],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the model stand-in did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return process, port_file.read_text().strip()


def _announce(url: str, port_file: Path | None) -> None:
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(url)
        tmp.replace(port_file)
    print(f"listening on {url}", flush=True)


def _serve_lean(responder: CountingResponder, delay: float, sock: socket.socket, url: str, port_file: Path | None) -> None:
    from .lean_server import LeanPeer, serve

    async def run() -> None:
        server = await serve(LeanPeer(responder, delay), sock)
        _announce(url, port_file)
        await server.serve_forever()

    try:
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        uvloop.run(run())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--delay", "--latency", type=float, default=0.02, help="seconds before every response")
    parser.add_argument("--rpm", type=float, default=None, help="requests per minute it lets through (429 beyond)")
    parser.add_argument("--tpm", type=float, default=None, help="tokens per minute it lets through (429 beyond)")
    parser.add_argument("--port-file", type=Path, default=None, help="write the URL here once serving")
    parser.add_argument(
        "--server",
        choices=["starlette", "lean"],
        default="starlette",
        help="lean: the chat routes only, on a bare HTTP server (tests/peers/lean_server.py), ~4x less CPU per answer",
    )
    args = parser.parse_args(argv)

    responder = CountingResponder()
    peer = ModelPeer(responder, ollama_models=[], delay=args.delay)
    if args.rpm or args.tpm:
        if args.server == "lean":
            parser.error("--rpm and --tpm need --server starlette")
        peer.limit_rate(args.rpm, args.tpm)
    app = build_app(peer, responder)

    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets whose proto says TCP; with
    # proto 0, a response's header and body writes meet Nagle + delayed ACK: 40 ms per request.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(1024)
    url = f"http://{args.host}:{sock.getsockname()[1]}"
    if args.server == "lean":
        _serve_lean(responder, args.delay, sock, url, args.port_file)
        return
    # uvloop and httptools when installed (dev extras): the stand-in must not be the bottleneck
    config = uvicorn.Config(
        app,
        loop="auto",
        http="auto",
        ws="none",
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        backlog=1024,
    )
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.01)
        if server.started:
            _announce(url, args.port_file)

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
