"""Sampling a benchmark's process with py-spy (from outside: it costs the process almost nothing), and
a summary of where the sampled CPU time went: by library, through the project's functions, top frames."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RATE = 100  # py-spy samples per second: enough for a profile, and half the CPU that 200 took from the run on 2 CPUs


@contextlib.contextmanager
def py_spy(output: Path | None, rate: int = RATE) -> Iterator[None]:
    """Sample this process with py-spy into `output` (from outside: it costs the process almost nothing)."""
    exe = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if output is None or exe is None:
        if output is not None:
            print("py-spy is not installed (pip install -e '.[dev]'): no profile", flush=True)
        yield
        return
    process = subprocess.Popen(
        [exe, "record", "--pid", str(os.getpid()), "--rate", str(rate), "--format", "raw", "--nonblocking", "-o", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # attached
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


#: (label, substrings of a frame's file) in order; a sample is charged to the first group its leaf frame matches
GROUPS = (
    ("HTTP client (httpx, httpcore, h11, anyio, ollama)", ("(httpx/", "(httpcore/", "(h11/", "(anyio/", "(ollama/", "(sniffio/")),
    ("asyncio socket writes (send syscalls)", ("_SelectorSocketTransport.write (asyncio/",)),
    ("asyncio event loop, the rest", ("(asyncio/", "(uvloop/", "(selectors.py", "(contextvars")),
    ("Redis client (redis-py)", ("(redis/",)),
    ("pydantic validation / dumps", ("(pydantic/", "(pydantic_core/")),
    (
        "templates (jinja2, flows/templates, fast_eval)",
        ("(jinja2/", "(flows/language/templates.py", "(flows/language/fast_eval.py", "(markupsafe/"),
    ),
    ("json", ("(json/", "(orjson")),
    ("Prefect", ("(prefect/",)),
    (
        "files, paths (pathlib, os, tempfile)",
        ("(pathlib.py", "(os.py", "(tempfile.py", "(genericpath.py", "(posixpath.py", "(shutil.py", "(tasks/core/files.py"),
    ),
    ("cost ledger (background thread)", ("(flows/ledger/",)),
    ("logging", ("(logging/",)),
    ("hashing", ("(hashlib", "(tasks/core/canonical.py", "(tasks/core/request_key.py", "(tasks/steps/hash_prompt.py")),
    ("project code, the rest (flows/, tasks/)", ("(flows/", "(tasks/")),
)
#: functions whose inclusive share is worth seeing
WATCHED = (
    ("run_item", "flows/engine/batch.py"),
    ("execute", "flows/engine/executor.py"),
    ("run_node", "flows/engine/executor.py"),
    ("run_batch", "flows/engine/batch.py"),
    ("build_request", "flows/engine/node_call.py"),
    ("evaluate", "flows/language/templates.py"),
    ("read", "tasks/steps/documents.py"),
    ("hash_prompt", "tasks/steps/hash_prompt.py"),
    ("request_identity", "tasks/core/request_key.py"),
    ("lookup", "tasks/steps/cache.py"),
    ("store", "tasks/steps/cache.py"),
    ("classify", "tasks/steps/classify.py"),
    ("answer_small", "tasks/steps/call_slm.py"),
    ("answer_large", "tasks/steps/call_llm.py"),
    ("complete", "tasks/providers/ollama.py"),
    ("complete", "tasks/providers/openai.py"),
    ("write_summary", "tasks/steps/batch_outputs.py"),
    ("write_atomic", "tasks/core/files.py"),
    ("notify_node", "flows/engine/observers.py"),
    ("notify_run", "flows/engine/observers.py"),
    ("_item_id", "flows/engine/batch.py"),
    ("write", "flows/engine/batch.py"),  # Spool.write: the per-chunk JSONL
    ("write_index", "tasks/steps/batch_outputs.py"),
    ("_iter_documents", "tasks/steps/sources.py"),
    ("jsonable", "flows/engine/node_call.py"),
)


def summarise_profile(raw: Path, top: int = 12) -> str:
    """Where the sampled CPU time went: by library (leaf frame) and through the project's functions."""
    if not raw.exists():
        return "(no profile written)"
    own: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        own[leaf] += n
        for label, needles in GROUPS:
            if any(needle in leaf for needle in needles):
                groups[label] += n
                break
        else:
            groups["other (stdlib, other libraries)"] += n
        seen = set()
        for frame in frames:
            for fn, path in WATCHED:
                if frame.startswith(fn + " (") and path in frame and (fn, path) not in seen:
                    seen.add((fn, path))
                    inclusive[f"{path}:{fn}"] += n
    if not total:
        return "(profile is empty)"
    lines = [f"{total} samples (CPU only; idle waits are not sampled)", "", "by library (where the CPU was when sampled):"]
    lines += [f"  {n / total:6.1%}  {label}" for label, n in groups.most_common()]
    lines += ["", "through the project's functions (inclusive):"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common() if n / total >= 0.005]
    lines += ["", f"top {top} functions by own time:"]
    for frame, n in own.most_common(top):
        short = frame.replace(str(PROJECT) + "/", "").split("site-packages/")[-1]
        lines.append(f"  {n / total:6.1%}  {short[:150]}")
    return "\n".join(lines)
