"""What writing a summary to s3:// costs, and what the "already says the same" check saves.

A loopback S3 server (moto's, as the tests use) stands in for the store; a local folder through
the local code (`write_if_changed`) is the baseline in the same run. Per ~1 KB summary, median of
`--n` writes each:

- local: a new file; an unchanged one (read back, not written);
- s3 requests alone: PUT; ranged GET of an existing object and of a missing one (what the summary
  check sends); fsspec `info` of an existing and of a missing object (HEAD; s3fs adds a LIST after
  a 404);
- s3 through `write_url_if_changed`: a new summary (GET 404 + PUT) and an unchanged one (GET only).

A loopback server answers in well under what a store across a network does (a PUT to S3 takes
tens of ms): the ratios between requests are what carries over, not the milliseconds.

    .venv/bin/python tests/benchmarks/bench_url_writes.py [--n 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT))

from tests.peers.s3_server import new_bucket, s3_environment, s3_server  # noqa: E402


def median_ms(fn: Callable[[int], object], n: int) -> float:
    runs = []
    for i in range(n):
        started = time.perf_counter()
        fn(i)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="writes per figure")
    n = parser.parse_args().n
    data = ("# doc\n\n" + "A summary of a document, about a thousand bytes long. " * 18 + "\n").encode()
    print(f"summary: {len(data)} bytes, {n} writes per figure, load average {os.getloadavg()[0]:.2f}")

    from tasks.core.files import write_if_changed

    with tempfile.TemporaryDirectory() as folder:
        text = data.decode()
        local_new = median_ms(lambda i: write_if_changed(Path(folder) / f"new{i}.md", text), n)
        local_same = median_ms(lambda i: write_if_changed(Path(folder) / f"new{i}.md", text), n)

    with s3_server() as endpoint:
        os.environ.update(s3_environment(endpoint))
        bucket = new_bucket(endpoint)
        os.environ["FRUGAL_FILE_WRITE_ROOTS"] = bucket.url("out")
        from fsspec.core import url_to_fs

        from tasks.core.url_files import confine_url, write_url_if_changed

        fs, root = url_to_fs(bucket.url("out"))
        fs.pipe_file(f"{root}/warm.md", data)  # the first request opens the connection pool
        figures = {
            "s3 PUT": median_ms(lambda i: fs.pipe_file(f"{root}/put{i}.md", data), n),
            "s3 ranged GET, object there": median_ms(lambda i: fs.cat_file(f"{root}/put{i}.md", start=0, end=len(data) + 1), n),
            "s3 ranged GET, no object": median_ms(lambda i: _missing(fs.cat_file, f"{root}/none{i}.md"), n),
            "s3 info (HEAD), object there": median_ms(lambda i: fs.info(f"{root}/put{i}.md"), n),
            "s3 info (HEAD + LIST), no object": median_ms(lambda i: _missing(fs.info, f"{root}/none{i}.md"), n),
        }
        target = confine_url(bucket.url("out/summaries"), what="destination")
        figures["write_url_if_changed, new summary"] = median_ms(
            lambda i: write_url_if_changed(target.child(f"s{i}.md"), data, what="summary"), n
        )
        figures["write_url_if_changed, unchanged summary"] = median_ms(
            lambda i: write_url_if_changed(target.child(f"s{i}.md"), data, what="summary"), n
        )
        writes = sum(bucket.versions("out/summaries/").values())

    print(f"{'local write_if_changed, new file':42} {local_new:7.2f} ms   (baseline)")
    print(f"{'local write_if_changed, unchanged file':42} {local_same:7.2f} ms")
    for name, ms in figures.items():
        print(f"{name:42} {ms:7.2f} ms   ({ms / local_new:.0f}x the local new file)")
    saved = figures["write_url_if_changed, new summary"] - figures["write_url_if_changed, unchanged summary"]
    print(f"an unchanged summary costs {saved:.2f} ms less than a new one; PUTs the server received: {writes} for {2 * n} calls")


def _missing(call: Callable[..., object], path: str) -> None:
    try:
        call(path)
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    main()
