"""The file-writing thread: many files at once, each awaited, errors back to their writer."""

from __future__ import annotations

import asyncio

import pytest

from tasks.steps.file_writer import write_file


async def test_many_files_are_written_and_awaited(tmp_path):
    paths = [tmp_path / "out" / f"doc{i}.md" for i in range(300)]
    await asyncio.gather(*(write_file(p, f"summary {i}\n") for i, p in enumerate(paths)))
    assert [p.read_text() for p in paths] == [f"summary {i}\n" for i in range(300)]
    assert not list((tmp_path / "out").glob(".*.tmp"))  # no temporary file left behind


async def test_a_failed_write_raises_in_its_writer_only(tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    good = tmp_path / "ok.md"
    results = await asyncio.gather(
        write_file(tmp_path / "blocker" / "doc.md", "x"), write_file(good, "fine"), return_exceptions=True
    )
    assert isinstance(results[0], OSError)
    assert results[1] is None and good.read_text() == "fine"


async def test_writes_from_two_event_loops(tmp_path):
    await write_file(tmp_path / "a.md", "from the test's loop")

    def other_loop() -> None:
        asyncio.run(write_file(tmp_path / "b.md", "from another loop"))

    await asyncio.to_thread(other_loop)
    assert (tmp_path / "a.md").read_text() == "from the test's loop"
    assert (tmp_path / "b.md").read_text() == "from another loop"


@pytest.mark.parametrize("text", ["", "é\n" * 1000])
async def test_content_is_exact(tmp_path, text):
    await write_file(tmp_path / "t.md", text)
    assert (tmp_path / "t.md").read_bytes() == text.encode("utf-8")
