"""The closed step registry: what is in it, what it refuses, and that an extension
step registered through `register()` is usable from a pipeline like a built-in."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

import tasks.steps
from flows.language import registry
from flows.language.catalog import PROJECT_DIR
from flows.language.compiler import load_pipeline_file
from flows.orchestration.flow import run_inline
from tasks.core.errors import SpecError, StepError


class ShoutRequest(BaseModel):
    """Arguments of the test step."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="what to shout")
    times: int = Field(1, ge=1, le=5)


class Shout(BaseModel):
    text: str
    length: int


@task(name="shout", cache_policy=NO_CACHE, persist_result=False)
async def shout(request: ShoutRequest) -> Shout:
    loud = " ".join([request.text.upper() + "!"] * request.times)
    return Shout(text=loud, length=len(loud))


@task(name="whisper", cache_policy=NO_CACHE, persist_result=False)
def whisper(request: ShoutRequest) -> Shout:
    return Shout(text=request.text.lower(), length=len(request.text))


def _forget(*names: str) -> None:
    for name in names:
        registry._steps.pop(name, None)


@pytest.fixture
def shout_step() -> Iterator[str]:
    name = "shout_test"
    assert registry.get(name) is None
    registry.register(name, shout, ShoutRequest, summary="upper-case a text")
    yield name
    _forget(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_names_are_exactly_the_builtin_steps():
    assert registry.names() == sorted(step.name for step in tasks.steps.BUILTIN_STEPS)


def test_builtin_steps_are_prefect_tasks_with_strict_request_models():
    for name in (step.name for step in tasks.steps.BUILTIN_STEPS):
        step = registry.get(name)
        assert step is not None and step.name == name
        assert isinstance(step.task, Task)
        assert issubclass(step.request, BaseModel)
        assert step.request.model_config.get("extra") == "forbid", name
        assert step.model_call == (name in {"call_slm", "call_llm"}), name
        assert step.task.fn is step.fn  # made once, from the function the inline runner calls
        assert step.task is step.task


def test_a_plain_async_function_registers_and_a_model_call_keeps_its_result_cache():
    async def plain(request: ShoutRequest) -> Shout:
        return Shout(text=request.text.upper())

    try:
        step = registry.register("plain_shout", plain, ShoutRequest, summary="upper-case a text")
        assert step.fn is plain and isinstance(step.task, Task) and step.task.name == "plain_shout"
    finally:
        _forget("plain_shout")
    call_slm = registry.get("call_slm")
    assert type(call_slm.task.cache_policy).__name__ == "RequestKey" and call_slm.task.persist_result is True


@pytest.mark.parametrize("path", sorted((PROJECT_DIR / "deployments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_step_a_deployment_uses_is_registered(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    used = {node["uses"] for node in data["nodes"].values()}
    assert used, path
    assert used <= set(registry.names()), used - set(registry.names())
    load_pipeline_file(path)  # and the whole file compiles


def test_register_refuses_a_duplicate_name(shout_step):
    original = registry.get(shout_step)
    with pytest.raises(ValueError, match=r"already registered.*replace=True"):
        registry.register(shout_step, shout, ShoutRequest, summary="again")
    assert registry.get(shout_step) is original
    with pytest.raises(ValueError, match="already registered"):
        registry.register("hash_prompt", shout, ShoutRequest, summary="hijack")
    assert registry.get("hash_prompt").task.name == "hash_prompt"


def test_register_replaces_only_when_asked(shout_step):
    replaced = registry.register(shout_step, shout, ShoutRequest, summary="louder", replace=True)
    assert registry.get(shout_step) is replaced
    assert replaced.summary == "louder"


@pytest.mark.parametrize("name", ["my-step", "tasks.steps.shout", "1shout", "", "shout step"])
def test_register_refuses_a_name_that_is_not_an_identifier(name):
    try:
        with pytest.raises(ValueError, match="must be an identifier"):
            registry.register(name, shout, ShoutRequest, summary="bad name")
        assert name not in registry.names()
    finally:
        _forget(name)


async def test_a_registered_step_runs_from_a_pipeline(tmp_path, shout_step, peer):
    path = write(
        tmp_path,
        f"""\
        name: demo
        version: "1"
        inputs:
          word: {{type: string}}
        nodes:
          loud:
            uses: {shout_step}
            with:
              text: "{{{{ inputs.word }}}}"
              times: 2
          key:
            uses: hash_prompt
            with:
              prompt: "{{{{ loud.text }}}}"
        output:
          text: "{{{{ loud.text }}}}"
          length: "{{{{ loud.length }}}}"
        """,
    )
    pipeline = load_pipeline_file(path)
    assert pipeline.levels == [["loud"], ["key"]]  # the dependency came from the reference

    result = await run_inline(pipeline, {"word": "hi"})

    assert result.output == {"text": "HI! HI!", "length": 7}
    assert result.nodes["loud"].uses == shout_step
    assert result.nodes["loud"].status == "ran"
    assert result.nodes["key"].status == "ran"
    assert peer.count() == 0


def test_a_registered_step_has_its_arguments_checked_at_load_time(tmp_path, shout_step):
    path = write(
        tmp_path,
        f"""\
        name: demo
        version: "1"
        nodes:
          loud:
            uses: {shout_step}
            with:
              volume: 11
        output: "{{{{ loud }}}}"
        """,
    )
    with pytest.raises(SpecError) as caught:
        load_pipeline_file(path)
    message = str(caught.value)
    assert f"unknown argument 'volume' for step '{shout_step}'" in message
    assert f"'{shout_step}' takes: text, times" in message
    assert f"missing argument 'text' for step '{shout_step}'" in message


async def test_a_registered_step_gets_its_arguments_validated_at_run_time(tmp_path, shout_step):
    path = write(
        tmp_path,
        f"""\
        name: demo
        version: "1"
        nodes:
          loud:
            uses: {shout_step}
            with: {{text: hi, times: 9}}
        output: "{{{{ loud }}}}"
        """,
    )
    with pytest.raises(StepError, match=rf"node 'loud'.*invalid arguments for '{shout_step}'.*times"):
        await run_inline(load_pipeline_file(path), {})


def test_an_unregistered_step_is_unknown_again_after_cleanup(tmp_path):
    path = write(
        tmp_path,
        """\
        name: demo
        version: "1"
        nodes:
          loud:
            uses: shout_test
            with: {text: hi}
        output: "{{ loud }}"
        """,
    )
    with pytest.raises(SpecError, match="unknown step 'shout_test'"):
        load_pipeline_file(path)


async def test_a_sync_task_is_refused_at_registration_or_runs(tmp_path):
    name = "whisper_test"
    try:
        try:
            registry.register(name, whisper, ShoutRequest, summary="lower-case a text")
        except (TypeError, ValueError) as exc:
            assert "async" in str(exc)
            return
        path = write(
            tmp_path,
            f"""\
            name: demo
            version: "1"
            nodes:
              quiet:
                uses: {name}
                with: {{text: HI}}
            output: "{{{{ quiet.text }}}}"
            """,
        )
        result = await run_inline(load_pipeline_file(path), {})
        assert result.output == "hi"
    finally:
        _forget(name)


def test_every_setting_is_watched():
    """A variable the settings read but do not watch would be ignored once a snapshot exists."""
    from tasks.core.settings import WATCHED, BatchSettings, CacheSettings, LedgerSettings, LlmSettings, SlmSettings

    for model in (CacheSettings, BatchSettings, SlmSettings, LlmSettings, LedgerSettings):
        prefix = model.model_config["env_prefix"]
        for name, info in model.model_fields.items():
            aliases = getattr(info.validation_alias, "choices", None)
            names = list(aliases) if aliases else [prefix + name]
            assert any(str(n).upper() in WATCHED for n in names), f"{model.__name__}.{name}"
