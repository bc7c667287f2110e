"""The embedder seam: the bundled model, and Ollama / OpenAI-compatible endpoints over loopback peers."""

from __future__ import annotations

import socket

import httpx
import numpy as np
import ollama
import openai
import pytest

from tasks.core.settings import EmbedderSettings
from tasks.embedders import (
    BUNDLED_ID,
    EmbedderUnavailable,
    OllamaEmbedder,
    OpenAIEmbedder,
    bundled_embedder,
    configured_embedder,
    remembered,
)
from tests.conftest import API_KEY
from tests.peers.embed_routes import vector


def unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_peer_speaks_ollama_embed_to_the_official_client(peer):
    reply = ollama.Client(host=peer.url).embed(model="nomic-embed-text", input=["red apple", "green pear"])
    assert len(reply.embeddings) == 2
    assert np.allclose(reply.embeddings[0], vector("red apple"))


def test_peer_speaks_openai_embeddings_to_the_official_client(peer):
    client = openai.OpenAI(base_url=peer.url + "/v1", api_key=API_KEY)
    reply = client.embeddings.create(model="text-embedding-3-small", input=["red apple", "green pear"])  # base64 on the wire
    assert [item.index for item in reply.data] == [0, 1]
    assert np.allclose(reply.data[1].embedding, vector("green pear"), atol=1e-6)
    floats = client.embeddings.create(model="text-embedding-3-small", input="red apple", encoding_format="float")
    assert np.allclose(floats.data[0].embedding, vector("red apple"))


def test_ollama_embedder_returns_unit_rows_in_order(peer):
    embedder = OllamaEmbedder(peer.url, "nomic-embed-text")
    rows = embedder.embed(["one two", "three"])
    assert embedder.id == "ollama/nomic-embed-text"
    assert rows.shape == (2, 64)
    assert np.allclose(rows[0], unit(vector("one two")))
    assert peer.count("/api/embed") == 1


def test_openai_embedder_sends_the_key_and_returns_unit_rows(peer):
    embedder = OpenAIEmbedder(peer.url + "/v1", "text-embedding-3-small", API_KEY)
    rows = embedder.embed(["alpha beta", "gamma"])
    assert np.allclose(rows[1], unit(vector("gamma")))
    assert peer.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"


def test_openai_embedder_refused_key_is_unavailable_without_the_key(peer):
    peer.api_key = API_KEY
    with pytest.raises(EmbedderUnavailable) as caught:
        OpenAIEmbedder(peer.url + "/v1", "text-embedding-3-small", "sk-wrong-key-000").embed(["x"])
    assert "401" in str(caught.value)
    assert "sk-wrong" not in str(caught.value)


def test_server_error_and_dead_host_are_embedder_unavailable(peer):
    peer.fail_next(500)
    with pytest.raises(EmbedderUnavailable, match="HTTP 500"):
        OllamaEmbedder(peer.url, "nomic-embed-text").embed(["x"])
    with pytest.raises(EmbedderUnavailable, match="did not answer"):
        OllamaEmbedder(f"127.0.0.1:{closed_port()}", "nomic-embed-text", client=httpx.Client(timeout=2)).embed(["x"])


def test_settings_choose_the_embedder_once_per_configuration(peer, monkeypatch):
    assert configured_embedder().id == BUNDLED_ID
    monkeypatch.setenv("FRUGAL_EMBEDDER", "ollama")
    first = configured_embedder()
    assert first is configured_embedder()
    assert first.id == "ollama/nomic-embed-text"
    assert np.allclose(first.embed(["hello there"])[0], unit(vector("hello there")))  # OLLAMA_HOST: the small tier's host
    monkeypatch.setenv("FRUGAL_EMBEDDER", "openai")
    monkeypatch.setenv("FRUGAL_EMBEDDER_MODEL", "e5")
    assert EmbedderSettings().kind == "openai"
    assert configured_embedder().id == "openai/e5"
    assert configured_embedder().embed(["a"]).shape == (1, 64)  # OPENAI_BASE_URL and OPENAI_API_KEY: the large tier's


def test_ollama_embedder_defaults_to_the_first_of_ollama_hosts(peer, monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.setenv("OLLAMA_HOSTS", f"{peer.url},http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("FRUGAL_EMBEDDER", "ollama")
    embedder = configured_embedder()
    assert np.allclose(embedder.embed(["hello there"])[0], unit(vector("hello there")))


def test_bundled_embedder_is_multilingual_and_loaded_once():
    embedder = bundled_embedder()
    assert embedder is bundled_embedder()
    assert embedder.id == BUNDLED_ID
    rows = embedder.embed(["Where is the train station?", "¿Dónde está la estación de tren?", "Prove the theorem."])
    assert rows.shape == (3, 512)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert rows[0] @ rows[1] > rows[0] @ rows[2] + 0.2


def test_a_recent_text_is_embedded_once_per_embedder(peer):
    sent: list[bytes] = []
    client = httpx.Client(event_hooks={"request": [lambda request: sent.append(request.read())]})
    embedder = OllamaEmbedder(peer.url, "nomic-embed-text", client=client)
    first = remembered(embedder, ["memo red apple", "memo green pear"])
    again = remembered(embedder, ["memo green pear", "memo blue plum", "memo blue plum"])
    assert len(sent) == 2 and b"memo blue plum" in sent[1] and b"memo green pear" not in sent[1]  # only the new text
    assert np.allclose(again[0], first[1]) and np.allclose(again[1], unit(vector("memo blue plum")))
    assert np.allclose(again[2], again[1])
    other = OllamaEmbedder(peer.url, "another-model", client=client)
    remembered(other, ["memo red apple"])
    assert len(sent) == 3  # vectors are kept per embedder id: another model embeds the text again
