"""One process of a multi-process rate-limit test: model calls through the real call path, for a window.

    python -m tests.tasks.providers.limits_worker SECONDS CONCURRENCY NAME

Prints "ready" once imported, reads START_AT (time.time()) from its input, waits until then,
then keeps CONCURRENCY distinct calls in flight through `answer_large` (its settings from the
environment: FRUGAL_LIMITS, FRUGAL_CACHE_URL, OPENAI_BASE_URL); at START_AT + SECONDS the calls
still waiting for their turn are cancelled. Prints {"ok": N, "failed": N, "errors": [the last
few]} as JSON.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from typing import Any

from tasks.steps.call_llm import LlmRequest, answer_large


async def main(start_at: float, seconds: float, concurrency: int, name: str) -> dict[str, Any]:
    await asyncio.sleep(max(start_at - time.time(), 0))
    counts: dict[str, Any] = {"ok": 0, "failed": 0, "errors": []}
    numbers = itertools.count()

    async def caller() -> None:
        while True:
            try:
                await answer_large(LlmRequest(prompt=f"{name} item {next(numbers)}", max_tokens=8))
                counts["ok"] += 1
            except Exception as exc:  # noqa: BLE001 - counted; the test says which
                counts["failed"] += 1
                counts["errors"] = [*counts["errors"][-4:], f"{type(exc).__name__}: {exc}"]

    tasks = [asyncio.create_task(caller()) for _ in range(concurrency)]
    await asyncio.sleep(max(start_at + seconds - time.time(), 0))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counts


if __name__ == "__main__":
    window, width, label = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    print(json.dumps(asyncio.run(main(start, window, width, label))), flush=True)
