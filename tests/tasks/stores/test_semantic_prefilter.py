"""The embedded index's search: a binary prefilter then exact rescoring finds what the exact search finds."""

from __future__ import annotations

import numpy as np

from tasks.stores.semantic_sqlite import RESCORED, _Group, signs


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def _near(rng: np.random.Generator, vector: np.ndarray, cosine: float) -> np.ndarray:
    noise = rng.standard_normal(vector.shape[0]).astype(np.float32)
    noise -= (noise @ vector) * vector
    return _unit(cosine * vector + np.sqrt(1 - cosine**2) * _unit(noise))


def test_the_prefilter_finds_the_exact_nearest_in_a_large_group():
    rng = np.random.default_rng(7)
    rows = _unit(rng.standard_normal((20 * RESCORED, 512)))
    group = _Group()
    group.append(list(range(1, len(rows) + 1)), rows)
    for target in rng.choice(len(rows) - 1, 30, replace=False):
        query = _near(rng, rows[target], 0.76)
        rows[target + 1] = group.matrix[target + 1] = _near(rng, query, 0.72)  # a second neighbour, a little further
        group.bits[:, target + 1] = signs(rows[target + 1 : target + 2])[0]
        assert len(group.shortlist(query)) < group.size  # the prefilter ran: not every row was rescored
        found, similarity = group.nearest(query, 2)
        assert list(found) == [target, target + 1]  # every row close enough to matter is found, in order
        np.testing.assert_allclose(similarity, np.sort(rows @ query)[::-1][:2], atol=1e-5)  # with its exact cosine


def test_a_small_group_is_searched_exactly_and_forgotten_rows_are_dropped():
    rng = np.random.default_rng(8)
    rows = _unit(rng.standard_normal((RESCORED, 512)))
    group = _Group()
    group.append(list(range(10, 10 + RESCORED)), rows)
    assert len(group.shortlist(rows[0])) == RESCORED
    found, similarity = group.nearest(rows[5], 1)
    assert (found[0], round(float(similarity[0]), 4)) == (5, 1.0)
    group.forget({15})  # row 5's id
    assert group.size == RESCORED - 1 and 15 not in group.ids[: group.size]
    found, similarity = group.nearest(rows[5], 1)
    assert group.ids[found[0]] != 15 and similarity[0] < 0.5
    found, _ = group.nearest(rows[6], 1)
    assert group.ids[found[0]] == 16  # the rows after it moved up with their ids
    group.append([900], rows[5:6])  # appends after a forget
    found, _ = group.nearest(rows[5], 1)
    assert group.ids[found[0]] == 900
