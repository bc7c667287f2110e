"""Concurrent requests share encoder calls (`tasks.embedders.batching`), with the real bundled encoder."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Sequence

import numpy as np
import pytest

from tasks.embedders import EmbedderUnavailable, batcher_for, bundled_embedder, remembered_async

RESET = "How do I reset my password?"
CAPITAL = "Quelle est la capitale de l'Autriche ?"
MILES = "Convert 5 km to miles"


class Gated:
    """The bundled encoder behind a gate: each call is recorded, and waits until the test opens the gate."""

    def __init__(self, fail: bool = False) -> None:
        self.id = f"test/gated-{uuid.uuid4().hex[:8]}"
        self.inner = bundled_embedder()
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.fail = fail

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(list(texts))
        self.entered.set()
        if not self.gate.wait(30):
            raise AssertionError("the test never opened the gate")
        if self.fail:
            raise EmbedderUnavailable("the gated encoder is down")
        return self.inner.embed(texts)


async def queued(batcher, count: int) -> None:  # type: ignore[no-untyped-def]
    """Wait (polling, 10 s deadline) until `count` requests are queued behind the running call."""
    deadline = asyncio.get_running_loop().time() + 10
    while batcher.waiting < count:
        assert asyncio.get_running_loop().time() < deadline, f"{batcher.waiting} of {count} requests queued"
        await asyncio.sleep(0.005)


async def test_texts_that_arrive_while_the_encoder_runs_are_encoded_together_and_right():
    gated = Gated()
    batcher = batcher_for(gated)
    first = asyncio.create_task(batcher.embed([RESET]))
    assert await asyncio.to_thread(gated.entered.wait, 10)  # the first text went straight in
    second = asyncio.create_task(batcher.embed([CAPITAL]))
    third = asyncio.create_task(batcher.embed([MILES, RESET]))
    await queued(batcher, 2)
    gated.gate.set()
    one, two, three = await asyncio.gather(first, second, third)

    assert gated.batches == [[RESET], [CAPITAL, MILES, RESET]]  # the two waiting requests shared one call
    assert (batcher.calls, batcher.texts, batcher.largest) == (2, 4, 3)
    alone = {text: bundled_embedder().embed([text])[0] for text in (RESET, CAPITAL, MILES)}  # one at a time
    np.testing.assert_allclose(one, [alone[RESET]], atol=1e-5)
    np.testing.assert_allclose(two, [alone[CAPITAL]], atol=1e-5)
    np.testing.assert_allclose(three, [alone[MILES], alone[RESET]], atol=1e-5)
    assert three.shape == (2, 512) and not np.allclose(two[0], one[0], atol=1e-2)


async def test_an_idle_embedder_gets_the_text_at_once_in_a_call_of_its_own():
    gated = Gated()
    gated.gate.set()
    batcher = batcher_for(gated)
    for text in (RESET, CAPITAL):
        await batcher.embed([text])
    assert gated.batches == [[RESET], [CAPITAL]] and batcher.calls == 2 and batcher.waiting == 0
    assert batcher_for(gated) is batcher


async def test_a_failed_call_fails_each_request_in_it_and_the_batcher_goes_on():
    gated = Gated(fail=True)
    batcher = batcher_for(gated)
    first = asyncio.create_task(batcher.embed([RESET]))
    assert await asyncio.to_thread(gated.entered.wait, 10)
    second = asyncio.create_task(batcher.embed([CAPITAL]))
    await queued(batcher, 1)
    gated.gate.set()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert [type(r) for r in results] == [EmbedderUnavailable, EmbedderUnavailable]
    gated.fail = False
    np.testing.assert_allclose(await batcher.embed([MILES]), bundled_embedder().embed([MILES]), atol=1e-5)
    assert batcher.calls == 3


async def test_a_cancelled_request_does_not_stop_the_others():
    gated = Gated()
    batcher = batcher_for(gated)
    first = asyncio.create_task(batcher.embed([RESET]))
    assert await asyncio.to_thread(gated.entered.wait, 10)
    gone = asyncio.create_task(batcher.embed([CAPITAL]))
    kept = asyncio.create_task(batcher.embed([MILES]))
    await queued(batcher, 2)
    gone.cancel()
    gated.gate.set()
    assert (await first).shape == (1, 512) and (await kept).shape == (1, 512)
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_the_memo_sends_only_texts_it_has_not_seen_to_the_batcher():
    gated = Gated()
    gated.gate.set()
    await remembered_async(gated, [RESET, CAPITAL, RESET])
    rows = await remembered_async(gated, [CAPITAL, MILES])
    assert gated.batches == [[RESET, CAPITAL], [MILES]]
    np.testing.assert_allclose(rows[0], bundled_embedder().embed([CAPITAL])[0], atol=1e-5)
