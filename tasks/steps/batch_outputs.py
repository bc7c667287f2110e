"""`write_summary`, `write_index` and `check_batch`: the output side of batch pipelines.

Files are written only inside FRUGAL_FILE_WRITE_ROOTS (default FRUGAL_FILE_ROOTS), links
followed first (`tasks.core.files.confine`), atomically, on a worker thread (`asyncio.to_thread`):
a slow disk does not hold up the event loop, and the documents in flight keep talking to the model.
A destination may also be an fsspec URL (`s3://bucket/out`) under a URL root of the same setting
(`tasks.core.url_files`): each summary and the index are then whole objects, and the paths the
index and the results name are URLs (without credentials). Local paths and `file://` URLs keep the
local code.

A summary that already says the same (a rerun) is left alone, and that check runs on the event
loop while it stays fast: on a local disk it takes ~20 us, where a hop to a worker thread costs
~220 us of CPU (measured with 64 in flight), a third of an all-cached rerun's CPU per document.
Once SLOW_CHECKS checks in a row take longer than SLOW_CHECK_SECONDS each (a network disk; one
slow check is more likely the process being descheduled on a busy machine), the checks of the
next SLOW_DISK_BACKOFF_SECONDS go to a worker thread too. (A summary at a URL is compared and
written on a worker thread: each is a request to the store.)
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.errors import BatchFailed, InputError
from tasks.core.files import confine_folder, confined, holds, write_atomic
from tasks.core.url_files import confine_url, is_remote, write_url_if_changed, write_url_lines
from tasks.core.urls import ParsedUrl, file_url_path, is_url
from tasks.steps.sources import iter_items, summary_file_name

#: an ok item's line; `accepted`, `reason`, `escalated_from` are the answer check's verdict (docs/quality.md)
INDEX_FIELDS = (
    "id",
    "source",
    "summary_path",
    "route",
    "model",
    "cache",
    "tokens",
    "status",
    "accepted",
    "reason",
    "escalated_from",
)


class SummaryRequest(BaseModel):
    """Arguments of `write_summary`."""

    model_config = ConfigDict(extra="forbid")

    destination: str
    id: str = Field(description="the document id; becomes ID.md under destination")
    text: str = Field(description="the summary")
    source: str | None = None


class IndexRequest(BaseModel):
    """Arguments of `write_index`."""

    model_config = ConfigDict(extra="forbid")

    batch: dict[str, Any] = Field(description="the output of a for_each node")
    destination: str
    filename: str = Field("index.jsonl", description="a file name (no folder) under destination")


class CheckRequest(BaseModel):
    """Arguments of `check_batch`."""

    model_config = ConfigDict(extra="forbid")

    batch: dict[str, Any]
    max_failed_share: float = Field(0.1, ge=0.0, le=1.0, description="fail the run above this share of failed items")
    index: str | None = Field(None, description="the index path, named in the failure message")


def summary_path(destination: str, doc_id: str) -> tuple[str, str | ParsedUrl]:
    """DESTINATION/ID.md as given (for the index) and resolved inside the write roots (to write to)."""
    return _output_path(destination, summary_file_name(doc_id), f"summary of {doc_id!r}")


def index_path(destination: str, filename: str) -> tuple[str, str | ParsedUrl]:
    if PurePosixPath(filename).name != filename or filename in ("", ".", "..") or "\\" in filename:
        raise InputError(f"index file name {filename!r} must be a plain file name, without a folder")
    return _output_path(destination, filename, "index")


def _output_path(destination: str, name: str, what: str) -> tuple[str, str | ParsedUrl]:
    """`name` under `destination`: (what to show, where to write), both checked against the write roots."""
    if is_remote(destination):
        root = confine_url(destination, what="destination")
        try:
            target = root.child(name)
        except ValueError as exc:
            raise InputError(f"{what} {name!r} under {root.shown}: {exc}") from None
        return target.shown, target
    confine_folder(destination, write=True, what="destination")  # a file:// URL is its local path
    if is_url(destination):  # file://: shown as the URL it was given
        local = _under(file_url_path(destination), name)
        shown = destination.rstrip("/") + "/" + name
    else:
        local = shown = _under(os.path.expanduser(destination), name)
    return shown, confined(local, write=True, what=what)  # a linked sub-folder may lead out


def _under(folder: str, name: str) -> str:
    """`str(Path(folder) / name)` for a `name` that is a plain relative path (no `.`, `..` or
    empty part: `summary_file_name`, a checked index name), the folder's form parsed once."""
    base = _normal_folder(folder)
    return name if base == "." else base.rstrip("/") + "/" + name


@functools.lru_cache(maxsize=64)
def _normal_folder(folder: str) -> str:
    return str(Path(folder))


def render_summary(doc_id: str, text: str, source: str | None) -> list[str]:
    lines = [f"# {doc_id}\n", "\n", text.strip() + "\n"]
    if source:
        lines += ["\n", f"<!-- source: {source} -->\n"]
    return lines


def index_line(record: dict[str, Any]) -> dict[str, Any]:
    if record.get("status") == "ok" and isinstance(record.get("output"), dict):
        out = record["output"]
        return {key: out.get(key) for key in INDEX_FIELDS}
    return {
        "id": record.get("id"),
        "source": record.get("source"),
        "summary_path": None,
        "route": None,
        "model": None,
        "cache": None,
        "tokens": None,
        "status": record.get("status", "error"),
        "accepted": None,
        "reason": record.get("error"),
        "escalated_from": None,
    }


#: SLOW_CHECKS checks in a row on the event loop slower than SLOW_CHECK_SECONDS each send the
#: next ones to a worker thread for SLOW_DISK_BACKOFF_SECONDS
SLOW_CHECK_SECONDS = 0.001
SLOW_CHECKS = 3
SLOW_DISK_BACKOFF_SECONDS = 60.0
_slow_in_a_row = 0
_threads_until = 0.0


async def _unchanged(path: str, data: bytes) -> bool:
    """`holds(path, data)`, on the event loop unless recent checks were slow (see the module's docstring)."""
    global _slow_in_a_row, _threads_until
    started = time.monotonic()
    if started < _threads_until:
        return await asyncio.to_thread(holds, path, data)
    same = holds(path, data)
    _slow_in_a_row = _slow_in_a_row + 1 if time.monotonic() - started > SLOW_CHECK_SECONDS else 0
    if _slow_in_a_row >= SLOW_CHECKS:
        _slow_in_a_row, _threads_until = 0, started + SLOW_DISK_BACKOFF_SECONDS
    return same


async def write_summary(request: SummaryRequest) -> dict[str, str]:
    """Write DESTINATION/ID.md atomically; a file that already says the same is left as it is."""
    shown, target = summary_path(request.destination, request.id)
    text = "".join(render_summary(request.id, request.text, request.source))
    if isinstance(target, ParsedUrl):
        await asyncio.to_thread(write_url_if_changed, target, text.encode("utf-8"), what="summary")
        return {"path": shown}
    try:
        if not await _unchanged(target, text.encode("utf-8")):
            await asyncio.to_thread(write_atomic, Path(target), (text,))
    except OSError as exc:
        raise InputError(f"summary {shown} cannot be written: {exc.strerror or exc}") from exc
    return {"path": shown}


async def write_index(request: IndexRequest) -> dict[str, Any]:
    """One JSONL line per item, in input order, written atomically."""
    shown, target = index_path(request.destination, request.filename)
    counts = {"ok": 0, "error": 0, "skipped": 0}

    def lines() -> Any:
        for record in iter_items("write_index", request.batch):
            row = index_line(record)
            counts[row["status"] if row["status"] in counts else "error"] += 1
            yield json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n"

    if isinstance(target, ParsedUrl):  # one whole object, left alone when it already says the same
        await asyncio.to_thread(write_url_lines, target, lines(), what="index")
        return {"path": shown, **counts}
    try:
        await asyncio.to_thread(write_atomic, Path(target), lines())
    except OSError as exc:
        raise InputError(f"index {shown} cannot be written: {exc.strerror or exc}") from exc
    return {"path": shown, **counts}


async def check_batch(request: CheckRequest) -> dict[str, Any]:
    """Fail the run when more than `max_failed_share` of the items failed, naming them."""
    total = int(request.batch.get("total") or 0)
    failed = int(request.batch.get("failed") or 0)
    share = failed / total if total else 0.0
    if share > request.max_failed_share:
        listed = "; ".join(f"{f.get('id')}: {f.get('error')}" for f in request.batch.get("failures", [])[:10])
        more = f" (and {failed - 10} more)" if failed > 10 else ""
        where = f"; every item's status is in {request.index}" if request.index else ""
        raise BatchFailed(
            f"{failed} of {total} items failed ({share:.0%} > {request.max_failed_share:.0%}): {listed}{more}{where}",
        )
    return {"ok": True, "failed": failed, "total": total, "failed_share": round(share, 6)}
