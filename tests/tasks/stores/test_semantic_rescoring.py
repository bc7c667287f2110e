"""The Redis index's rescoring of VSIM's candidates on their stored 8-bit vectors."""

from __future__ import annotations

import base64

import numpy as np

from tasks.stores.semantic_redis import cosines, packed


def _unit(rng: np.random.Generator) -> np.ndarray:
    vector = rng.standard_normal(512).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_each_candidate_is_rescored_on_its_own_vector_in_one_product():
    rng = np.random.default_rng(7)
    query = _unit(rng)
    stored = [_unit(rng) for _ in range(5)]
    stored[2] = query + 0.3 * stored[2]  # one close to the query
    stored[2] /= np.linalg.norm(stored[2])
    got = cosines([packed(v) for v in stored], query)
    for cosine, vector in zip(got, stored, strict=True):
        assert cosine is not None and abs(cosine - float(vector @ query)) < 0.01
    assert max(range(5), key=lambda i: got[i]) == 2


def test_a_vector_that_cannot_be_read_is_none_and_the_others_are_still_scored():
    rng = np.random.default_rng(8)
    query, good = _unit(rng), _unit(rng)
    short = base64.b64encode(bytes(100)).decode()  # not 512 dimensions
    got = cosines(["not base64!", packed(good), short, "", packed(np.zeros(512, dtype=np.float32))], query)
    assert got[0] is None and got[2] is None and got[3] is None and got[4] is None
    assert got[1] is not None and abs(got[1] - float(good @ query)) < 0.01
    assert cosines([], query) == []
