"""Secrets never reach a message: each form a provider may echo a key in, and URL credentials."""

from __future__ import annotations

import base64
import logging
import urllib.parse

import pytest

from tasks.core.errors import ModelAuthError, ModelRequestError, ModelUnavailable
from tasks.core.redact import public_url, redact, url_secrets
from tasks.steps.call_llm import LlmRequest, answer_large
from tests.tasks.providers.test_call_llm import assert_no_key

KEY = "sk-proj-Ab/c+d=e0123456789xyZ"


@pytest.mark.parametrize(
    "echo",
    [
        pytest.param(KEY, id="as-is"),
        pytest.param(urllib.parse.quote(KEY, safe=""), id="url-encoded"),
        pytest.param(urllib.parse.quote_plus(KEY), id="form-encoded"),
        pytest.param(" ".join(KEY), id="spaced"),
        pytest.param("-".join(KEY), id="dashed"),
        pytest.param(KEY.upper(), id="upper-case"),
        pytest.param(KEY[:6] + "*" * 12 + KEY[-4:], id="masked"),
        pytest.param(KEY[:5] + "..." + KEY[-4:], id="elided"),
        pytest.param("••••••" + KEY[-6:], id="tail-only"),
        pytest.param(base64.b64encode(KEY.encode()).decode(), id="base64"),
    ],
)
def test_each_echoed_form_of_a_key_is_redacted(echo):
    text = f"invalid key '{echo}' for this project"
    out = redact(text, KEY)
    assert echo not in out
    assert out.startswith("invalid key '") and out.endswith("' for this project")
    assert "***" in out


def test_text_without_the_key_is_kept():
    text = "Rate limit reached... retry in 20 s; model gpt-4o-mini; see https://platform.openai.com/docs"
    assert redact(text, KEY) == text


def test_url_credentials():
    url = "https://alice:s3cr%40t-pass@llm.example.com:8443/v1?x=1"
    assert public_url(url) == "https://llm.example.com:8443/v1?x=1"
    assert public_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    secrets = url_secrets(url)
    assert "s3cr@t-pass" in secrets and "alice:s3cr@t-pass" in secrets
    header = "Basic " + base64.b64encode(b"alice:s3cr@t-pass").decode()
    out = redact(f"upstream said: bad Authorization {header}; password s3cr@t-pass", *secrets)
    assert "s3cr@t-pass" not in out and base64.b64encode(b"alice:s3cr@t-pass").decode() not in out


async def test_a_provider_echoing_the_key_url_encoded_is_redacted(peer, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    encoded = urllib.parse.quote(KEY, safe="")
    peer.fail_next(401, body={"error": {"message": f"no such key: {encoded} (or {' '.join(KEY)})"}})
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ModelAuthError) as caught:
            await answer_large(LlmRequest(prompt="hi"))
    assert "no such key" in str(caught.value)
    for form in (KEY, encoded, " ".join(KEY)):
        assert_no_key(caught.value, caplog, form)


async def test_base_url_credentials_never_reach_errors_or_logs(peer, monkeypatch, caplog):
    password = "hunter2-very-secret"
    host = peer.url.removeprefix("http://")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://proxyuser:{password}@{host}/v1")
    peer.fail_next(400, body={"error": {"message": f"bad request from proxyuser:{password}"}})
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ModelRequestError) as caught:
            await answer_large(LlmRequest(prompt="hi"))
    assert_no_key(caught.value, caplog, password)
    # the credentials went as Basic auth, not in the URL
    assert peer.requests[0].headers["authorization"].startswith("Basic ")
    # a base URL that cannot be reached is named without its credentials
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://proxyuser:{password}@127.0.0.1:9/v1")
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ModelUnavailable) as unreachable:
            await answer_large(LlmRequest(prompt="hi again"))
    assert "http://127.0.0.1:9/v1" in str(unreachable.value)
    assert_no_key(unreachable.value, caplog, password)
    assert_no_key(unreachable.value, caplog, "proxyuser:")
