"""A chunk as plain data (`ChunkJob`): it survives JSON and pickle unchanged, runs in any process
that has the same pipeline and settings (and refuses otherwise, saying what differs), and reports
each document as it ends; progress of chunks in other processes goes through the shared Redis."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import cloudpickle
import pytest

from flows.engine import progress, remote_progress
from flows.engine.chunk_job import ChunkJob, JobMaker, pipeline_reference
from flows.engine.job_runner import run_job
from flows.language import catalog
from flows.orchestration.flow import run_inline
from tasks.core.errors import ConfigError
from tasks.providers.tiers import public_settings
from tasks.steps.documents import describe_source
from tasks.steps.sources import iter_items
from tests.flows.batch_documents import SUMMARY, write_docs


def nightly_job(tmp_path: Path, n: int = 3) -> ChunkJob:
    pipeline = catalog.load("nightly-summaries")
    node = pipeline.nodes["summaries"]
    source = write_docs(tmp_path / "in", n)
    inputs = pipeline.validate_inputs({"source": str(source), "destination": str(tmp_path / "out")})
    docs = describe_source(str(source), str(tmp_path / "out"))
    context = {"inputs": inputs, "settings": public_settings(), "pipeline": pipeline.identity, "docs": docs}
    items = list(enumerate(iter_items(node.id, docs)))  # a document from a folder is its path: a reference
    return JobMaker(pipeline, node, context, "run-1", concurrency=2)(0, items)


def test_a_job_is_plain_data_that_round_trips_through_json_and_pickle(tmp_path):
    job = nightly_job(tmp_path)
    assert job.pipeline == "nightly-summaries"  # a name each worker finds in its own copy of the project
    as_json = json.dumps(job.model_dump(mode="json"))
    assert ChunkJob.model_validate(json.loads(as_json)) == job
    assert cloudpickle.loads(cloudpickle.dumps(job)) == job
    assert set(job.context) == {"inputs", "settings", "pipeline", "docs"}  # what the node's templates read, nothing live


def test_a_pipeline_outside_the_pipelines_folder_is_referred_to_by_its_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text((catalog.pipelines_dir() / "sentiment.yaml").read_text())
    assert pipeline_reference(catalog.load(str(path))) == str(path.resolve())


async def test_a_job_runs_its_items_and_reports_each_document(tmp_path, peer):
    peer.responder = lambda protocol, body: SUMMARY
    job = nightly_job(tmp_path, 3)
    done: list[int] = []
    records = await run_job(ChunkJob.model_validate(json.loads(json.dumps(job.model_dump(mode="json")))), lambda: done.append(1))
    assert sorted(r["index"] for r in records) == [0, 1, 2]
    assert {r["status"] for r in records} == {"ok"}, [r.get("error") for r in records]
    assert len(done) == 3 and peer.count() == 3
    assert all(SUMMARY in (tmp_path / "out" / f"doc{i:03d}.md").read_text() for i in range(3))


async def test_a_worker_with_other_settings_or_another_pipeline_refuses_the_job(tmp_path, peer, monkeypatch):
    job = nightly_job(tmp_path, 1)
    monkeypatch.setenv("FRUGAL_SLM_MODEL", "another-model")
    with pytest.raises(ConfigError, match=r"slm\.model: the flow's 'llama3\.2:1b', this worker's 'another-model'"):
        await run_job(job)
    monkeypatch.delenv("FRUGAL_SLM_MODEL")
    changed = job.model_copy(update={"digest": "0" * 64})
    with pytest.raises(ConfigError, match="differs from the flow's"):
        await run_job(changed)
    assert peer.count() == 0


async def test_the_progress_of_a_batch_moves_per_document_not_per_chunk(tmp_path, peer, monkeypatch):
    """One chunk of 10 documents, one at a time: the bar moves while the chunk runs."""
    monkeypatch.setenv("FRUGAL_BATCH_CHUNK_SIZE", "10")
    monkeypatch.setenv("FRUGAL_BATCH_CONCURRENCY", "1")
    peer.responder = lambda protocol, body: SUMMARY
    peer.delay = 0.1
    seen: list[int] = []

    def listen(pipeline: str, node: str, done: int, total: int | None) -> None:
        if node == "summaries":
            seen.append(done)

    progress.add_listener(listen)
    try:
        source = write_docs(tmp_path / "in", 10)
        result = await run_inline("nightly-summaries", {"source": str(source), "destination": str(tmp_path / "out")})
    finally:
        progress.remove_listener(listen)
    assert result.output["ok"] == 10
    assert seen[0] == 0 and seen[-1] == 10 and seen == sorted(seen)
    assert any(0 < done < 10 for done in seen), seen  # before the only chunk ended


async def test_remote_chunks_progress_goes_through_redis_and_counts_each_document_once(redis_cache, monkeypatch):
    monkeypatch.setattr(remote_progress, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(remote_progress, "INTERVAL", 0.01)
    url = remote_progress.redis_url()
    assert url is not None
    key = remote_progress.progress_key("run-1", "summaries")
    counted: list[int] = []
    poll = remote_progress.ProgressPoll(url, key)
    poll.started(0, 5, counted.append)

    async def until(total: int) -> None:
        deadline = time.monotonic() + 30
        while sum(counted) < total:
            assert time.monotonic() < deadline, counted
            await asyncio.sleep(0.02)

    first = remote_progress.ChunkCounter(url, key, 0)  # a worker that dies after 3 items
    for _ in range(3):
        first.item_done()
    await until(3)
    await first.close()
    again = remote_progress.ChunkCounter(url, key, 0)  # the chunk again, on another worker: counts from 0
    for _ in range(4):
        again.item_done()
    await until(4)
    await again.close()
    poll.finished(0)
    await poll.close()
    assert sum(counted) == 4  # the batch adds the chunk's last item itself when its records arrive
    assert not redis_cache.exists(key)
