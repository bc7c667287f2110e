"""Batch outputs at fsspec URLs (`s3://bucket/prefix`, `gs://`, `memory://` ...): confined to the URL
roots the operator declares, written whole, and left alone when they already say the same.

**Where.** `confine_output` takes a destination as a pipeline input gives it: a local path or a
`file://` URL goes to `tasks.core.files.confine_folder` (the local code, no fsspec), any other URL must lie
under a URL root of FRUGAL_FILE_WRITE_ROOTS (default FRUGAL_FILE_ROOTS) of the same protocol, host
(bucket) and, if the root names one, user, with the root's path as a prefix by whole segments
(`s3://b/out` allows `s3://b/out/x`, not `s3://b/outside`). The URL is normalised first
(`tasks.core.urls`: no `..`, no empty segments) and what is written is the normalised URL, so the
check is on the object that is written. Protocols that are local files under another name
(`local://`, the caching and `dir` wrappers, archives) are refused: local files go through the
local checks. The check is text only (no request), so a batch is refused before anything is paid.

**Credentials** come from the file system's standard environment (for S3: `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL` for an S3-compatible endpoint, read by botocore). A
URL's own `user:password@` is passed to fsspec but never shown: messages and results carry
`ParsedUrl.shown`, and a file system's error text is redacted of the standard secret variables.

**Writing.** An object is written whole (`pipe_file`: one PUT for a summary; an object store makes
it visible all at once, so a reader never sees half of one), on the caller's thread (the steps run
this through `asyncio.to_thread`). Before writing, the current object is compared:

- a summary (small) is read back with one ranged GET of at most `len(data) + 1` bytes
  (`cat_file`) and compared. Measured against moto on loopback (`tests/benchmarks/bench_url_writes.py`,
  figures in docs/performance.md): the GET of an existing object costs less than the PUT it saves,
  and about what fsspec's `info` (a HEAD) costs; on a missing object `info` sends a HEAD and then a
  LIST (s3fs checks for a folder), the GET one request. So a rerun, where most summaries say the
  same, sends one GET per summary and no PUT (no new object version, no change notification); a
  new summary pays the GET on top of its PUT;
- the index (possibly large) is spooled to a temporary file with its size and MD5, then compared
  by `info` (one HEAD): another size means changed; an S3 ETag equal to the MD5 (a single PUT's
  ETag is its MD5) means the same; otherwise an index up to 8 MiB is read back and compared, and a
  larger one is rewritten. An index over 32 MiB is streamed (a multipart upload on S3, discarded
  if it fails, so no half index is ever committed).

A comparison that fails (no read permission on a write-only key, for instance) counts as
"changed": the write then says what is wrong, if anything is.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tasks.core.errors import InputError
from tasks.core.files import confine_folder
from tasks.core.redact import redact, url_secrets
from tasks.core.settings import get_settings
from tasks.core.urls import ParsedUrl, is_file_url, is_url, parse_url, shown_url

#: protocols that reach local files (or wrap another file system) under another name: never a URL destination
_LOCAL_LIKE = frozenset({"local", "file", "dir", "reference", "zip", "tar", "libarchive"})
#: protocols whose URL's host is a bucket: `user:password@` there is a mistake, never credentials fsspec reads
_BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs"})
#: an index up to this size is read back to compare when its ETag says nothing; larger ones are rewritten
_COMPARE_BYTES = 8 << 20
#: an index up to this size is one PUT; larger ones are streamed (multipart on S3, still one object)
_SINGLE_PUT_BYTES = 32 << 20
#: environment variables whose values never appear in an error text
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN")


def is_remote(destination: str) -> bool:
    """True for a URL that is not `file://`: written through fsspec, not the local code."""
    return is_url(destination) and not is_file_url(destination)


def confine_output(destination: str, *, what: str) -> Path | ParsedUrl:
    """A destination resolved inside the write roots: a local Path (as `confine`), or a normalised URL."""
    if is_remote(destination):
        return confine_url(destination, what=what)
    return confine_folder(destination, write=True, what=what)


def confine_url(url: str, *, what: str) -> ParsedUrl:
    """`url` normalised, if it lies under a URL root of FRUGAL_FILE_WRITE_ROOTS; InputError otherwise."""
    try:
        parsed = parse_url(url)
    except ValueError as exc:
        raise InputError(f"{what} {shown_url(url)} is not a usable destination URL: {exc}") from None
    _check_protocol(parsed.protocol, what, parsed.shown)
    if parsed.url != parsed.shown and parsed.protocol in _BUCKET_PROTOCOLS:
        raise InputError(
            f"{what} {parsed.shown}: a {parsed.protocol}:// URL names a bucket, not credentials; give them in the "
            "store's standard variables (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, for S3)"
        )
    roots = _url_roots(get_settings().files.write_urls())
    if not any(parsed.within(root) and _fs_within(parsed, root) for root in roots):
        allowed = ", ".join(root.shown for root in roots) or "none"
        raise InputError(
            f"{what} {parsed.shown} is outside the URLs batch files may be written to ({allowed}): use a URL under "
            "one of them, or add it to FRUGAL_FILE_WRITE_ROOTS (separated by ',': data/out,s3://bucket/out)"
        )
    return parsed


@functools.lru_cache(maxsize=16)
def _url_roots(urls: tuple[str, ...]) -> tuple[ParsedUrl, ...]:
    roots = []
    for url in urls:
        try:
            roots.append(parse_url(url))
        except ValueError as exc:
            raise InputError(f"the root {shown_url(url)} in FRUGAL_FILE_WRITE_ROOTS is not usable: {exc}") from None
    return tuple(roots)


@functools.lru_cache(maxsize=32)
def _filesystem_class(protocol: str) -> type:
    import fsspec
    from fsspec.implementations.cached import CachingFileSystem
    from fsspec.implementations.local import LocalFileSystem

    cls: type = fsspec.get_filesystem_class(protocol)
    if protocol in _LOCAL_LIKE or issubclass(cls, LocalFileSystem | CachingFileSystem):
        raise LookupError(protocol)
    return cls


def _fs_within(url: ParsedUrl, root: ParsedUrl) -> bool:
    """The same containment, as the file system itself reads the two URLs (`_strip_protocol`, no I/O): what
    fsspec writes to is below what the root names, even where it reads the host, or `user@`, as a folder."""
    cls: Any = _filesystem_class(url.protocol)
    mine, theirs = (tuple(p for p in str(cls._strip_protocol(u)).split("/") if p) for u in (url.url, root.url))
    return mine[: len(theirs)] == theirs


def _check_protocol(protocol: str, what: str, shown: str) -> None:
    try:
        _filesystem_class(protocol)
    except LookupError:
        raise InputError(
            f"{what} {shown}: {protocol}:// reaches local files under another name; give a folder or a file:// URL"
        ) from None
    except ImportError as exc:  # fsspec knows it, its package is missing: "Install s3fs to access S3"
        extra = " (pip install 'frugal-flows[s3]')" if protocol in ("s3", "s3a") else ""
        raise InputError(f"{what} {shown} cannot be written here: {exc}{extra}") from None
    except ValueError:
        raise InputError(f"{what} {shown}: no file system is known for {protocol}:// (fsspec's protocols)") from None


def _open(target: ParsedUrl) -> tuple[Any, str]:
    """The file system and the object's path in it: the destination URL opened, the object's name appended."""
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(target.base or target.url)  # fsspec keeps one instance per set of options (and thread)
    return fs, "/".join((str(path).rstrip("/"), *target.below))


def _failed(what: str, target: ParsedUrl, exc: BaseException) -> InputError:
    """The InputError for a failed write: the file system's reason with the URL's credentials and the standard
    secret variables taken out (a store may echo a bucket name that carries `user:password@`)."""
    secrets = (*url_secrets(target.url), *(os.environ.get(name) for name in _SECRET_VARIABLES))
    reason = redact(str(exc) or type(exc).__name__, *secrets)
    return InputError(f"{what} {target.shown} cannot be written: {reason}")


def url_holds(fs: Any, path: str, data: bytes) -> bool:
    """True if the object at `path` is exactly `data` (one ranged GET); False if missing or unreadable."""
    try:
        current = fs.cat_file(path, start=0, end=len(data) + 1)
    except Exception:  # missing, no read permission, a folder: not the same
        return False
    return bool(current == data)


def write_url_if_changed(target: ParsedUrl, data: bytes, *, what: str) -> bool:
    """Write `data` as the whole object at `target` unless it already is exactly that; True if written."""
    try:
        fs, path = _open(target)
        if url_holds(fs, path, data):
            return False
        fs.pipe_file(path, data)
    except Exception as exc:  # not chained: the cause's text may carry what _failed took out
        raise _failed(what, target, exc) from None
    return True


def write_url_lines(target: ParsedUrl, lines: Iterable[str], *, what: str, single_put_bytes: int = _SINGLE_PUT_BYTES) -> bool:
    """Write `lines` as the whole object at `target` unless it already says the same; True if written.

    The lines go to a temporary file first (memory stays bounded, whatever the index's size), with
    their size and MD5, which `info` and the ETag can confirm without reading the object back.
    Up to `single_put_bytes` they are sent in one request; more are streamed into the object.
    """
    with tempfile.SpooledTemporaryFile(max_size=single_put_bytes) as spool:
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        for line in lines:
            chunk = line.encode("utf-8")
            digest.update(chunk)
            spool.write(chunk)
            size += len(chunk)
        try:
            fs, path = _open(target)
            if _same_object(fs, path, size, digest.hexdigest(), spool):
                return False
            spool.seek(0)
            if size <= single_put_bytes:
                fs.pipe_file(path, spool.read())
            else:
                _stream(fs, path, spool)
        except Exception as exc:
            raise _failed(what, target, exc) from None
    return True


def _stream(fs: Any, path: str, spool: Any) -> None:
    """Upload a large spool as one object; on failure the upload is discarded (a multipart upload aborted),
    never closed: closing an fsspec file commits what it holds, half an index included."""
    out = fs.open(path, "wb")
    try:
        shutil.copyfileobj(spool, out, 8 << 20)
    except BaseException:
        out.discard()
        raise
    out.close()


def _same_object(fs: Any, path: str, size: int, md5: str, spool: Any) -> bool:
    try:
        info = fs.info(path)
    except Exception:  # missing or unreadable: write
        return False
    if info.get("type", "file") != "file" or info.get("size") != size:
        return False
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if etag == md5:
        return True
    if size > _COMPARE_BYTES:
        return False
    spool.seek(0)
    return url_holds(fs, path, spool.read())
