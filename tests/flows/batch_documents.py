"""Small documents for batch tests, and the summary the model stand-in answers for each."""

from __future__ import annotations

from pathlib import Path

SUMMARY = "A short summary."


def write_docs(root: Path, n: int) -> Path:
    """`n` distinct short documents `doc000.txt` ... in a new folder `root`."""
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"doc{i:03d}.txt").write_text(f"Document {i}. " + " ".join(f"w{i}x{j}" for j in range(12)))
    return root
