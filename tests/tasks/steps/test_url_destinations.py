"""Summaries and indexes at fsspec URLs: s3:// on a loopback S3 server (moto, the real wire format,
reached by s3fs through the standard AWS variables), memory://, and file:// as a local path; confined
to the URL roots of FRUGAL_FILE_WRITE_ROOTS; an object that already says the same is not written again."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from tasks.core.errors import InputError
from tasks.core.url_files import confine_url, write_url_lines
from tasks.steps.batch_outputs import IndexRequest, SummaryRequest, write_index, write_summary
from tasks.steps.documents import ListRequest, ReadRequest, list_documents, read_document
from tests.peers.s3_server import TEST_SECRET, S3Bucket

RECORDS = [
    {"id": "a", "status": "ok", "output": {"id": "a", "summary_path": "s3://x/a.md", "status": "ok"}},
    {"id": "b", "status": "error", "error": "document is empty"},
]


def batch(folder: Path, records: list[dict]) -> dict:
    """A for_each node's output: its records in a spool folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chunk-000000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"kind": "batch", "spool": str(folder)}


@pytest.fixture
def bucket(s3: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """`s3://BUCKET/out` is a write root, beside the test's folder."""
    monkeypatch.setenv("FRUGAL_FILE_WRITE_ROOTS", f"{tmp_path},{s3.url('out')}")
    return s3


async def summarise(destination: str, doc_id: str, text: str) -> str:
    written = await write_summary(SummaryRequest(destination=destination, id=doc_id, text=text, source="in/a.txt"))
    return written["path"]


async def test_a_summary_is_one_object_and_an_unchanged_one_is_not_written_again(bucket: S3Bucket) -> None:
    path = await summarise(bucket.url("out/night"), "sub/a", "The summary.")
    assert path == f"s3://{bucket.name}/out/night/sub/a.md"
    assert bucket.read("out/night/sub/a.md") == b"# sub/a\n\nThe summary.\n\n<!-- source: in/a.txt -->\n"

    assert await summarise(bucket.url("out/night") + "/", "sub/a", "The summary.") == path
    assert bucket.versions("out/") == {"out/night/sub/a.md": 1}, "a summary that says the same must not be PUT again"

    await summarise(bucket.url("out/night"), "sub/a", "A new summary.")
    assert bucket.versions("out/") == {"out/night/sub/a.md": 2}
    assert b"A new summary." in bucket.read("out/night/sub/a.md")
    assert bucket.keys() == ["out/night/sub/a.md"]  # nothing else: no temporary object


async def test_the_index_is_one_object_its_paths_are_urls_and_a_rerun_writes_nothing(bucket: S3Bucket, tmp_path) -> None:
    BATCH = batch(tmp_path / "spool", RECORDS)
    written = await write_index(IndexRequest(batch=BATCH, destination=bucket.url("out")))
    assert written == {"path": f"s3://{bucket.name}/out/index.jsonl", "ok": 1, "error": 1, "skipped": 0}
    rows = [json.loads(line) for line in bucket.read("out/index.jsonl").decode().splitlines()]
    assert [(r["id"], r["status"], r["summary_path"]) for r in rows] == [("a", "ok", "s3://x/a.md"), ("b", "error", None)]

    await write_index(IndexRequest(batch=BATCH, destination=bucket.url("out")))
    assert bucket.versions("out/") == {"out/index.jsonl": 1}
    changed = batch(tmp_path / "spool2", RECORDS[:1])
    await write_index(IndexRequest(batch=changed, destination=bucket.url("out")))
    assert bucket.versions("out/") == {"out/index.jsonl": 2}
    assert len(bucket.read("out/index.jsonl").splitlines()) == 1


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("s3://{bucket}/elsewhere", "outside the URLs batch files may be written to"),
        ("s3://{bucket}/outside", "outside the URLs"),  # shares the root's prefix, not its folder
        ("s3://other-bucket/out", "outside the URLs"),
        ("gs://{bucket}/out", "gs://"),  # another protocol: no root (and no gcsfs here)
        ("s3://{bucket}/out/../elsewhere", r"'\.\.'"),
        ("s3://{bucket}/out?versionId=1", "query"),
        ("local:///etc", "local files under another name"),
        ("nosuchfs://x/y", "no file system is known"),
    ],
)
async def test_destinations_outside_the_url_roots_are_refused_before_anything_is_written(
    bucket: S3Bucket, destination: str, message: str, tmp_path: Path
) -> None:
    destination = destination.format(bucket=bucket.name)
    with pytest.raises(InputError, match=message) as refused:
        await summarise(destination, "a", "The summary.")
    if "outside" in message:
        assert "FRUGAL_FILE_WRITE_ROOTS" in str(refused.value)
    with pytest.raises(InputError, match=message):
        await list_documents(ListRequest(source=str(tmp_path), destination=destination))
    assert bucket.keys() == []


async def test_a_url_destination_is_checked_before_a_document_is_read(bucket: S3Bucket, tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("Some words.")
    with pytest.raises(InputError, match="outside the URLs"):
        await read_document(ReadRequest(id="doc", source=str(tmp_path / "doc.txt"), destination="s3://other/out"))
    document = await read_document(ReadRequest(id="doc", source=str(tmp_path / "doc.txt"), destination=bucket.url("out")))
    assert document.text == "Some words."


async def test_a_failed_write_names_the_destination_and_never_its_credentials(bucket: S3Bucket, monkeypatch) -> None:
    monkeypatch.setenv("FRUGAL_FILE_WRITE_ROOTS", "s3://missing-bucket/out")
    with pytest.raises(InputError) as failed:
        await summarise("s3://missing-bucket/out", "a", "The summary.")
    message = str(failed.value)
    assert message == "summary s3://missing-bucket/out/a.md cannot be written: The specified bucket does not exist"
    assert failed.value.__cause__ is None and failed.value.__suppress_context__  # no traceback carries the original

    with pytest.raises(InputError, match="names a bucket, not credentials; .*AWS_ACCESS_KEY_ID") as refused:
        await summarise("s3://AKIDEXAMPLE:url-secret-value@missing-bucket/out", "a", "The summary.")
    assert "url-secret-value" not in str(refused.value) and "AKIDEXAMPLE" not in str(refused.value)
    assert TEST_SECRET not in message


async def test_without_a_url_root_a_url_is_refused_and_the_message_says_how_to_add_one(s3: S3Bucket, tmp_path) -> None:
    with pytest.raises(InputError, match=r"\(none\): use a URL under one of them, or add it to FRUGAL_FILE_WRITE_ROOTS"):
        await summarise(s3.url("out"), "a", "The summary.")


async def test_memory_urls_compare_by_content_when_the_store_has_no_etag(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    BATCH = batch(tmp_path / "spool", RECORDS)
    monkeypatch.setenv("FRUGAL_FILE_WRITE_ROOTS", "memory://frugal-test")
    fs = fsspec.filesystem("memory")
    if fs.exists("/frugal-test"):
        fs.rm("/frugal-test", recursive=True)
    assert await summarise("memory://frugal-test/out", "a", "The summary.") == "memory://frugal-test/out/a.md"
    await write_index(IndexRequest(batch=BATCH, destination="memory://frugal-test/out"))
    stored = {path: fs.store[path] for path in ("/frugal-test/out/a.md", "/frugal-test/out/index.jsonl")}
    await summarise("memory://frugal-test/out", "a", "The summary.")
    await write_index(IndexRequest(batch=BATCH, destination="memory://frugal-test/out"))
    assert all(fs.store[path] is stored[path] for path in stored), "unchanged objects must not be replaced"
    await write_index(IndexRequest(batch=batch(tmp_path / "empty", []), destination="memory://frugal-test/out"))
    assert fs.store["/frugal-test/out/index.jsonl"] is not stored["/frugal-test/out/index.jsonl"]
    assert fs.cat_file("/frugal-test/out/index.jsonl") == b""


async def test_file_urls_are_local_paths_confined_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    BATCH = batch(tmp_path / "spool", RECORDS)
    out = tmp_path / "out"
    monkeypatch.setenv("FRUGAL_FILE_WRITE_ROOTS", f"file://{out}")
    path = await summarise(f"file://{out}/night", "a b", "The summary.")
    assert path == f"file://{out}/night/a b.md"
    assert "The summary." in (out / "night" / "a b.md").read_text()
    written = await write_index(IndexRequest(batch=BATCH, destination=f"file://{out}/night"))
    assert written["path"] == f"file://{out}/night/index.jsonl" and (out / "night" / "index.jsonl").exists()

    (out / "link").symlink_to(tmp_path)  # a link inside the root that leads out of it
    with pytest.raises(InputError, match="a link to"):
        await summarise(f"file://{out}/link/x", "a", "The summary.")
    with pytest.raises(InputError, match="outside the folders .* FRUGAL_FILE_WRITE_ROOTS"):
        await summarise(f"file://{tmp_path}/elsewhere", "a", "The summary.")
    with pytest.raises(InputError, match="not a host"):
        await summarise("file://server/share", "a", "The summary.")


async def test_a_url_is_confined_as_the_file_system_reads_it_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # memory:// reads `user:pw@frugal-test` as a folder name: that URL is not below memory://frugal-test for it
    monkeypatch.setenv("FRUGAL_FILE_WRITE_ROOTS", "memory://frugal-test")
    with pytest.raises(InputError, match="outside the URLs") as refused:
        await summarise("memory://user:pw-secret-77@frugal-test/out", "a", "The summary.")
    assert "pw-secret-77" not in str(refused.value) and "memory://frugal-test/out" in str(refused.value)


async def test_a_document_id_is_a_name_never_url_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRUGAL_FILE_WRITE_ROOTS", "memory://frugal-names")
    fs = fsspec.filesystem("memory")
    path = await summarise("memory://frugal-names/out", "what?#50%", "The summary.")
    assert path == "memory://frugal-names/out/what?#50%.md"
    assert b"The summary." in fs.cat_file("/frugal-names/out/what?#50%.md")


def test_a_large_index_is_streamed_into_one_object_and_then_left_alone(bucket: S3Bucket) -> None:
    target = confine_url(bucket.url("out"), what="destination").child("index.jsonl")
    lines = [json.dumps({"id": f"doc{i:05d}", "status": "ok"}) + "\n" for i in range(2000)]
    assert write_url_lines(target, iter(lines), what="index", single_put_bytes=4096)  # streamed: over 4 KiB
    assert bucket.read("out/index.jsonl").decode() == "".join(lines)
    assert not write_url_lines(target, iter(lines), what="index", single_put_bytes=4096)
    assert bucket.versions("out/") == {"out/index.jsonl": 1}


async def test_documents_are_read_from_folders_only(bucket: S3Bucket, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"source s3://\S+/in is a URL: give a folder or a file:// URL"):
        await list_documents(ListRequest(source=bucket.url("in"), destination=bucket.url("out")))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("Some words.")
    described = await list_documents(ListRequest(source=f"file://{tmp_path}/in", destination=bucket.url("out")))
    assert described["count"] == 1
