"""`write_summary`: atomic, and a file that already says the same is left as it is (a re-run writes nothing)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.core.errors import InputError
from tasks.core.files import holds
from tasks.steps.batch_outputs import SummaryRequest, write_summary


async def summarise(destination: Path, doc_id: str, text: str) -> Path:
    written = await write_summary(SummaryRequest(destination=str(destination), id=doc_id, text=text, source="in/a.txt"))
    return Path(written["path"])


async def test_a_rerun_with_the_same_summary_leaves_the_file_alone(tmp_path: Path) -> None:
    path = await summarise(tmp_path, "sub/a", "The summary.")
    assert path == tmp_path / "sub" / "a.md"
    assert path.read_text() == "# sub/a\n\nThe summary.\n\n<!-- source: in/a.txt -->\n"
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = path.stat()

    assert await summarise(tmp_path, "sub/a", "The summary.") == path
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in path.parent.iterdir()] == ["a.md"]  # no temporary file left behind


async def test_checks_move_to_a_worker_thread_after_three_slow_ones_in_a_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a local disk the "already says the same" check runs on the event loop (a thread hop costs
    ten times the check); a disk slow three checks in a row sends the next ones to a worker thread."""
    import threading

    import tasks.steps.batch_outputs as outputs

    monkeypatch.setattr(outputs, "_threads_until", 0.0)
    monkeypatch.setattr(outputs, "_slow_in_a_row", 0)
    threads: list[str] = []
    checked = outputs.holds

    def watched(path: Path, data: bytes) -> bool:
        threads.append(threading.current_thread().name)
        return checked(path, data)

    monkeypatch.setattr(outputs, "holds", watched)
    for doc_id in ("a", "b"):
        await summarise(tmp_path, doc_id, "Fast.")
    monkeypatch.setattr(outputs, "SLOW_CHECK_SECONDS", -1.0)  # every check now counts as slow
    for doc_id in ("c", "d", "e", "f", "a"):
        await summarise(tmp_path, doc_id, "Slow.")
    main = threading.current_thread().name
    assert threads[:5] == [main] * 5 and all(name != main for name in threads[5:])
    assert "Slow." in (tmp_path / "a.md").read_text()


async def test_a_changed_summary_replaces_the_file(tmp_path: Path) -> None:
    path = await summarise(tmp_path, "a", "Old summary.")
    before = path.stat()
    await summarise(tmp_path, "a", "New summary.")
    assert "New summary." in path.read_text()
    assert path.stat().st_ino != before.st_ino  # renamed over, never written in place
    assert [p.name for p in tmp_path.iterdir()] == ["a.md"]


def test_holds_is_false_for_missing_shorter_longer_or_directory(tmp_path: Path) -> None:
    path = tmp_path / "f.md"
    assert not holds(path, b"abc")
    path.write_bytes(b"abc")
    assert holds(path, b"abc")
    assert not holds(path, b"ab")
    assert not holds(path, b"abcd")
    assert not holds(tmp_path, b"abc")


async def test_a_summary_that_cannot_be_written_says_which_and_why(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(InputError, match=r"summary .*blocker/doc.md cannot be written"):
        await summarise(tmp_path / "blocker", "doc", "The summary.")
