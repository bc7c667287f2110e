"""Prices and token counts: the price database, overrides, self-hosted models, unknown models,
and the usage fields of each provider (cached tokens included), with exact figures."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price

from tasks.core.completion import Usage
from tasks.core.errors import ConfigError
from tasks.core.pricing import PriceOverride, cost_of, rates_for
from tasks.providers.anthropic import mark_cache_prefix, min_cache_tokens
from tasks.providers.tiers import reference_model
from tasks.steps.call_llm import LlmRequest, answer_large
from tasks.steps.call_slm import SlmRequest, answer_small

ANTHROPIC_KEY = "sk-ant-api03-test-abcdef0123456789"
D = Decimal


def usage(i: int, o: int, read: int = 0, write: int = 0) -> Usage:
    return Usage(input_tokens=i, output_tokens=o, cached_input_tokens=read, cache_write_tokens=write)


# -- the price database ------------------------------------------------------------------


def test_openai_price_with_cached_input():
    # gpt-4o-mini: $0.15 in, $0.075 cached in, $0.60 out per million tokens
    assert cost_of("openai/gpt-4o-mini", usage(1000, 100, read=200)) == D("0.000195")  # 800*.15 + 200*.075 + 100*.6
    assert cost_of("openai/gpt-4o-mini", usage(1000, 100)) == D("0.00021")


def test_anthropic_price_with_cache_reads_and_writes():
    # claude-haiku-4-5: $1 in, $0.10 cache read, $1.25 5-minute cache write, $5 out per million tokens
    cost = cost_of("anthropic/claude-haiku-4-5", usage(3000, 100, read=2000, write=500))
    assert cost == D("0.001825")  # 500*1 + 2000*0.1 + 500*1.25 + 100*5
    assert rates_for("anthropic/claude-haiku-4-5").full_cost(usage(3000, 100, read=2000, write=500)) == D("0.0035")


@pytest.mark.parametrize(
    ("model", "provider", "u"),
    [
        ("gpt-4o-mini", "openai", usage(12_345, 678, read=1_024)),
        ("gpt-4o", "openai", usage(5_000, 2_000, read=4_096)),
        ("claude-haiku-4-5", "anthropic", usage(3_000, 100, read=2_000, write=500)),
        ("claude-sonnet-4-5", "anthropic", usage(250_000, 1_000, read=100_000, write=20_000)),  # above the 200K tier
        ("claude-sonnet-4-5", "anthropic", usage(150_000, 1_000, read=100_000)),
    ],
)
def test_our_arithmetic_matches_genai_prices(model, provider, u):
    theirs = calc_price(
        GenaiUsage(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cached_input_tokens,
            cache_write_tokens=u.cache_write_tokens,
        ),
        model,
        provider_id=provider,
    ).total_price
    assert cost_of(f"{provider}/{model}", u) == theirs


def test_tiered_price_above_200k_input_tokens():
    # claude-sonnet-4-5: $3/$15 up to 200K prompt tokens, $6/$22.50 above, for every token of the call
    assert cost_of("anthropic/claude-sonnet-4-5", usage(200_000, 1_000)) == D("0.615")
    assert cost_of("anthropic/claude-sonnet-4-5", usage(200_001, 1_000)) == D("1.222506")


def test_self_hosted_models_are_free_by_default():
    assert cost_of("ollama/llama3.2:1b", usage(10_000, 1_000)) == 0
    assert cost_of("local/smollm2-135m", usage(10_000, 1_000)) == 0
    assert rates_for("ollama/llama3.2:1b").source == "self-hosted"


def test_unknown_model_has_no_price_and_says_so_once(caplog):
    with caplog.at_level(logging.WARNING, logger="frugal"):
        assert cost_of("openai/gpt-nonexistent-9", usage(10, 5)) is None
        assert cost_of("openai/gpt-nonexistent-9", usage(10, 5)) is None
    said = [r.getMessage() for r in caplog.records if "gpt-nonexistent-9" in r.getMessage()]
    assert len(said) == 1
    assert "cost null" in said[0] and "FRUGAL_PRICE_OVERRIDES" in said[0]


# -- overrides ---------------------------------------------------------------------------


def test_overrides_exact_id_beats_glob_and_hourly_cost_is_shared_by_calls(monkeypatch):
    monkeypatch.setenv(
        "FRUGAL_PRICE_OVERRIDES",
        '{"ollama/*": {"hourly_usd": "3.60", "calls_per_hour": 3600},'
        ' "ollama/big:70b": {"input_mtok": "0.5", "output_mtok": "1.5"},'
        ' "openai/gpt-4o-mini": {"input_mtok": "1", "output_mtok": "2"}}',
    )
    assert cost_of("ollama/llama3.2:1b", usage(10_000, 1_000)) == D("0.001")  # $3.60 an hour / 3,600 calls
    assert cost_of("ollama/big:70b", usage(1_000_000, 1_000_000)) == D("2.0")
    assert cost_of("openai/gpt-4o-mini", usage(1_000_000, 1_000_000)) == D("3")  # the override wins over the database
    assert rates_for("openai/gpt-4o-mini").source == "price override"


def test_prices_file_yaml_and_environment_wins(monkeypatch, tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text('openai/my-vllm:\n  input_mtok: "0.2"\n  output_mtok: "0.4"\nollama/*: {per_call: "0.0005"}\n')
    monkeypatch.setenv("FRUGAL_PRICES_FILE", str(prices))
    assert cost_of("openai/my-vllm", usage(1_000_000, 1_000_000)) == D("0.6")
    assert cost_of("ollama/llama3.2:1b", usage(1, 1)) == D("0.0005")
    monkeypatch.setenv("FRUGAL_PRICE_OVERRIDES", '{"openai/my-vllm": {}}')
    assert cost_of("openai/my-vllm", usage(1_000_000, 1_000_000)) == 0


def test_bad_overrides_name_the_variable_and_the_model(monkeypatch):
    monkeypatch.setenv("FRUGAL_PRICE_OVERRIDES", "{not json")
    with pytest.raises(ConfigError, match="FRUGAL_PRICE_OVERRIDES is not valid JSON"):
        rates_for("openai/gpt-4o-mini")
    monkeypatch.setenv("FRUGAL_PRICE_OVERRIDES", '{"ollama/*": {"hourly_usd": "2"}}')
    with pytest.raises(ConfigError, match=r"'ollama/\*'.*calls_per_hour"):
        rates_for("ollama/llama3.2:1b")
    monkeypatch.setenv("FRUGAL_PRICE_OVERRIDES", '{"ollama/*": {"input_mtok": "-1"}}')
    with pytest.raises(ConfigError, match="input_mtok"):
        rates_for("ollama/llama3.2:1b")


def test_reference_model_defaults_to_the_large_tier(peer, monkeypatch):
    assert reference_model() == "openai/gpt-test"
    monkeypatch.setenv("FRUGAL_REFERENCE_MODEL", "anthropic/claude-sonnet-4-5")
    assert reference_model() == "anthropic/claude-sonnet-4-5"


def test_price_override_validation():
    with pytest.raises(ValueError, match="calls_per_hour"):
        PriceOverride(calls_per_hour=10)
    assert PriceOverride(per_call="0.01", hourly_usd="1", calls_per_hour=4).rates("m", "x").per_call == D("0.26")


# -- every answer carries its cost -------------------------------------------------------


async def test_openai_answer_reads_cached_tokens_and_prices_them(peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-4o-mini")
    peer.prompt_cache = True
    peer.responder = lambda protocol, body: "Answer"
    system = " ".join(["policy"] * 1100)
    first = await answer_large(LlmRequest(system=system, prompt="Question one"))
    second = await answer_large(LlmRequest(system=system, prompt="Question two"))
    assert first.usage == Usage(input_tokens=1102, output_tokens=1)
    assert first.cost_usd == D("0.0001659") == first.uncached_cost_usd  # 1102*.15 + 1*.6 per million
    # 1,101 shared tokens: 1,024 cached (OpenAI caches in steps of 128 from 1,024), priced at $0.075
    assert second.usage == Usage(input_tokens=1102, output_tokens=1, cached_input_tokens=1024)
    assert second.cost_usd == D("0.0000891")  # 78*.15 + 1024*.075 + 1*.6 per million
    assert second.uncached_cost_usd == D("0.0001659")


async def test_anthropic_marks_a_long_prefix_and_prices_cache_writes_and_reads(peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", peer.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "claude-sonnet-4-5")
    peer.prompt_cache = True
    peer.responder = lambda protocol, body: "Answer"
    system = " ".join(["lorem"] * 1200)  # ~1,800 tokens by the 4-characters rule: above Sonnet's 1,024
    first = await answer_large(LlmRequest(system=system, prompt="Question one please", cache_prefix=True))
    second = await answer_large(LlmRequest(system=system, prompt="Question two please", cache_prefix=True))
    body = peer.requests[0].json
    assert body["system"] == [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    assert body["messages"] == [{"role": "user", "content": "Question one please"}]
    # Anthropic's input_tokens leave out cache reads and writes; ours count the whole prompt
    assert first.usage == Usage(input_tokens=1203, output_tokens=1, cache_write_tokens=1200)
    assert second.usage == Usage(input_tokens=1203, output_tokens=1, cached_input_tokens=1200)
    # $3 in, $3.75 cache write, $0.30 cache read, $15 out per million tokens
    assert first.cost_usd == D("0.004524")  # 3*3 + 1200*3.75 + 1*15
    assert second.cost_usd == D("0.000384")  # 3*3 + 1200*0.3 + 1*15
    assert first.uncached_cost_usd == second.uncached_cost_usd == D("0.003624")  # 1203*3 + 1*15


async def test_anthropic_prefix_below_the_model_minimum_is_not_marked(peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", peer.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "claude-haiku-4-5")  # caches prefixes of 4,096 tokens or more
    peer.prompt_cache = True
    system = " ".join(["lorem"] * 1200)
    answer = await answer_large(LlmRequest(system=system, prompt="Question", cache_prefix=True))
    assert peer.requests[0].json["system"] == system
    assert answer.usage.cache_write_tokens == 0


def test_cache_minimums_by_model_and_marking_the_last_prefix_message():
    assert [min_cache_tokens(m) for m in ("claude-opus-4-5", "claude-haiku-4-5", "claude-3-5-haiku-latest")] == [4096] * 2 + [
        2048
    ]
    assert [min_cache_tokens(m) for m in ("claude-sonnet-4-6", "claude-sonnet-4-5", "claude-opus-4-1")] == [2048, 1024, 1024]
    document = "word " * 5000
    body = {"system": "Be brief.", "messages": [{"role": "user", "content": document}, {"role": "user", "content": "Q?"}]}
    assert mark_cache_prefix(body, "claude-sonnet-4-5")
    assert body["system"] == "Be brief."
    assert body["messages"][0]["content"] == [{"type": "text", "text": document, "cache_control": {"type": "ephemeral"}}]
    assert body["messages"][1] == {"role": "user", "content": "Q?"}


async def test_small_answer_cost_and_node_price_override(peer):
    peer.responder = lambda protocol, body: "four"
    free = await answer_small(SlmRequest(prompt="What is 2+2?"))
    assert (free.cost_usd, free.usage) == (D(0), Usage(input_tokens=3, output_tokens=1))
    priced = await answer_small(SlmRequest(prompt="What is 2+2?", price={"input_mtok": "100", "output_mtok": "200"}))
    assert priced.cost_usd == D("0.0005")  # 3*100 + 1*200 per million


async def test_server_without_usage_is_counted_and_marked_estimated(peer, monkeypatch):
    monkeypatch.setenv("FRUGAL_LLM_MODEL", "gpt-4o-mini")
    from tests.peers import openai_routes

    monkeypatch.setattr(openai_routes, "usage_of", lambda *a: None)  # a server that sends "usage": null
    peer.responder = lambda protocol, body: "twelve characters"
    answer = await answer_large(LlmRequest(system="Be brief.", prompt="Count these characters"))
    assert answer.usage == Usage(input_tokens=9, output_tokens=5, estimated=True)  # ceil(9/4) + ceil(22/4); ceil(17/4)
    assert answer.cost_usd == D("0.00000435")
