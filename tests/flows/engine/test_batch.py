"""Batches: for_each in chunks, the nightly summaries pipeline, item errors,
re-runs that cost nothing, single-flight, and a cache that goes away."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from flows.orchestration.flow import run_inline, run_pipeline
from tasks.core.errors import StepError

SUMMARY = "A short summary."


def write_docs(root: Path, texts: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
    return root


def docs(n: int, words: int = 12) -> dict[str, str]:
    return {f"doc{i:03d}.txt": f"Document {i}. " + " ".join(f"w{i}x{j}" for j in range(words)) for i in range(n)}


def index_rows(destination: Path) -> list[dict]:
    return [json.loads(line) for line in (destination / "index.jsonl").read_text().splitlines()]


async def test_for_each_over_a_list_returns_the_item_outputs(tmp_path, peer):
    pipeline = tmp_path / "fan.yaml"
    pipeline.write_text(
        textwrap.dedent(
            """
            name: fan
            version: "1"
            inputs:
              words: {type: list}
            nodes:
              keys:
                uses: hash_prompt
                for_each: "{{ inputs.words }}"
                with: {prompt: "{{ item }} at {{ index }}"}
            output: "{{ keys }}"
            """
        )
    )
    result = await run_inline(str(pipeline), {"words": ["a", "b", "a"]})
    assert len(result.output) == 3 and len(set(result.output)) == 3
    assert all(len(k) == 64 for k in result.output)


async def test_nightly_summaries_writes_summaries_and_an_index_then_reruns_for_free(tmp_path, peer):
    peer.responder = lambda protocol, body: SUMMARY
    source = write_docs(tmp_path / "in", {**docs(5), "sub/deep.md": "A nested markdown document with words."})
    out = tmp_path / "out"
    first = await run_inline("nightly-summaries", {"source": str(source), "destination": str(out)})
    assert first.output["documents"] == 6 and first.output["ok"] == 6 and first.output["failed"] == 0
    assert first.output["cache"] == {"miss": 6}
    calls = peer.count()
    assert calls == 6
    rows = index_rows(out)
    assert [r["id"] for r in rows] == ["doc000", "doc001", "doc002", "doc003", "doc004", "sub/deep"]
    assert {r["status"] for r in rows} == {"ok"}
    assert rows[0]["route"] == "small" and rows[0]["model"] == "ollama/llama3.2:1b" and rows[0]["cache"] == "miss"
    summary = (out / "doc000.md").read_text()
    assert summary.startswith("# doc000\n") and SUMMARY in summary
    assert (out / "sub" / "deep.md").exists()
    before = {p: p.read_bytes() for p in out.rglob("*.md")}

    second = await run_inline("nightly-summaries", {"source": str(source), "destination": str(out)})
    assert second.output["cache"] == {"hit": 6}
    assert peer.count() == calls, "unchanged documents must cost nothing on the next run"
    assert {p: p.read_bytes() for p in out.rglob("*.md")} == before

    (source / "doc001.txt").write_text("Document 1 was edited and now says something else entirely.")
    third = await run_inline("nightly-summaries", {"source": str(source), "destination": str(out)})
    assert third.output["cache"] == {"hit": 5, "miss": 1}
    assert peer.count() == calls + 1


async def test_a_batch_leaves_what_outlives_it_out_of_garbage_collections_while_it_runs(tmp_path, peer):
    """While documents run, what was alive before is frozen (no collection walks it); after the
    batch, it is the collector's again (flows.engine.frozen_heap)."""
    import gc

    from flows.engine import progress

    peer.responder = lambda protocol, body: SUMMARY
    source = write_docs(tmp_path / "in", docs(6))
    seen: list[int] = []

    def listener(pipeline: str, node: str, done: int, total: int | None) -> None:
        if done:  # reported as documents finish
            seen.append(gc.get_freeze_count())

    progress.add_listener(listener)
    try:
        result = await run_inline("nightly-summaries", {"source": str(source), "destination": str(tmp_path / "out")})
    finally:
        progress.remove_listener(listener)
    assert result.output["ok"] == 6
    assert seen and min(seen) > 10_000  # the modules, the compiled pipelines, the settings
    assert gc.get_freeze_count() == 0


async def test_long_documents_go_to_the_large_model_and_longer_ones_are_summarised_in_parts(tmp_path, peer):
    def responder(protocol: str, body: dict) -> str:
        system, prompt = body["messages"][0]["content"], body["messages"][-1]["content"]
        if protocol == "ollama":
            return "small summary"
        if system.startswith("Summarise this part"):
            return f"part about {prompt.split()[0]}"
        if prompt.startswith("part about"):
            return f"large summary of: {prompt}"
        return f"large summary of: {' '.join(prompt.split()[:3])}"  # not the whole document: that is an echo, rejected

    peer.responder = responder
    paragraph = " ".join(f"w{j}" for j in range(25))
    source = write_docs(
        tmp_path / "in",
        {
            "short.txt": "A short document of a few words.",
            "long.txt": "Long " + " ".join(f"l{j}" for j in range(40)),  # > long_words: the large model
            "huge.txt": "\n\n".join(f"P{k} {paragraph}" for k in range(4)),  # > context_words: in parts
        },
    )
    out = tmp_path / "out"
    inputs = {"source": str(source), "destination": str(out), "long_words": 20, "context_words": 60}
    result = await run_inline("nightly-summaries", inputs)
    assert result.output["ok"] == 3 and result.output["routes"] == {"small": 1, "large": 2}
    rows = {r["id"]: r for r in index_rows(out)}
    assert rows["short"]["route"] == "small" and rows["short"]["model"] == "ollama/llama3.2:1b"
    assert rows["long"]["route"] == rows["huge"]["route"] == "large"
    assert rows["long"]["model"].startswith("openai/")
    assert "large summary of: Long l0 l1" in (out / "long.md").read_text()
    # 104 words in parts of at most 60, cut at paragraph ends: 2 parts, each summarised, then the summaries combined
    assert "large summary of: part about P0\n\npart about P2" in (out / "huge.md").read_text()
    assert peer.count(protocol="ollama") == 1 and peer.count(protocol="openai") == 1 + 2 + 1

    calls = peer.count()
    again = await run_inline("nightly-summaries", inputs)
    assert again.output["cache"] == {"hit": 3} and peer.count() == calls


def test_memory_does_not_grow_with_the_number_of_documents(tmp_path):
    """Items stream from the source and their records go to spool files: 10x the documents, about the same peak.

    Measured in a process of its own: tracemalloc's peak counts every thread's allocations, and other
    tests leave this process's ledger writer retrying their stopped servers."""
    pipeline = tmp_path / "hashes.yaml"
    pipeline.write_text(
        textwrap.dedent(
            """
            name: hashes
            version: "1"
            inputs:
              source: {type: string}
              destination: {type: string}
            nodes:
              docs:
                uses: list_documents
                with: {source: "{{ inputs.source }}", destination: "{{ inputs.destination }}"}
              keys:
                uses: hash_prompt
                for_each: "{{ docs }}"
                with: {prompt: "{{ item.text }}"}
              index_file:
                uses: write_index
                with: {batch: "{{ keys }}", destination: "{{ inputs.destination }}"}
            output: "{{ keys.total }}"
            """
        )
    )
    script = textwrap.dedent(
        """
        import asyncio, json, sys, tracemalloc
        from pathlib import Path
        from flows.orchestration.flow import run_inline

        folder, pipeline = Path(sys.argv[1]), sys.argv[2]

        async def peak_for(n):
            source = folder / f"docs-{n}.jsonl"
            with source.open("w") as out:
                for i in range(n):
                    out.write(json.dumps({"id": f"d{i}", "text": f"Document {i}: " + "words of the document " * 25}) + "\\n")
            tracemalloc.start()
            try:
                result = await run_inline(pipeline, {"source": str(source), "destination": str(folder / f"out-{n}")})
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert result.output == n, result.output
            return peak

        async def main():
            await peak_for(100)  # the first run compiles the pipeline and fills the process's caches
            print(json.dumps([await peak_for(500), await peak_for(5_000)]))

        asyncio.run(main())
        """
    )
    env = {**os.environ, "FRUGAL_BATCH_CHUNK_SIZE": "100"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(pipeline)], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    small, large = json.loads(done.stdout.strip().splitlines()[-1])
    # records kept in memory would add ~0.8 KB each: 4,500 more documents, ~3.6 MB more
    assert large < small + 1_000_000, f"peak {large / 1e6:.1f} MB for 5,000 documents against {small / 1e6:.1f} MB for 500"
    assert len(index_rows(tmp_path / "out-5000")) == 5_000


async def test_bad_documents_are_item_errors_and_the_run_goes_on(tmp_path, peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_BATCH_MAX_DOCUMENT_BYTES", "200")
    peer.responder = lambda protocol, body: SUMMARY
    source = write_docs(
        tmp_path / "in",
        {
            **docs(7),
            "binary.txt": b"\xff\xfe\x00 not utf-8",
            "empty.md": "   \n",
            "huge.txt": "word " * 100,
        },
    )
    (source / "folder.txt").mkdir()  # looks like a document, cannot be read as one
    out = tmp_path / "out"
    with pytest.raises(StepError) as failed:
        await run_inline("nightly-summaries", {"source": str(source), "destination": str(out)})
    message = str(failed.value)
    assert "4 of 11 items failed" in message
    for name in ("binary", "empty", "huge", "folder"):
        assert name in message
    rows = {r["id"]: r for r in index_rows(out)}
    assert rows["binary"]["status"] == "error" and "not UTF-8" in rows["binary"]["reason"]
    assert "empty" in rows["empty"]["reason"]
    assert "too large" in rows["huge"]["reason"]
    assert "cannot be read" in rows["folder"]["reason"]
    assert sum(r["status"] == "ok" for r in rows.values()) == 7
    assert peer.count() == 7

    ok = await run_inline("nightly-summaries", {"source": str(source), "destination": str(out), "max_failed_share": 0.5})
    assert ok.output["failed"] == 4 and ok.output["ok"] == 7


async def test_jsonl_source_with_a_malformed_line(tmp_path, peer):
    peer.responder = lambda protocol, body: SUMMARY
    source = tmp_path / "docs.jsonl"
    source.write_text(
        '{"id": "a", "text": "First document text."}\nthis is not json\n{"id": "b", "text": "Second document text."}\n'
    )
    out = tmp_path / "out"
    result = await run_inline("nightly-summaries", {"source": str(source), "destination": str(out), "max_failed_share": 0.5})
    assert result.output["ok"] == 2 and result.output["failed"] == 1
    rows = index_rows(out)
    assert [r["id"] for r in rows] == ["a", "line-2", "b"]
    assert rows[1]["status"] == "error" and "unreadable line" in rows[1]["reason"]


async def test_identical_documents_in_flight_make_one_model_call(tmp_path, peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_BATCH_CONCURRENCY", "8")
    monkeypatch.setenv("FRUGAL_BATCH_CHUNK_SIZE", "3")
    peer.responder = lambda protocol, body: SUMMARY
    peer.delay = 0.3
    same = "The very same document text, word for word."
    source = write_docs(tmp_path / "in", {f"copy{i}.txt": same for i in range(6)})
    result = await run_inline("nightly-summaries", {"source": str(source), "destination": str(tmp_path / "out")})
    assert result.output["ok"] == 6
    assert peer.count() == 1, "identical requests in flight across chunks must share one model call"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect")
async def test_orchestrated_batch_is_one_task_run_per_chunk_with_progress(tmp_path, peer, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

    monkeypatch.setenv("FRUGAL_BATCH_CHUNK_SIZE", "4")
    peer.responder = lambda protocol, body: SUMMARY
    source = write_docs(tmp_path / "in", docs(10))
    state = await run_pipeline(
        "nightly-summaries", {"source": str(source), "destination": str(tmp_path / "out")}, return_state=True
    )
    assert state.is_completed()
    run_id = state.state_details.flow_run_id
    async with get_client() as client:
        for _ in range(100):
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
            if len(runs) >= 6 and all(r.state and r.state.is_final() for r in runs):
                break
            await asyncio.sleep(0.1)
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    names = sorted(r.name for r in runs)
    assert [n for n in names if n.startswith("summaries")] == ["summaries[0]", "summaries[1]", "summaries[2]"]
    assert len(runs) == 6  # docs, 3 chunks, index_file, check: never one task run per document
    progress = [a for a in artifacts if a.type == "progress"]
    assert progress and progress[-1].data == 100.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_redis_going_away_mid_run_loses_nothing(tmp_path, peer, monkeypatch):
    port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        monkeypatch.setenv("FRUGAL_CACHE_URL", f"redis://127.0.0.1:{port}/0")
        monkeypatch.setenv("FRUGAL_BATCH_CONCURRENCY", "2")
        monkeypatch.setenv("FRUGAL_BATCH_CHUNK_SIZE", "2")
        peer.responder = lambda protocol, body: SUMMARY
        peer.delay = 0.05
        source = write_docs(tmp_path / "in", docs(16))

        async def kill_redis_soon() -> None:
            while peer.count() < 4:
                await asyncio.sleep(0.01)
            server.kill()

        killer = asyncio.create_task(kill_redis_soon())
        result = await run_inline("nightly-summaries", {"source": str(source), "destination": str(tmp_path / "out")})
        await killer
    finally:
        server.kill()
        server.wait()
    assert result.output["ok"] == 16 and result.output["failed"] == 0
    assert result.output["cache"].get("error", 0) > 0
    assert len(list((tmp_path / "out").glob("*.md"))) == 16
    assert peer.count() == 16


def _processes_with(marker: str) -> list[int]:
    """Processes whose environment holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_a_killed_run_resumes_without_paying_again(tmp_path, peer):
    """Kill a batch half-way; the next run re-sends nothing that was already answered."""
    peer.responder = lambda protocol, body: SUMMARY
    peer.delay = 0.1
    source = write_docs(tmp_path / "in", docs(30))
    out = tmp_path / "out"
    env = {
        **os.environ,
        "FRUGAL_BATCH_CONCURRENCY": "2",
        "FRUGAL_BATCH_CHUNK_SIZE": "4",
        "FRUGAL_CACHE_LEASE_SECONDS": "2",  # the killed run's in-flight leases expire quickly
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    command = [
        str(Path(__file__).resolve().parents[3] / ".venv" / "bin" / "frugal"),
        "run",
        "nightly-summaries",
        "-i",
        f"source={source}",
        "-i",
        f"destination={out}",
        "--inline",
    ]
    first_log = tmp_path / "first.log"
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=first_log.open("wb"))
    deadline = time.monotonic() + 60
    while peer.count() < 12 and time.monotonic() < deadline:
        time.sleep(0.02)
    first.kill()
    first.wait()
    deadline = time.monotonic() + 5
    while _processes_with(str(tmp_path / "prefect")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_with(str(tmp_path / "prefect")), "a chunk worker outlived the killed run"
    answered = {p.stem for p in out.glob("*.md")}  # stored in the cache before their summary was written
    assert 0 < len(answered) < 30
    sent_before = [r.json["messages"][-1]["content"] for r in peer.requests]

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert len(list(out.glob("*.md"))) == 30
    sent_after = [r.json["messages"][-1]["content"] for r in peer.requests[len(sent_before) :]]
    texts = {name.removesuffix(".txt"): text for name, text in docs(30).items()}
    killed_log = first_log.read_text(errors="replace")[-3000:]
    for doc_id in answered:
        assert texts[doc_id] not in sent_after, f"{doc_id} was answered before the kill and paid again\n{killed_log}"
    assert len(sent_after) == 30 - len(answered), f"{len(sent_after)} sent again, {len(answered)} answered\n{killed_log}"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect")
async def test_finished_chunks_come_back_from_prefect_results_even_with_the_prompt_cache_down(tmp_path, peer, monkeypatch):
    """Resume's second layer: a chunk that finished is not run again, even when the prompt cache is gone."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    monkeypatch.setenv("FRUGAL_BATCH_CHUNK_SIZE", "4")
    monkeypatch.setenv("FRUGAL_CACHE_URL", f"redis://127.0.0.1:{_free_port()}/0")  # nothing can be cached there
    peer.responder = lambda protocol, body: SUMMARY
    source = write_docs(tmp_path / "in", docs(8))
    out = tmp_path / "out"
    inputs = {"source": str(source), "destination": str(out)}
    first = await run_pipeline("nightly-summaries", inputs, return_state=True)
    assert first.is_completed()
    assert peer.count() == 8
    index = (out / "index.jsonl").read_bytes()

    second = await run_pipeline("nightly-summaries", inputs, return_state=True)
    assert second.is_completed()
    assert peer.count() == 8, "finished chunks must come back from Prefect's results, not from the model"
    assert (out / "index.jsonl").read_bytes() == index
    async with get_client() as client:
        for _ in range(100):
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[second.state_details.flow_run_id]))
            )
            chunks = [r for r in runs if r.name.startswith("summaries[")]
            if len(chunks) == 2 and all(r.state and r.state.is_final() for r in chunks):
                break
            await asyncio.sleep(0.1)
    assert sorted(r.state.name for r in chunks) == ["Cached", "Cached"]

    (source / "doc002.txt").write_text("Document 2 changed overnight.")
    third = await run_pipeline("nightly-summaries", inputs, return_state=True)
    assert third.is_completed()
    # only the chunk holding the changed document runs again; with the prompt cache down, its
    # 4 documents are paid again (with a prompt cache, only the changed one would be)
    assert peer.count() == 12


async def test_progress_updates_collapse_into_the_latest_and_a_failed_one_is_only_logged(caplog):
    from flows.engine.batch import ProgressReporter

    sent: list[int] = []
    gate, in_flight = asyncio.Event(), asyncio.Event()

    async def send(done: int) -> None:
        sent.append(done)
        if done == 1:
            in_flight.set()
            await gate.wait()  # a slow API call
        if done == 3:
            raise RuntimeError("the Prefect API is away")

    reporter = ProgressReporter(send)
    reporter.report(1)
    await asyncio.wait_for(in_flight.wait(), 30)
    reporter.report(2)  # while the first is in flight: these two collapse into the latest
    reporter.report(3)
    gate.set()
    await reporter.flush()
    assert sent == [1, 3]
    assert "the Prefect API is away" in caplog.text


def confine_to(monkeypatch, inbox: Path, out: Path) -> None:
    monkeypatch.setenv("FRUGAL_FILE_ROOTS", str(inbox))
    monkeypatch.setenv("FRUGAL_FILE_WRITE_ROOTS", str(out))


async def test_links_out_of_the_root_are_item_errors_and_reach_no_model(tmp_path, peer, monkeypatch):
    """`ln -s /proc/self/environ inbox/env.txt` once sent the environment, API key included, to the model."""
    peer.responder = lambda protocol, body: SUMMARY
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    write_docs(inbox, docs(4))
    (tmp_path / "secret.txt").write_text("a secret beside the inbox")
    (inbox / "env.txt").symlink_to("/proc/self/environ")
    (inbox / "secret.txt").symlink_to(tmp_path / "secret.txt")
    (inbox / "fifo.txt").unlink(missing_ok=True)
    os.mkfifo(inbox / "fifo.txt")  # a FIFO nobody writes to: reading it would hang the batch
    confine_to(monkeypatch, inbox, out)
    result = await run_inline("nightly-summaries", {"source": str(inbox), "destination": str(out), "max_failed_share": 0.5})
    assert result.output["ok"] == 4 and result.output["failed"] == 3
    rows = {r["id"]: r for r in index_rows(out)}
    assert "system folder" in rows["env"]["reason"] and "env.txt" in rows["env"]["reason"]
    assert "outside the folders" in rows["secret"]["reason"] and "FRUGAL_FILE_ROOTS" in rows["secret"]["reason"]
    assert "a FIFO" in rows["fifo"]["reason"]
    assert peer.count() == 4
    sent = json.dumps([r.json for r in peer.requests])
    assert "API_KEY" not in sent and "a secret beside the inbox" not in sent


async def test_a_source_or_destination_outside_the_roots_is_refused_before_any_model_call(tmp_path, peer, monkeypatch):
    peer.responder = lambda protocol, body: SUMMARY
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    write_docs(inbox, docs(2))
    confine_to(monkeypatch, inbox, out)
    with pytest.raises(StepError, match=r"node .doc.: document /proc/self/environ .* is in a system folder"):
        await run_inline("summarise-document", {"id": "env", "source": "/proc/self/environ", "destination": str(out)})
    with pytest.raises(StepError, match=r"document /etc/hostname is outside .*FRUGAL_FILE_ROOTS"):
        await run_inline("summarise-document", {"id": "host", "source": "/etc/hostname", "destination": str(out)})
    with pytest.raises(StepError, match=r"source /etc is outside the folders batch files may be read from"):
        await run_inline("nightly-summaries", {"source": "/etc", "destination": str(out)})
    for destination in (tmp_path / "elsewhere", inbox / "summaries"):  # reading and writing roots differ
        with pytest.raises(StepError, match=r"destination .* is outside .*FRUGAL_FILE_WRITE_ROOTS"):
            await run_inline("nightly-summaries", {"source": str(inbox), "destination": str(destination)})
        with pytest.raises(StepError, match=r"FRUGAL_FILE_WRITE_ROOTS"):
            await run_inline(
                "summarise-document", {"id": "d", "source": str(inbox / "doc000.txt"), "destination": str(destination)}
            )
    assert peer.count() == 0
    assert not (tmp_path / "elsewhere").exists() and not (inbox / "summaries").exists()

    monkeypatch.delenv("FRUGAL_FILE_WRITE_ROOTS")  # one root for both
    monkeypatch.setenv("FRUGAL_FILE_ROOTS", str(tmp_path))
    with pytest.raises(StepError, match=r"is inside the source"):
        await run_inline("nightly-summaries", {"source": str(inbox), "destination": str(inbox / "summaries")})
    assert peer.count() == 0


async def test_a_linked_folder_in_the_destination_does_not_carry_a_summary_out(tmp_path, peer, monkeypatch):
    peer.responder = lambda protocol, body: SUMMARY
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    write_docs(inbox, {"sub/a.txt": "A document in a sub-folder.", "b.txt": "Another document."})
    (out).mkdir()
    (out / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    confine_to(monkeypatch, inbox, out)
    result = await run_inline("nightly-summaries", {"source": str(inbox), "destination": str(out), "max_failed_share": 0.5})
    assert result.output["ok"] == 1 and result.output["failed"] == 1
    rows = {r["id"]: r for r in index_rows(out)}
    assert "a link to" in rows["sub/a"]["reason"] and "FRUGAL_FILE_WRITE_ROOTS" in rows["sub/a"]["reason"]
    assert not (tmp_path / "elsewhere").exists()


async def test_documents_that_would_share_a_summary_get_distinct_ids_stable_across_runs(tmp_path, peer):
    """`c.txt` and `c.md` once both wrote out/c.md: one summary was lost and the index said both were ok."""
    peer.responder = lambda protocol, body: f"summary of {body['messages'][-1]['content']}"
    source = write_docs(
        tmp_path / "in",
        {"c.md": "The markdown one.", "c.txt": "The text one.", "c.txt.md": "Named like a summary.", "C.TXT": "Upper case."},
    )
    out = tmp_path / "out"
    first = await run_inline("nightly-summaries", {"source": str(source), "destination": str(out)})
    assert first.output["ok"] == 4
    rows = index_rows(out)
    assert [r["id"] for r in rows] == ["C", "c.md", "c.txt", "c.txt.md"]
    assert len({r["summary_path"] for r in rows}) == 4
    written = {Path(r["summary_path"]).name: Path(r["summary_path"]).read_text() for r in rows}
    assert "summary of Upper case." in written["C.md"]
    assert "summary of The markdown one." in written["c.md.md"]
    assert "summary of The text one." in written["c.txt.md"]
    assert "summary of Named like a summary." in written["c.txt.md.md"]
    assert sorted(p.name for p in out.glob("*.md")) == sorted(written)

    await run_inline("nightly-summaries", {"source": str(source), "destination": str(out)})
    assert index_rows(out) == [{**r, "cache": "hit"} for r in rows]  # the same ids and files on every run


async def test_a_repeated_jsonl_id_is_an_item_error_not_an_overwrite(tmp_path, peer):
    peer.responder = lambda protocol, body: f"summary of {body['messages'][-1]['content']}"
    source = tmp_path / "docs.jsonl"
    lines = [
        {"id": "a", "text": "First."},
        {"id": "b", "text": "Second."},
        {"id": "./a", "text": "Third."},
        {"id": "../x", "text": "Out."},
    ]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    result = await run_inline("nightly-summaries", {"source": str(source), "destination": str(out), "max_failed_share": 0.6})
    assert result.output["ok"] == 2 and result.output["failed"] == 2
    rows = index_rows(out)
    assert [r["status"] for r in rows] == ["ok", "ok", "error", "error"]
    assert "used by an earlier line" in rows[2]["reason"] and "cannot be used as a file name" in rows[3]["reason"]
    assert "summary of First." in (out / "a.md").read_text()
    assert peer.count() == 2


@pytest.mark.slow
@pytest.mark.usefixtures("prefect")
async def test_flow_runs_go_through_the_same_roots(tmp_path, peer, monkeypatch):
    """A flow run (what REST and the UI start) is refused outside the roots, and no model hears of it."""
    peer.responder = lambda protocol, body: SUMMARY
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    write_docs(inbox, docs(2))
    (inbox / "env.txt").symlink_to("/proc/self/environ")
    confine_to(monkeypatch, inbox, out)

    single = await run_pipeline(
        "summarise-document", {"id": "env", "source": "/proc/self/environ", "destination": str(out)}, return_state=True
    )
    assert single.is_failed() and "/proc/self/environ" in single.message and "system folder" in single.message
    elsewhere = await run_pipeline("nightly-summaries", {"source": "/etc", "destination": str(out)}, return_state=True)
    assert elsewhere.is_failed() and "FRUGAL_FILE_ROOTS" in elsewhere.message
    assert peer.count() == 0

    batch = await run_pipeline(
        "nightly-summaries", {"source": str(inbox), "destination": str(out), "max_failed_share": 0.5}, return_state=True
    )
    assert batch.is_completed()
    rows = {r["id"]: r for r in index_rows(out)}
    assert rows["env"]["status"] == "error" and "system folder" in rows["env"]["reason"]
    assert peer.count() == 2 and "API_KEY" not in json.dumps([r.json for r in peer.requests])
