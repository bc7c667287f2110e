"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The rename is atomic against a crash of the process (the failure a batch
meets); it is not fsync'd, so a power cut may lose the newest files, which
the next run rewrites from the prompt cache at no model cost.

`holds` lets a writer leave alone a file that already says the same: creating
and renaming a file costs a file system far more than reading a small one
(~0.6-1.4 ms against ~10 us on an ext4 disk, measured), and a nightly re-run
mostly rewrites what is already there.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable
from pathlib import Path

_made: set[Path] = set()
_serial = itertools.count()
_serial_lock = threading.Lock()


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


def holds(path: Path, data: bytes) -> bool:
    """True if `path` is a file whose content is exactly `data`."""
    try:
        with open(path, "rb") as current:
            return current.read(len(data) + 1) == data
    except OSError:  # missing, a directory, unreadable: not the same
        return False
