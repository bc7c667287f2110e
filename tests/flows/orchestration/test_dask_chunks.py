"""Batch chunks on Dask (FRUGAL_BATCH_RUNNER=dask): a local cluster of worker processes runs the
chunks from plain data; the flow keeps one progress artifact and one cost table, and the cost
ledger's entries made on the workers carry the flow run's id."""

from __future__ import annotations

import asyncio
import json

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

from flows import ledger
from flows.orchestration.flow import run_pipeline
from tests.flows.batch_documents import SUMMARY, write_docs

pytestmark = [pytest.mark.usefixtures("prefect"), pytest.mark.slow]


async def test_chunks_run_on_a_local_dask_cluster_with_one_progress_artifact_and_cost_table(
    tmp_path, peer, redis_cache, monkeypatch
):
    monkeypatch.setenv("FRUGAL_BATCH_RUNNER", "dask")
    monkeypatch.setenv("FRUGAL_BATCH_DASK_WORKERS", "2")
    monkeypatch.setenv("FRUGAL_BATCH_CHUNK_SIZE", "3")
    peer.responder = lambda protocol, body: SUMMARY
    source = write_docs(tmp_path / "in", 10)
    out = tmp_path / "out"
    state = await run_pipeline("nightly-summaries", {"source": str(source), "destination": str(out)}, return_state=True)
    assert state.is_completed(), state.message
    result = await state.aresult()
    assert result["output"]["documents"] == 10 and result["output"]["ok"] == 10
    assert peer.count() == 10
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"doc{i:03d}" for i in range(10)]
    assert all(SUMMARY in (out / f"doc{i:03d}.md").read_text() for i in range(10))

    run_id = state.state_details.flow_run_id
    async with get_client() as client:
        for _ in range(100):
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
            chunks = [r for r in runs if r.name.startswith("summaries[")]
            if len(chunks) == 4 and all(r.state and r.state.is_final() for r in chunks):
                break
            await asyncio.sleep(0.1)
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    assert sorted(r.name for r in chunks) == [f"summaries[{i}]" for i in range(4)]
    assert all(r.state.name == "Completed" for r in chunks)
    progress = [a for a in artifacts if a.type == "progress"]
    tables = [a for a in artifacts if a.type == "table"]
    assert len(progress) == 1 and progress[0].data == 100.0
    assert len(tables) == 1
    table = json.loads(tables[0].data)
    small = [row for row in table if "small" in json.dumps(row)]
    assert small, table

    # the workers' calls are in the shared ledger, under this flow run
    entries = [e for e in ledger.read_entries() if e.flow_run_id == str(run_id) and e.kind == "call"]
    assert len(entries) == 10
    assert {e.mode for e in entries} == {"inline"}


async def test_dask_workers_write_the_summaries_to_s3_and_the_rerun_writes_none_again(
    tmp_path, peer, redis_cache, monkeypatch, s3
):
    # the worker processes inherit the endpoint and keys (AWS_ENDPOINT_URL ...): they write, the flow writes the index
    monkeypatch.setenv("FRUGAL_BATCH_RUNNER", "dask")
    monkeypatch.setenv("FRUGAL_BATCH_DASK_WORKERS", "2")
    monkeypatch.setenv("FRUGAL_BATCH_CHUNK_SIZE", "3")
    monkeypatch.setenv("FRUGAL_FILE_WRITE_ROOTS", s3.url("out"))
    peer.responder = lambda protocol, body: SUMMARY
    source = write_docs(tmp_path / "in", 8)
    inputs = {"source": str(source), "destination": s3.url("out")}
    state = await run_pipeline("nightly-summaries", inputs, return_state=True)
    assert state.is_completed(), state.message
    result = await state.aresult()
    assert result["output"]["ok"] == 8 and result["output"]["index"] == f"s3://{s3.name}/out/index.jsonl"
    names = [f"out/doc{i:03d}.md" for i in range(8)]
    assert s3.keys("out/") == sorted([*names, "out/index.jsonl"])
    rows = [json.loads(line) for line in s3.read("out/index.jsonl").decode().splitlines()]
    assert [r["summary_path"] for r in rows] == [f"s3://{s3.name}/{name}" for name in names]
    assert all(SUMMARY in s3.read(name).decode() for name in names)

    again = await run_pipeline("nightly-summaries", inputs, return_state=True)
    assert again.is_completed(), again.message
    assert peer.count() == 8
    assert {name: s3.versions("out/")[name] for name in names} == dict.fromkeys(names, 1), (
        "a summary that says the same must not be written again"
    )


async def test_a_local_cluster_worker_has_two_threads_and_the_batch_keeps_twice_that_in_flight(monkeypatch, redis_cache):
    """A one-thread worker idles the provider at each chunk's end (docs/batches.md): the local
    cluster's workers run 2 threads, and FRUGAL_BATCH_CHUNKS_IN_FLIGHT=0 (the default) keeps twice
    the cluster's threads submitted."""
    from flows.language import catalog
    from flows.orchestration.task_runs import OrchestratedRunner

    monkeypatch.setenv("FRUGAL_BATCH_RUNNER", "dask")
    monkeypatch.setenv("FRUGAL_BATCH_DASK_WORKERS", "1")
    node = catalog.load("nightly-summaries").nodes["summaries"]
    runner = OrchestratedRunner()
    try:
        assert await runner.chunk_slots(node, "run-slots") == 2
    finally:
        await runner.end_batch(node)


async def test_chunks_that_ask_at_once_share_one_session_and_every_worker_is_warmed_up(monkeypatch, redis_cache):
    """The chunks submitted at a batch's start all ask for the Dask session at once: one client
    connects (not one each, left open). The scheduler keeps the warm-up as a worker plugin, so a
    worker that joins later gets it too."""
    from distributed import LocalCluster

    from flows.language import catalog
    from flows.orchestration.dask_warmup import PLUGIN_NAME
    from flows.orchestration.task_runs import OrchestratedRunner

    node = catalog.load("nightly-summaries").nodes["summaries"]
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1", dashboard_address=None
    ) as cluster:
        monkeypatch.setenv("FRUGAL_BATCH_RUNNER", "dask")
        monkeypatch.setenv("FRUGAL_BATCH_DASK_ADDRESS", cluster.scheduler_address)
        runner = OrchestratedRunner()
        try:
            assert await asyncio.gather(*(runner.chunk_slots(node, "run-once") for _ in range(4))) == [1] * 4
            clients = [name for name in cluster.scheduler.clients if name.startswith("PrefectDaskClient")]
            assert len(clients) == 1
        finally:
            await runner.end_batch(node)  # waits for the warm-up calls, then disconnects
        assert PLUGIN_NAME in cluster.scheduler.worker_plugins
        assert all(PLUGIN_NAME in worker.plugins for worker in cluster.workers.values())
        cluster.scale(2)
        await asyncio.to_thread(cluster.wait_for_workers, 2, 60)
        assert all(PLUGIN_NAME in worker.plugins for worker in cluster.workers.values())
        assert not [name for name in cluster.scheduler.clients if name.startswith("PrefectDaskClient")]


def test_a_warm_up_compiles_the_pipelines_a_chunk_runs_and_a_failed_one_is_only_logged(caplog):
    from flows.orchestration.dask_warmup import WarmUp, warm

    assert warm("nightly-summaries") >= 0.0  # and the pipeline its items run, summarise-document
    asyncio.run(WarmUp("no-such-pipeline").setup(worker=None))
    assert "warming this worker up for pipeline 'no-such-pipeline' failed" in caplog.text
