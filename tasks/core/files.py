"""Files a batch reads and writes: only inside the folders the operator declares, written atomically.

**Roots.** A batch's source and destination are pipeline inputs, and anyone who can start a run
(REST, the Prefect UI, a schedule's parameters) sets them. So every path is resolved first, links
followed, and must land inside a declared root: `FRUGAL_FILE_ROOTS` for reading,
`FRUGAL_FILE_WRITE_ROOTS` (default: the same folders) for writing. `/proc`, `/sys` and `/dev` are
refused even inside a root: their files say nothing about their content in `st_size` and may be
secrets (`/proc/self/environ`). A link inside a root that leads out of it is refused, naming both.

**Regular files only.** `open_regular` opens the resolved path with `O_NOFOLLOW` (a link swapped in
after the check is not followed) and `O_NONBLOCK` (a FIFO cannot hang the open), then checks with
`fstat` that it opened a regular file: no device, FIFO or socket is ever read.

**Atomic writes.** A file is written beside its target and renamed over it: a reader sees the old
file or the new one, never half of one. The rename is atomic against a crash of the process (the
failure a batch meets); it is not fsync'd, so a power cut may lose the newest files, which the next
run rewrites from the prompt cache at no model cost. `holds` lets a writer leave alone a file that
already says the same: creating and renaming a file costs a file system far more than reading a
small one (~0.6-1.4 ms against ~10 us on an ext4 disk, measured), and a nightly re-run mostly
rewrites what is already there.
"""

from __future__ import annotations

import itertools
import os
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tasks.core.errors import InputError
from tasks.core.settings import get_settings
from tasks.core.urls import file_url_path, is_file_url, is_url, shown_url

#: pseudo file systems: never read or written, whatever the roots say
SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))

_made: set[Path] = set()
_serial = itertools.count()
_serial_lock = threading.Lock()


#: seconds a folder's resolved form is reused (see `_real_folder`)
FOLDER_MEMO_SECONDS = 1.0
_folder_memo: dict[str, tuple[float, str]] = {}


def _real_folder(folder: str) -> str:
    """`os.path.realpath(folder)` (an absolute path), reused for FOLDER_MEMO_SECONDS.

    A batch checks every document it reads and every summary it writes: resolving each path
    component by component cost ~2 ms of CPU per document on a 10,000-document rerun (4 checks,
    each resolving the roots and a 6-deep path), most of an all-cached rerun. The roots and the
    folders files sit in are resolved once a second instead; a link re-pointed meanwhile is seen
    within a second. The last component of a path is always checked afresh (`_resolve`).
    """
    now = time.monotonic()
    known = _folder_memo.get(folder)
    if known is not None and now - known[0] < FOLDER_MEMO_SECONDS:
        return known[1]
    real = os.path.realpath(folder)
    if len(_folder_memo) >= 4096:
        _folder_memo.clear()
    _folder_memo[folder] = (now, real)
    return real


def _resolve(given: str) -> str:
    """`os.path.realpath(given)`: its folder through `_real_folder`, its last component looked at now."""
    absolute = given if os.path.isabs(given) else os.path.join(os.getcwd(), given)
    folder, name = os.path.split(absolute.rstrip(os.sep) or os.sep)
    if name in ("", ".", "..") or "/../" in absolute or "/./" in absolute or "//" in absolute:
        return os.path.realpath(absolute)
    try:
        if stat.S_ISLNK(os.lstat(absolute).st_mode):
            return os.path.realpath(absolute)
    except OSError:  # missing (a summary not written yet), or not reachable: resolved as the folder allows
        pass
    return os.path.join(_real_folder(folder), name)


@dataclass(frozen=True)
class _Roots:
    folders: list[str]  # resolved, absolute
    prefixes: tuple[str, ...]  # `_prefixes(folders)`


_roots_memo: dict[tuple[bool, str, str], tuple[float, _Roots]] = {}


def _roots(write: bool) -> _Roots:
    """The write (or read) roots of the settings, resolved: reused like `_real_folder`."""
    files = get_settings().files
    cwd = os.getcwd()
    key = (write, files.write_roots or files.roots if write else files.roots, cwd)
    now = time.monotonic()
    known = _roots_memo.get(key)
    if known is not None and now - known[0] < FOLDER_MEMO_SECONDS:
        return known[1]
    folders = files.write_folders() if write else files.read_folders()
    resolved = [os.path.realpath(os.path.join(cwd, folder)) for folder in folders]  # join keeps an absolute folder
    roots = _Roots(resolved, _prefixes(resolved))
    if len(_roots_memo) >= 64:
        _roots_memo.clear()
    _roots_memo[key] = (now, roots)
    return roots


def _prefixes(folders: Iterable[str]) -> tuple[str, ...]:
    """What the paths under `folders` (resolved, absolute) start with: each folder and a separator."""
    return tuple(folder.rstrip(os.sep) + os.sep for folder in folders)


def _inside(path: str, prefixes: tuple[str, ...]) -> bool:
    """`path` (resolved, absolute) is one of the folders of `prefixes` (`_prefixes`) or lies under one."""
    return (path + os.sep).startswith(prefixes)


_SYSTEM_PREFIXES = _prefixes(map(str, SYSTEM_FOLDERS))


def confine(path: str | Path, *, write: bool, what: str) -> Path:
    """`path` resolved (links followed, relative to the working directory), if it lies inside a root.

    A `file://` URL is its local path, checked the same way. Raises InputError naming `what`, the
    path, where it leads and the setting to change.
    """
    return Path(confined(path, write=write, what=what))


def confined(path: str | Path, *, write: bool, what: str) -> str:
    """`confine`, the resolved path as a string. Works on strings: with pathlib's parsing, four
    checks per document were half the CPU of an all-cached batch rerun, and a Path made of the
    result was still ~10 % of the checks' cost."""
    if isinstance(path, str) and is_url(path):
        path = _local_path(path, write=write, what=what)
    given = os.path.expanduser(os.fspath(path))
    real = _resolve(given)

    def shown() -> str:
        return f"{what} {given}" + (f" (a link to {real})" if real != os.path.abspath(given) else "")

    if _inside(real, _SYSTEM_PREFIXES):
        raise InputError(
            f"{shown()} is in a system folder ({', '.join(map(str, SYSTEM_FOLDERS))}): batches never read or write there"
        )
    roots = _roots(write)
    if not _inside(real, roots.prefixes):
        setting = "FRUGAL_FILE_WRITE_ROOTS" if write else "FRUGAL_FILE_ROOTS"
        allowed = os.pathsep.join(roots.folders) or "none"
        verb = "written to" if write else "read from"
        raise InputError(
            f"{shown()} is outside the folders batch files may be {verb} ({allowed}): "
            f"use a path under one of them, or add its folder to {setting}"
        )
    return real


_folder_checks: dict[tuple[str, bool], tuple[float, _Roots, Path]] = {}


def confine_folder(path: str | Path, *, write: bool, what: str) -> Path:
    """`confine` for a folder many files of a batch sit in (its source, its destination): a check
    that passed is reused for FOLDER_MEMO_SECONDS, as the folders of files are (`_real_folder`), and
    as long as the roots are the same; one that failed is made again (and raises) each time.

    A batch checks its destination for every document it reads and every summary it writes.
    """
    key = (os.fspath(path), write)
    roots = _roots(write)  # a new object when the settings, the working directory or a second changed
    now = time.monotonic()
    known = _folder_checks.get(key)
    if known is not None and known[1] is roots and now - known[0] < FOLDER_MEMO_SECONDS:
        return known[2]
    real = confine(path, write=write, what=what)
    if len(_folder_checks) >= 256:
        _folder_checks.clear()
    _folder_checks[key] = (now, roots, real)
    return real


def _local_path(url: str, *, write: bool, what: str) -> str:
    if not is_file_url(url):
        allowed = "a folder, a file:// URL or a URL under FRUGAL_FILE_WRITE_ROOTS" if write else "a folder or a file:// URL"
        raise InputError(f"{what} {shown_url(url)} is a URL: give {allowed}")
    try:
        return file_url_path(url)
    except ValueError as exc:
        raise InputError(f"{what} {shown_url(url)}: {exc}") from None


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_regular_fd(path: Path | str, shown: str) -> tuple[int, int]:
    """(a descriptor open for reading, the file's size) of `path` if it is a regular file.

    Checked before opening (no open of a device or FIFO at all) and again on the open file
    (the file it actually opened, even if `path` changed in between). `shown` names it in errors.
    """
    try:
        before = os.stat(path, follow_symlinks=False)
        if not stat.S_ISREG(before.st_mode):
            raise InputError(f"{shown} cannot be read: it is {_kind(before.st_mode)}, not a regular file")
        fd = os.open(path, _READ_FLAGS | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise InputError(f"{shown} cannot be read: {exc.strerror or exc}") from exc
    after = os.fstat(fd)
    if not stat.S_ISREG(after.st_mode):
        os.close(fd)
        raise InputError(f"{shown} cannot be read: it is {_kind(after.st_mode)}, not a regular file")
    return fd, after.st_size


@contextmanager
def open_regular(path: Path, shown: str) -> Iterator[BinaryIO]:
    """Open `path` (already resolved by `confine`) for reading if it is a regular file (`_open_regular_fd`)."""
    fd, _ = _open_regular_fd(path, shown)
    with os.fdopen(fd, "rb") as opened:
        yield opened


def read_regular(path: Path | str, shown: str, limit: int) -> tuple[int, bytes]:
    """(its size, its content) if `path` (resolved by `confine`) is a regular file (`_open_regular_fd`);
    at most `limit` + 1 bytes are read, none if its size is over `limit`. Without a file object: a
    batch reads a small document per item."""
    fd, size = _open_regular_fd(path, shown)
    try:
        return size, b"" if size > limit else _read_upto(fd, limit + 1)
    except OSError as exc:
        raise InputError(f"{shown} cannot be read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def _read_upto(fd: int, most: int) -> bytes:
    """Up to `most` bytes from `fd`: reads until then or the end of the file."""
    parts: list[bytes] = []
    got = 0
    while got < most:
        part = os.read(fd, most - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a folder",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISLNK: "a link",
    }
    return next((name for check, name in kinds.items() if check(mode)), "not a file")


def write_atomic(path: Path, lines: Iterable[str]) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`.

    The temporary name is unique to this process and call (pid + a counter),
    created with O_EXCL; folders already made are remembered, so a batch pays
    one open, one write and one rename per file.
    """
    folder = path.parent
    if folder not in _made:
        folder.mkdir(parents=True, exist_ok=True)
        _made.add(folder)
    with _serial_lock:
        serial = next(_serial)
    tmp = folder / f".{path.name}.{os.getpid()}.{serial}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:  # the folder went away since we made it
        _made.discard(folder)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as out:
            for line in lines:
                out.write(line)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` to `path` atomically unless the file already says exactly that; True if written."""
    if holds(path, text.encode("utf-8")):
        return False
    write_atomic(path, (text,))
    return True


def holds(path: Path | str, data: bytes) -> bool:
    """True if `path` is a regular file whose content is exactly `data` (a FIFO there is not waited on)."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:  # missing, unreadable: not the same
        return False
    try:
        found = os.fstat(fd)
        return stat.S_ISREG(found.st_mode) and found.st_size == len(data) and _read_upto(fd, len(data) + 1) == data
    finally:
        os.close(fd)
