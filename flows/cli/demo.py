"""`frugal demo`: the main job on this machine, with nothing configured.

A few prompts through `answer` (each twice: a miss, then a hit) and a handful
of reviews through `sentiment`, inline, or as Prefect flow runs when a Prefect
server is configured (`frugal demo --orchestrated` without one starts a temporary
server), then a table of what happened: route, model, cache, tokens, latency.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from flows.engine.results import RunResult
from flows.orchestration.flow import run_inline, run_orchestrated

PROMPTS = [
    "Translate 'good morning' into French.",
    "Give one word that rhymes with 'cat'.",
    "Explain step by step how to design a rate limiter for a public API, and compare token bucket with sliding window.",
]
REVIEWS = [
    "Absolutely love it, works perfectly and arrived early.",
    "Broke after two days. Waste of money.",
    "It is a phone case. It fits the phone.",
    "The support team was rude and never answered my emails.",
    "Great sound, comfortable, battery lasts all week.",
]


def _row(pipeline: str, text: str, result: RunResult) -> list[str]:
    out: dict[str, Any] = result.output if isinstance(result.output, dict) else {}
    usage = out.get("usage") or {}
    tokens = f"{usage.get('input_tokens', 0)}/{usage.get('output_tokens', 0)}"
    answer = str(out.get("label") or out.get("text") or "").replace("\n", " ")
    return [
        pipeline,
        text[:38] + ("…" if len(text) > 38 else ""),
        str(out.get("route", "-")),
        str(out.get("model", "-")),
        str(out.get("cache", "-")),
        tokens if out.get("cache") != "hit" else f"({tokens})",
        f"{result.duration_ms:.0f}",
        answer[:30] + ("…" if len(answer) > 30 else ""),
    ]


def print_table(rows: list[list[str]]) -> None:
    header = ["pipeline", "input", "route", "model", "cache", "tokens", "ms", "answer"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


async def demo(inline: bool = False) -> tuple[list[list[str]], list[str]]:
    """The table's rows, and a note per prompt whose repeat was not a hit (its answer was rejected)."""
    run = run_inline if inline else run_orchestrated
    namespace = f"demo-{int(time.time())}"
    rows, notes = [], []
    for prompt in PROMPTS:
        for attempt in range(2):
            result = await run("answer", {"prompt": prompt, "namespace": namespace, "max_tokens": 48})
            rows.append(_row("answer", prompt, result))
            out = result.output if isinstance(result.output, dict) else {}
            if attempt and out.get("cache") != "hit" and out.get("accepted") is False:
                why = f"its answer was rejected ({out.get('reason')}); rejected answers are never cached"
                notes.append(f"'{prompt[:38]}…' missed twice: {why}.")
    for review in REVIEWS:
        result = await run("sentiment", {"text": review, "namespace": namespace})
        rows.append(_row("sentiment", review, result))
    return rows, notes


def main(inline: bool = False) -> int:
    started = time.perf_counter()
    rows, notes = asyncio.run(demo(inline))
    print()
    print_table(rows)
    print(f"\n{len(rows)} runs in {time.perf_counter() - started:.1f}s ({'inline' if inline else 'as Prefect flow runs'}).")
    print("Tokens in parentheses were paid once, on the miss; a hit costs no model call.")
    for note in notes:
        print(note)
    return 0
