"""The `frugal` command as a user runs it: a subprocess with a minimal environment,
both model tiers on the loopback peer, inline runs only."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flows.language.catalog import PROJECT_DIR
from tests.conftest import API_KEY

FRUGAL = Path(sys.executable).parent / "frugal"
ACCOUNT = re.compile(r"^cache=(hit|miss|bypass|error) route=(small|large) model=\S+ tokens=\d+/\d+ latency=\d+ms\b")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def cli_env(tmp_path: Path, peer) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "FRUGAL_DATA_DIR": str(tmp_path / "data"),
        "FRUGAL_SLM_PROVIDER": "ollama",
        "OLLAMA_HOST": peer.url,
        "FRUGAL_LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": peer.url + "/v1",
        "OPENAI_API_KEY": API_KEY,
        "FRUGAL_LLM_MODEL": "gpt-test",
    }


def frugal(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert FRUGAL.is_file(), f"the console script is not installed at {FRUGAL}"
    return subprocess.run([str(FRUGAL), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def assert_one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Non-zero exit, no traceback, and exactly one `error:` line, which is returned."""
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert API_KEY not in proc.stdout + proc.stderr
    return errors[0]


def test_run_prints_the_answer_then_a_hit_on_the_second_run(cli_env, peer, tmp_path):
    peer.responder = lambda protocol, body: "Paris is the capital of France."

    first = frugal(cli_env, "run", "answer", "-i", "prompt=What is the capital of France?", "--inline", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "Paris is the capital of France.\n"
    account = first.stderr.strip().splitlines()[-1]
    assert ACCOUNT.match(account), first.stderr
    assert account.startswith("cache=miss route=small model=ollama/llama3.2:1b tokens=")
    assert "tokens=0/0" not in account

    second = frugal(cli_env, "run", "answer", "-i", "prompt=What is the capital of France?", "--inline", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "Paris is the capital of France.\n"
    account = second.stderr.strip().splitlines()[-1]
    assert ACCOUNT.match(account), second.stderr
    assert account.startswith("cache=hit route=small model=ollama/llama3.2:1b ")
    assert peer.count("/api/chat") == 1
    assert API_KEY not in first.stderr + second.stderr


def test_run_json_prints_the_whole_result(cli_env, peer, tmp_path):
    peer.responder = lambda protocol, body: "A long answer."
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Compare {{ these }} two designs step by step.", encoding="utf-8")

    proc = frugal(
        cli_env, "run", "answer", "--input", f"prompt=@{prompt}", "-i", "max_tokens=64", "--inline", "--json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["pipeline"] == "answer"
    assert result["mode"] == "inline"
    assert result["output"]["text"] == "A long answer."
    assert result["output"]["route"] == "large"
    assert result["output"]["model"] == "openai/gpt-test"
    assert result["output"]["cache"] == "miss"
    assert set(result["nodes"]) == {"key", "lookup", "route", "small", "small_check", "large", "large_check", "store"}
    assert result["nodes"]["small"]["status"] == "skipped"
    assert result["nodes"]["large"]["status"] == "ran"
    assert result["nodes"]["large"]["model"] == "openai/gpt-test"
    sent = [r.json for r in peer.requests if r.path == "/v1/chat/completions"]
    assert len(sent) == 1
    assert sent[0]["messages"][-1]["content"] == "Compare {{ these }} two designs step by step."
    assert sent[0]["max_tokens"] == 64


def test_validate_accepts_the_repository_pipelines(cli_env, tmp_path):
    proc = frugal(cli_env, "validate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("answer", "sentiment"):
        assert f"ok: {PROJECT_DIR / 'deployments' / name}.yaml" in proc.stdout


def test_validate_reports_every_error_of_a_broken_file(cli_env, tmp_path):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "good.yaml").write_text((PROJECT_DIR / "deployments" / "sentiment.yaml").read_text())
    broken = folder / "broken.yaml"
    broken.write_text(
        textwrap.dedent(
            """\
            name: broken
            version: "1"
            nodes:
              key:
                uses: hash_promt
              route:
                uses: classify
                with:
                  text: "{{ inputs.prompt }}"
            output: "{{ route }}"
            """
        )
    )
    proc = frugal(cli_env, "validate", str(folder), cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, proc.stdout
    assert errors[0].startswith(f"error: {broken}:5, node 'key', field 'uses': unknown step 'hash_promt'")
    assert errors[1].startswith(f"error: {broken}:9, node 'route', field 'with.text': reference to unknown input 'prompt'")
    assert all("(fix: " in line for line in errors)
    assert f"ok: {folder / 'good.yaml'}" in proc.stdout
    assert "1 of 2 pipeline file(s) have errors" in proc.stdout


def test_unknown_pipeline_lists_the_known_ones(cli_env, peer, tmp_path):
    proc = frugal(cli_env, "run", "answr", "-i", "prompt=hi", "--inline", cwd=tmp_path)
    line = assert_one_error_line(proc)
    assert "unknown pipeline 'answr'" in line
    assert "known: answer, nightly-summaries, sentiment, summarise-document" in line
    assert proc.stdout == ""
    assert peer.count() == 0


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ((), "missing required input 'prompt'"),
        (("-i", "prompt=hi", "-i", "max_tokens=many"), "input 'max_tokens' must be integer, got 'many'"),
    ],
    ids=["missing", "ill-typed"],
)
def test_input_errors_are_one_line_and_call_no_model(cli_env, peer, tmp_path, inputs, words):
    proc = frugal(cli_env, "run", "answer", *inputs, "--inline", cwd=tmp_path)
    line = assert_one_error_line(proc)
    assert words in line
    assert proc.stdout == ""
    assert peer.count() == 0


def test_unreachable_models_are_one_line(cli_env, tmp_path):
    dead = f"http://127.0.0.1:{closed_port()}"
    env = {**cli_env, "OLLAMA_HOST": dead, "OPENAI_BASE_URL": dead + "/v1", "FRUGAL_LLM_MAX_ATTEMPTS": "1"}
    proc = frugal(env, "run", "answer", "-i", "prompt=hi", "--inline", cwd=tmp_path)
    line = assert_one_error_line(proc)
    assert "node 'large'" in line
    assert "cannot be reached" in line
    assert proc.stdout == ""


def test_debug_shows_the_traceback(cli_env, tmp_path):
    proc = frugal(cli_env, "--debug", "run", "answr", "--inline", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "PipelineNotFound: unknown pipeline 'answr'" in proc.stderr


def test_help(cli_env, tmp_path):
    proc = frugal(cli_env, "--help", cwd=tmp_path)
    assert proc.returncode == 0
    for command in ("run", "validate", "list", "serve", "--debug"):
        assert command in proc.stdout


def test_list_shows_the_pipelines_and_their_inputs(cli_env, tmp_path):
    proc = frugal(cli_env, "list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert set(rows) == {"answer", "nightly-summaries", "sentiment", "summarise-document"}
    assert "prompt:string" in rows["answer"] and "max_tokens?:integer" in rows["answer"]
    assert "text:string" in rows["sentiment"]


def test_list_reports_a_bad_file_beside_the_good_ones(cli_env, tmp_path):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "good.yaml").write_text(
        "name: good\nversion: '1'\ninputs: {text: {type: string}}\n"
        "nodes: {k: {uses: hash_prompt, with: {prompt: '{{ inputs.text }}'}}}\noutput: '{{ k }}'\n"
    )
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(12)
    )
    (folder / "bomb.yaml").write_text(bomb)
    proc = frugal({**cli_env, "FRUGAL_PIPELINES_DIR": str(folder)}, "list", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.split()[0] == "good"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bomb.yaml" in errors[0]


def nightly_inputs(tmp_path: Path, n: int) -> list[str]:
    """Documents in ./data/inbox of the run's working directory (tmp_path): inside the default FRUGAL_FILE_ROOTS."""
    source = tmp_path / "data" / "inbox"
    source.mkdir(parents=True)
    for i in range(n):
        (source / f"doc{i}.txt").write_text(f"Document {i} says a few words about topic {i}.")
    return ["-i", "source=data/inbox", "-i", "destination=data/summaries", "--inline"]


def test_a_batch_shows_its_progress_as_lines_when_stderr_is_not_a_terminal(cli_env, peer, tmp_path):
    peer.responder = lambda protocol, body: "A summary."
    env = {**cli_env, "FRUGAL_BATCH_CHUNK_SIZE": "2"}
    proc = frugal(env, "run", "nightly-summaries", *nightly_inputs(tmp_path, 5), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("nightly-summaries: summaries:")]
    assert lines and lines[-1] == "nightly-summaries: summaries: 5/5 items (100%)", proc.stderr
    assert json.loads(proc.stdout)["ok"] == 5
    account = proc.stderr.strip().splitlines()[-1]
    assert account.startswith("cache=miss:5 route=small:5 model=ollama/llama3.2:1b:5 tokens=- latency="), account


def test_a_batch_draws_a_progress_bar_on_a_terminal(cli_env, peer, tmp_path):
    import pty

    peer.responder = lambda protocol, body: "A summary."
    env = {**cli_env, "FRUGAL_BATCH_CHUNK_SIZE": "2", "COLUMNS": "100", "TERM": "xterm"}
    main, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(FRUGAL), "run", "nightly-summaries", *nightly_inputs(tmp_path, 5)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
        )
        os.close(terminal)
        drawn, deadline = b"", time.monotonic() + 60
        while time.monotonic() < deadline:
            if not select.select([main], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            try:
                data = os.read(main, 4096)
            except OSError:  # the terminal's other end closed: the process is gone
                break
            if not data:
                break
            drawn += data
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    finally:
        os.close(main)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.decode("utf-8", "replace"))
    assert proc.returncode == 0, screen
    assert "nightly-summaries: summaries" in screen and "5/5" in screen, screen
    assert "━" in screen, "a bar, not lines"
    assert json.loads(out)["ok"] == 5


def test_run_is_inline_unless_a_prefect_server_is_configured(cli_env, peer, tmp_path):
    peer.responder = lambda protocol, body: "Paris."
    proc = frugal(cli_env, "run", "answer", "-i", "prompt=Capital of France?", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mode"] == "inline"
    assert "Prefect server" not in proc.stderr and "telemetry" not in proc.stderr
    assert not list((tmp_path / "prefect").glob("*.db"))  # no temporary server, no Prefect database

    proc = frugal(cli_env, "run", "--help", cwd=tmp_path)
    assert "the default unless PREFECT_API_URL is set" in " ".join(proc.stdout.split())


def test_help_does_not_import_prefect(cli_env, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "flows.cli.main", "--help"],
        env={**cli_env, "PYTHONPATH": str(PROJECT_DIR)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "usage: frugal" in proc.stdout, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "argparse" in imported
    assert not {name for name in imported if name.split(".")[0] == "prefect"}


def test_an_inline_run_does_not_import_prefect(cli_env, peer, tmp_path):
    """Steps are plain functions, made Prefect tasks only for orchestrated runs: a cold inline run does not
    pay for importing Prefect (~1.5 s of a ~2.4 s cache hit)."""
    peer.responder = lambda protocol, body: "Paris."
    for cache in ("miss", "hit"):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "flows.cli.main", "run", "answer", "-i", "prompt=Capital of France?"],
            env={**cli_env, "PYTHONPATH": str(PROJECT_DIR)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0 and f"cache={cache}" in proc.stderr, proc.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert "flows.engine.executor" in imported
        assert not {name for name in imported if name.split(".")[0] == "prefect"}


@pytest.mark.parametrize("value", ["-5", "nan", "soon"])
def test_call_refuses_a_timeout_that_is_not_seconds(cli_env, tmp_path, value):
    proc = frugal(cli_env, "call", "answer", "-i", "prompt=hi", "--timeout", value, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"argument --timeout: {value}" in proc.stderr.splitlines()[-1] or f"'{value}'" in proc.stderr.splitlines()[-1]
    assert "seconds" in proc.stderr.splitlines()[-1]


def test_report_names_the_reference_model_of_its_entries(cli_env, peer, tmp_path):
    peer.responder = lambda protocol, body: "Paris."
    then = {**cli_env, "FRUGAL_REFERENCE_MODEL": "openai/gpt-4o"}
    assert frugal(then, "run", "answer", "-i", "prompt=Capital of France?", cwd=tmp_path).returncode == 0
    now = {**cli_env, "FRUGAL_REFERENCE_MODEL": "openai/gpt-4o-mini"}
    proc = frugal(now, "report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Reference model: openai/gpt-4o (counterfactual" in proc.stdout, proc.stdout


FAILING = """
name: fails
version: "1"
description: Fails on purpose.
inputs:
  data: {type: object, default: {}}
nodes:
  key:
    uses: hash_prompt
    with: {prompt: "{{ inputs.data.missing }}"}
output: "{{ key }}"
"""


@pytest.mark.slow
@pytest.mark.parametrize("debug", [False, True], ids=["one-line", "debug"])
def test_an_orchestrated_failure_is_one_line(cli_env, tmp_path, debug):
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "fails.yaml").write_text(FAILING)
    env = {**cli_env, "FRUGAL_PIPELINES_DIR": str(pipelines)}
    args = ["--debug"] * debug + ["run", "fails", "--orchestrated", "-i", 'data={"present": 1}']
    proc = subprocess.run([str(FRUGAL), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    if debug:
        assert proc.stderr.count("Traceback (most recent call last)") >= 2, proc.stderr
        return
    line = assert_one_error_line(proc)
    assert line == "error: node 'key': with: prompt: 'dict object' has no attribute 'missing'"
    assert len(proc.stderr.splitlines()) < 12, proc.stderr
    assert "telemetry" not in proc.stderr


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has stopped; only its exit status is left


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_run_leaves_no_prefect_server(cli_env, peer, tmp_path):
    import threading

    release = threading.Event()
    peer.responder = lambda protocol, body: "late" if release.wait(60) else "too late"
    proc = subprocess.Popen(
        [str(FRUGAL), "run", "answer", "--orchestrated", "-i", "prompt=Capital of France?"],
        env=cli_env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        server = None
        for line in proc.stderr:
            if found := re.search(r"a temporary Prefect server \(pid (\d+),", line):
                server = int(found.group(1))
                break
        assert server is not None and _alive(server)
        deadline = time.monotonic() + 120
        while not peer.count() and time.monotonic() < deadline:  # the run is waiting on its model call
            time.sleep(0.05)
        assert peer.count(), "the run never called the model"
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(server), f"the temporary Prefect server {server} outlived the killed run"
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_reader_that_stops_early_ends_the_command_quietly(cli_env, peer, tmp_path):
    """`frugal ... | head`: the answer is larger than the pipe; the reader leaves after a few bytes."""
    peer.responder = lambda protocol, body: " ".join(f"word{i}" for i in range(40_000))
    proc = subprocess.Popen(
        [str(FRUGAL), "run", "answer", "-i", "prompt=Count for me", "-i", "max_tokens=32768", "--json"],
        env=cli_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.read(10)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and "error" not in err and "Traceback" not in err, err


def test_gateway_refuses_a_keys_file_that_is_not_there(cli_env, tmp_path):
    error = assert_one_error_line(frugal(cli_env, "gateway", "--keys-file", str(tmp_path / "keys.yaml"), cwd=tmp_path))
    assert "keys.yaml: no such file" in error and "frugal gateway-key add" in error


def test_a_one_shot_run_records_its_audit_before_it_exits(cli_env, peer, tmp_path):
    """`frugal run` with every small answer audited: the process ends, the audit (paid for) is in
    the ledger, not dropped by the interpreter's shutdown."""
    from flows.ledger.audit import RUBRIC

    def respond(protocol: str, body: dict) -> str:
        if any(RUBRIC in str(m.get("content")) for m in body.get("messages", [])):
            return "agree"
        return "Berlin."

    peer.responder = respond
    env = {**cli_env, "FRUGAL_AUDIT_RATE": "1", "FRUGAL_LLM_MODEL": "gpt-4o-mini"}
    started = time.monotonic()
    proc = frugal(env, "run", "answer", "-i", "prompt=What is the capital of Germany?", cwd=tmp_path)
    assert proc.returncode == 0 and "dropped" not in proc.stderr and "failed" not in proc.stderr, proc.stderr
    assert time.monotonic() - started < 8  # not the 10 s exit wait
    report = frugal(env, "report", "--json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    audits = json.loads(report.stdout)["total"]["audits"]
    assert (audits["n"], audits["agreed"]) == (1, 1), audits
