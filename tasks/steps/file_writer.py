"""One background thread that writes files for the event loop, in batches.

Creating and renaming a file is mostly kernel time, so it belongs off the event
loop; but a thread hop per file (`asyncio.to_thread`) costs the loop a wake-up,
a self-pipe write and a fight for the GIL each time, which at hundreds of
files a second is a large share of a batch's CPU. Here every file waiting is
written in one go by one thread, and the loop hears of the whole batch at once.

    await write_file(path, text)      # atomically (tasks.core.files.write_atomic); raises what it raised
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from pathlib import Path

from tasks.core.files import write_atomic
from tasks.core.loops import call_soon_in

Job = tuple[Path, str, asyncio.Future[None], asyncio.AbstractEventLoop]


class FileWriter:
    def __init__(self) -> None:
        self._jobs: deque[Job] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False

    async def write(self, path: Path, text: str) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._wake:
            self._jobs.append((path, text, done, loop))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="frugal-file-writer", daemon=True)
                self._thread.start()
            elif not self._busy:  # a busy thread takes this job with the ones it finds next
                self._wake.notify()
        await done

    def _run(self) -> None:
        while True:
            with self._wake:
                self._busy = False
                while not self._jobs:
                    self._wake.wait()
                self._busy = True
                jobs = list(self._jobs)
                self._jobs.clear()
            results: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], BaseException | None]]] = {}
            for path, text, done, loop in jobs:
                try:
                    write_atomic(path, (text,))
                    error = None
                except BaseException as exc:  # handed to the awaiting coroutine
                    error = exc
                results.setdefault(loop, []).append((done, error))
            for loop, outcomes in results.items():
                call_soon_in(loop, _settle, outcomes)


def _settle(outcomes: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    for done, error in outcomes:
        if done.done():  # the writer was cancelled meanwhile
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


_WRITER = FileWriter()


async def write_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, on the file-writing thread."""
    await _WRITER.write(path, text)
