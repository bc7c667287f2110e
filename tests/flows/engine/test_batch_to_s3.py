"""nightly-summaries writing its summaries and index to s3:// (a loopback S3 server, the real wire
format): every object written once, the index naming URLs, and the rerun writing nothing."""

from __future__ import annotations

import json

from flows.orchestration.flow import run_inline
from tests.flows.batch_documents import SUMMARY, write_docs
from tests.peers.s3_server import S3Bucket


async def test_a_batch_writes_its_summaries_and_index_to_s3_and_the_rerun_writes_nothing(
    tmp_path, peer, s3: S3Bucket, monkeypatch
) -> None:
    monkeypatch.setenv("FRUGAL_FILE_WRITE_ROOTS", s3.url("out"))
    monkeypatch.setenv("FRUGAL_BATCH_CHUNK_SIZE", "3")
    peer.responder = lambda protocol, body: SUMMARY
    source = write_docs(tmp_path / "in", 7)
    inputs = {"source": str(source), "destination": s3.url("out/night")}

    first = await run_inline("nightly-summaries", inputs)
    assert first.output["documents"] == 7 and first.output["ok"] == 7 and first.output["cache"] == {"miss": 7}
    assert first.output["index"] == f"s3://{s3.name}/out/night/index.jsonl"
    names = [f"out/night/doc{i:03d}.md" for i in range(7)]
    assert s3.keys("out/") == sorted([*names, "out/night/index.jsonl"])
    assert all(SUMMARY in s3.read(name).decode() for name in names)
    rows = [json.loads(line) for line in s3.read("out/night/index.jsonl").decode().splitlines()]
    assert [r["summary_path"] for r in rows] == [f"s3://{s3.name}/{name}" for name in names]
    assert set(s3.versions("out/").values()) == {1}

    second = await run_inline("nightly-summaries", inputs)
    assert second.output["cache"] == {"hit": 7} and peer.count() == 7
    # the summaries say the same: not written again; the index now says `cache: hit` for each: written once more
    assert {key: n for key, n in s3.versions("out/").items() if n > 1} == {"out/night/index.jsonl": 2}

    third = await run_inline("nightly-summaries", inputs)
    assert third.output["cache"] == {"hit": 7}
    assert {key: n for key, n in s3.versions("out/").items() if n > 1} == {"out/night/index.jsonl": 2}, (
        "a rerun that changes nothing must write nothing"
    )

    (source / "doc002.txt").write_text("Document 2 now says something else entirely.")
    peer.responder = lambda protocol, body: "Another summary."
    fourth = await run_inline("nightly-summaries", inputs)
    assert fourth.output["cache"] == {"hit": 6, "miss": 1}
    assert {key: n for key, n in s3.versions("out/").items() if n > 1} == {
        "out/night/index.jsonl": 3,
        "out/night/doc002.md": 2,
    }
    assert b"Another summary." in s3.read("out/night/doc002.md")
