"""Where `for_each:` items come from, streamed: memory does not grow with their number.

A `for_each:` expression evaluates to one of:

- a list: its elements are the items (small fan-outs, e.g. the parts of a document);
- a documents descriptor from `list_documents` ``{"kind": "documents", ...}``:
  the files of a directory (sorted) or the lines of a JSONL file, read lazily;
- a batch descriptor from an earlier `for_each:` node ``{"kind": "batch", ...}``:
  that node's per-item results, read back from its spool files in input order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.core.errors import StepError

DOCUMENT_SUFFIXES = (".txt", ".md")


def iter_document_files(root: Path) -> Iterator[Path]:
    """Files under `root` with a document suffix, in a stable order: the order of
    ``sorted(root.rglob("*"))`` (symlinked folders not followed), walked with `os.scandir`,
    which costs a third of it (a listing of 10,000 files: ~30 ms instead of ~90)."""

    def walk(folder: str) -> Iterator[Path]:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except PermissionError:
            return
        for entry in entries:
            if not entry.name.startswith(".") and os.path.splitext(entry.name)[1].lower() in DOCUMENT_SUFFIXES:
                yield Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                yield from walk(entry.path)

    yield from walk(str(root))


def _iter_documents(source: dict[str, Any]) -> Iterator[dict[str, Any]]:
    path = Path(source["path"])
    if source.get("format") == "jsonl":
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                where = f"{path}:{number}"
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                    if not isinstance(record, dict) or "text" not in record:
                        raise ValueError("a line needs an object with 'id' and 'text'")
                    yield {"id": str(record.get("id", f"line-{number}")), "source": where, "text": record["text"], "error": None}
                except (ValueError, UnicodeDecodeError) as exc:
                    yield {"id": f"line-{number}", "source": where, "text": None, "error": f"unreadable line: {exc}"}
        return
    for file in iter_document_files(path):
        rel = file.relative_to(path)
        yield {"id": str(rel.with_suffix("")), "source": str(file), "text": None, "error": None}


def _iter_spool(source: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for part in sorted(Path(source["spool"]).glob("chunk-*.jsonl")):
        with part.open(encoding="utf-8") as lines:
            for line in lines:
                yield json.loads(line)


def iter_items(node: str, source: Any) -> Iterator[Any]:
    if source is None:  # the source node was skipped: nothing to do
        return iter(())
    if isinstance(source, list):
        return iter(source)
    if isinstance(source, dict) and source.get("kind") == "documents":
        return _iter_documents(source)
    if isinstance(source, dict) and source.get("kind") == "batch":
        return _iter_spool(source)
    raise StepError(
        node,
        f"for_each: needs a list, the output of list_documents or of another for_each node, got {type(source).__name__}",
    )


def count_items(source: Any) -> int | None:
    if isinstance(source, list):
        return len(source)
    if isinstance(source, dict) and isinstance(source.get("count"), int):
        return int(source["count"])
    return None
