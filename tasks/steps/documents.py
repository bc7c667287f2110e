"""`list_documents` and `read_document`: the input side of batch pipelines.

`list_documents` does not read the documents: it checks the source and returns
a small descriptor that `for_each:` streams from (`tasks.steps.sources`): the `.txt`
/ `.md` files of a directory, in sorted order, or the lines of a JSONL file
with `id` and `text`. `read_document` reads one, and refuses what cannot be
summarised (unreadable, empty, not UTF-8, too large) with the reason, which
the batch records as that item's error.

Both read only inside FRUGAL_FILE_ROOTS, links followed first, and only regular
files (`tasks.core.files`): a run started over REST or from the Prefect UI with
`source=/proc/self/environ`, or a link in the source folder that leads out of
it, is refused before anything reaches a model. A destination may be a folder, a `file://` URL or
an fsspec URL under a URL root (`tasks.core.url_files`): it is checked here too, before any cost.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.canonical import sha256_of
from tasks.core.errors import InputError
from tasks.core.files import confine, confined, open_regular, read_regular
from tasks.core.settings import get_settings
from tasks.core.url_files import confine_output
from tasks.steps.sources import iter_document_files


class ListRequest(BaseModel):
    """Arguments of `list_documents`."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="a directory of .txt/.md files, or a .jsonl file with id and text per line")
    destination: str | None = Field(
        None, description="where the summaries will go: checked first, so a batch that could not write them pays nothing"
    )


class ReadRequest(BaseModel):
    """Arguments of `read_document`."""

    model_config = ConfigDict(extra="forbid")

    id: str
    source: str = Field(description="the file (or file:line for JSONL)")
    text: str | None = Field(None, description="the text, when the source already carried it (JSONL)")
    error: str | None = Field(None, description="why the source could not give this item")
    max_bytes: int | None = Field(None, ge=1, description="default FRUGAL_BATCH_MAX_DOCUMENT_BYTES")
    destination: str | None = Field(
        None, description="where the summary will go: checked first, so a document that could not be written pays nothing"
    )


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    source: str
    text: str
    words: int
    sha256: str


def describe_source(source: str, destination: str | None = None) -> dict[str, Any]:
    path = confine(source, write=False, what="source")
    if destination is not None:
        target = confine_output(destination, what="destination")
        if isinstance(target, Path) and (target == path or target.is_relative_to(path)):
            raise InputError(
                f"destination {destination} is inside the source {source}: the next run would read its summaries "
                "as documents; choose a folder outside it"
            )
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"source {source} does not exist: give a directory of .txt/.md files or a .jsonl file") from None
    except OSError as exc:
        raise InputError(f"source {source} cannot be read: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        count = sum(1 for _ in iter_document_files(path))
        return {"kind": "documents", "format": "dir", "path": str(path), "count": count}
    if stat.S_ISREG(mode) and path.suffix.lower() == ".jsonl":
        with open_regular(path, f"source {source}") as lines:
            count = sum(1 for line in lines if line.strip())
        return {"kind": "documents", "format": "jsonl", "path": str(path), "count": count}
    raise InputError(f"source {source} is neither a directory nor a .jsonl file")


def read(request: ReadRequest) -> Document:
    if request.error:
        raise InputError(request.error)
    if request.destination is not None:
        confine_output(request.destination, what="destination")
    limit = request.max_bytes or get_settings().batch.max_document_bytes
    text = request.text
    if text is None:
        path = confined(request.source, write=False, what="document")
        size, raw = read_regular(path, f"document {request.source}", limit)  # at most limit + 1, even if it grew
        if size > limit or len(raw) > limit:
            raise InputError(
                f"document is too large ({max(size, len(raw))} bytes > {limit}); raise FRUGAL_BATCH_MAX_DOCUMENT_BYTES"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"document is not UTF-8 text (byte {exc.start})") from exc
    elif len(text.encode("utf-8")) > limit:
        raise InputError(f"document is too large (> {limit} bytes); raise FRUGAL_BATCH_MAX_DOCUMENT_BYTES")
    text = text.replace("\r\n", "\n").strip()
    if not text:
        raise InputError("document is empty")
    return Document(id=request.id, source=request.source, text=text, words=len(text.split()), sha256=sha256_of(text))


async def list_documents(request: ListRequest) -> dict[str, Any]:
    """Check a source and describe it for for_each (no document is read here)."""
    return describe_source(request.source, request.destination)


async def read_document(request: ReadRequest) -> Document:
    """Read one document, or fail with the reason it cannot be summarised."""
    return read(request)
