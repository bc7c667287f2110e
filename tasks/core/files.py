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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


def _inside(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == folder or path.is_relative_to(folder) for folder in folders)


def confine(path: str | Path, *, write: bool, what: str) -> Path:
    """`path` resolved (links followed, relative to the working directory), if it lies inside a root.

    A `file://` URL is its local path, checked the same way. Raises InputError naming `what`, the
    path, where it leads and the setting to change.
    """
    if isinstance(path, str) and is_url(path):
        path = _local_path(path, write=write, what=what)
    given = Path(path).expanduser()
    real = Path(os.path.realpath(given))
    shown = f"{what} {given}" + (f" (a link to {real})" if real != Path(os.path.abspath(given)) else "")
    if _inside(real, SYSTEM_FOLDERS):
        raise InputError(
            f"{shown} is in a system folder ({', '.join(map(str, SYSTEM_FOLDERS))}): batches never read or write there"
        )
    files = get_settings().files
    folders = files.write_folders() if write else files.read_folders()
    roots = tuple(Path(os.path.realpath(folder)) for folder in folders)
    if not _inside(real, roots):
        setting = "FRUGAL_FILE_WRITE_ROOTS" if write else "FRUGAL_FILE_ROOTS"
        allowed = os.pathsep.join(map(str, roots)) or "none"
        verb = "written to" if write else "read from"
        raise InputError(
            f"{shown} is outside the folders batch files may be {verb} ({allowed}): "
            f"use a path under one of them, or add its folder to {setting}"
        )
    return real


def _local_path(url: str, *, write: bool, what: str) -> str:
    if not is_file_url(url):
        allowed = "a folder, a file:// URL or a URL under FRUGAL_FILE_WRITE_ROOTS" if write else "a folder or a file:// URL"
        raise InputError(f"{what} {shown_url(url)} is a URL: give {allowed}")
    try:
        return file_url_path(url)
    except ValueError as exc:
        raise InputError(f"{what} {shown_url(url)}: {exc}") from None


@contextmanager
def open_regular(path: Path, shown: str) -> Iterator[BinaryIO]:
    """Open `path` (already resolved by `confine`) for reading if it is a regular file.

    Checked before opening (no open of a device or FIFO at all) and again on the open file
    (the file it actually opened, even if `path` changed in between). `shown` names it in errors.
    """
    try:
        before = os.stat(path, follow_symlinks=False)
        if not stat.S_ISREG(before.st_mode):
            raise InputError(f"{shown} cannot be read: it is {_kind(before.st_mode)}, not a regular file")
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
    except OSError as exc:
        raise InputError(f"{shown} cannot be read: {exc.strerror or exc}") from exc
    after = os.fstat(fd)
    if not stat.S_ISREG(after.st_mode):
        os.close(fd)
        raise InputError(f"{shown} cannot be read: it is {_kind(after.st_mode)}, not a regular file")
    with os.fdopen(fd, "rb") as opened:
        yield opened


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


def holds(path: Path, data: bytes) -> bool:
    """True if `path` is a regular file whose content is exactly `data` (a FIFO there is not waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # missing, unreadable: not the same
        return False
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return False
    with os.fdopen(fd, "rb") as current:
        return current.read(len(data) + 1) == data
