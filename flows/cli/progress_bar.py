"""The CLI's view of `for_each:` progress: a bar on a terminal, a line per chunk otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flows.engine import progress


@contextmanager
def progress_display(stream: Any = None) -> Iterator[None]:
    """Show batch progress on `stream` (stderr) while the block runs."""
    stream = stream or sys.stderr
    if stream.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),  # on the terminal it checked, not on stdout, which carries the output
            transient=False,
        )
        tasks: dict[str, Any] = {}

        def on_bar(pipeline: str, node: str, done: int, total: int | None) -> None:
            key = f"{pipeline}.{node}"
            if key not in tasks:
                tasks[key] = bar.add_task(f"{pipeline}: {node}", total=total)
            bar.update(tasks[key], completed=done, total=total)

        progress.add_listener(on_bar)
        try:
            with bar:
                yield
        finally:
            progress.remove_listener(on_bar)
        return

    last: dict[str, float] = {}

    def on_line(pipeline: str, node: str, done: int, total: int | None) -> None:
        key = f"{pipeline}.{node}"
        now = time.monotonic()
        if done and done != total and now - last.get(key, 0.0) < 1.0:
            return  # at most a line a second, plus the last one
        last[key] = now
        share = f" ({progress.percent(done, total):.0f}%)" if total else ""
        print(f"{pipeline}: {node}: {done}/{total if total is not None else '?'} items{share}", file=stream, flush=True)

    progress.add_listener(on_line)
    try:
        yield
    finally:
        progress.remove_listener(on_line)
