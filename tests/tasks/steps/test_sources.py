"""Document files of a directory source: the order and the choice of `sorted(root.rglob("*"))`."""

from __future__ import annotations

import os
from pathlib import Path

from tasks.steps.sources import DOCUMENT_SUFFIXES, iter_document_files


def test_document_files_come_in_the_order_and_choice_of_sorted_rglob(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    names = [
        "b.txt", "a.md", "A.TXT", "a.txt", ".hidden.txt", "notes.rst", "a/z.txt", "a/b/c.md", "a.d/x.txt",
        "x.txt/inner.md", "b/.git/HEAD.txt", "Z/last.md", "10.txt", "9.txt", "a b.txt", "é.txt",
    ]  # fmt: skip
    for name in names:
        path = root / name
        if name == "x.txt/inner.md":
            (root / "x.txt").mkdir(parents=True, exist_ok=True)  # a folder named like a document
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "linked.txt").write_text("through a symlinked folder")
    os.symlink(outside, root / "link")
    os.symlink(root / "b.txt", root / "alias.txt")

    expected = [p for p in sorted(root.rglob("*")) if p.suffix.lower() in DOCUMENT_SUFFIXES and not p.name.startswith(".")]
    assert list(iter_document_files(root)) == expected
    assert root / "link" / "linked.txt" not in expected and root / "alias.txt" in expected
    assert root / "x.txt" in expected and root / "b" / ".git" / "HEAD.txt" in expected
