"""A real Prefect server on loopback, the pipelines deployed from prefect.yaml and served.

Used by the end-to-end tests (REST calls, the UI in a browser). Everything runs as it would
for a user, in subprocesses: `prefect server start` (SQLite in a temporary PREFECT_HOME),
`prefect work-pool create` + `prefect deploy --all` from the project's prefect.yaml, then
`frugal serve`, which takes the same deployments over (served, no worker). Their logs are
kept in the temporary folder and shown when something does not come up.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: a pipeline that fails at run time (a misspelt key on real data), to see how a failed run reads
FAILING_PIPELINE = """
name: fails
version: "1"
description: Fails on purpose when `data` has no `missing` key.
inputs:
  data: {type: object, default: {}, description: Anything without a `missing` key.}
nodes:
  key:
    uses: hash_prompt
    with: {prompt: "{{ inputs.data.missing }}"}
output: "{{ key }}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServedPrefect:
    url: str  # http://127.0.0.1:PORT
    env: dict[str, str]
    folder: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return self.url + "/api"

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.folder.glob("*.log")))

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("wb")
        process = subprocess.Popen(
            args, cwd=PROJECT, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(process)
        return process

    def run(self, name: str, *args: str, timeout: float = 120) -> None:
        log = self.folder / f"{name}.log"
        done = subprocess.run(args, cwd=PROJECT, env=self.env, capture_output=True, timeout=timeout)
        log.write_bytes(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{self.logs()}")

    def wait_until(self, check: object, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():  # type: ignore[operator]
                    return
            except httpx.HTTPError:
                pass
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited while waiting for {what}:\n{self.logs()}")
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.logs()}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def served_prefect(folder: Path, env: dict[str, str | None], pipelines_dir: Path | None = None) -> Iterator[ServedPrefect]:
    """Server, deployments from prefect.yaml, `frugal serve`; stopped afterwards. `None` in `env` unsets."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base.update(
        PREFECT_HOME=str(folder / "prefect-home"),
        PREFECT_API_URL=url + "/api",
        PREFECT_UI_API_URL=url + "/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    merged = {**base, **env}
    served = ServedPrefect(url, {k: v for k, v in merged.items() if v is not None}, folder)
    try:
        served.start("server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port))
        served.wait_until(lambda: httpx.get(url + "/api/health", timeout=2).status_code == 200, "the Prefect server", 120)
        served.run("work-pool", str(BIN / "prefect"), "work-pool", "create", "frugal-process", "--type", "process")
        served.run("deploy", str(BIN / "prefect"), "--no-prompt", "deploy", "--all", timeout=180)
        serve_env = {"FRUGAL_PIPELINES_DIR": str(pipelines_dir)} if pipelines_dir else {}
        served.start("serve", str(BIN / "frugal"), "serve", env=serve_env)

        def serving() -> bool:  # a deployment is READY once a runner polls for its runs
            found = httpx.get(url + "/api/deployments/name/fails/fails", timeout=2)
            return found.status_code == 200 and found.json().get("status") == "READY"

        served.wait_until(serving, "frugal serve to take the deployments over")
        yield served
    finally:
        served.stop()


def chromium() -> str | None:
    """Debian's chromium, if installed (`apt-get install chromium`)."""
    return shutil.which("chromium") or (str(Path("/usr/bin/chromium")) if Path("/usr/bin/chromium").exists() else None)
