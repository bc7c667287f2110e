"""What quality do the savings keep? The answer check on the labelled sets, before and after.

    .venv/bin/python tests/benchmarks/bench_quality.py [--split eval] [--tasks sentiment,summary]
        [--model PATH ...] [--threads 1] [--dump FILE.jsonl]

For each small model (the bundled SmolLM2-135M by default; `--model` adds GGUF files),
on the reviews (`sentiment`) and the documents (`summarise-document`) of one split of
evals/quality/, prints per task and language:

- before: the small model's accuracy (reviews) or fact recall (documents), every answer used;
- the check: acceptance and escalation rates, rejection reasons, the accuracy / recall
  of the answers it accepted;
- after: accepted small answers plus the large tier's answers for the rejected ones;
- cost: what the large calls cost, against sending everything to the large model.

The large tier. With OPENAI_BASE_URL (and OPENAI_API_KEY, FRUGAL_LLM_MODEL) set, the
rejected items go to that model through `call_llm`'s code. Otherwise a stand-in answers
them: an oracle that returns the gold label, or the list of facts a summary must keep.
"after" is then an upper bound (the large model right every time) and the cost is
priced as FRUGAL_BENCH_PRICED_AS (default openai/gpt-4o-mini) for the stand-in's token counts.
The small model is never used to label anything; the labels are hand-written.

Small-model answers are made exactly as the local provider makes them (same request
to xllamacpp, same grammar for labels), asking for token log-probabilities (100
alternatives for labels, so the other labels are among them), and turned into a
`ModelAnswer` by `to_answer`; the verdict is `check_answer`'s `judge` with the
thresholds the pipelines use. Documents longer than `long_words` (600) are routed to
the large tier by the pipeline and are left out here; so are the unreadable files.

Tune thresholds on `--split tune` (with `--dump`), report on `--split eval`.
Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tasks.core.completion import Completion, TokenLogprob, TopToken, Usage
from tasks.core.constraints import label_schema
from tasks.core.model_request import ModelRequest, to_answer
from tasks.core.pricing import rates_for
from tasks.core.records import ModelAnswer
from tasks.providers.llama_cpp import LocalModel, find_bundled_model
from tasks.steps.call_llm import LlmRequest, answer_large
from tasks.steps.check_answer import CheckRequest, judge

ROOT = Path(__file__).resolve().parents[2]
EVALS = ROOT / "evals" / "quality"
LABELS = ["positive", "negative", "neutral"]
SENTIMENT_SYSTEM = (
    'You label the sentiment of the user\'s text. Answer with JSON {"label": L} where L is positive, negative or neutral.'
)
MAX_WORDS = 120
LONG_WORDS = 600
SUMMARY_SYSTEM = (
    f"Summarise the document in at most {MAX_WORDS} words, in the language of the document. Answer with the summary only."
)
LABEL_ALTERNATIVES = 100


def load(split: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    reviews = [json.loads(line) for line in (EVALS / "reviews.jsonl").read_text().splitlines() if line.strip()]
    docs = [json.loads(line) for line in (EVALS / "documents.jsonl").read_text().splitlines() if line.strip()]
    reviews = [r for r in reviews if split == "all" or r["split"] == split]
    docs = [d for d in docs if (split == "all" or d["split"] == split) and d["kind"] != "bad" and d["words"] <= LONG_WORDS]
    for d in docs:
        d["text"] = (EVALS / "documents" / d["file"]).read_text()
    return reviews, docs


def fact_recall(summary: str, facts: list[dict[str, Any]]) -> float:
    text = summary.casefold()
    if not facts:
        return 1.0
    return sum(1 for f in facts if any(k.casefold() in text for k in f["any"])) / len(facts)


def small_answer(model: LocalModel, request: ModelRequest, alternatives: int) -> ModelAnswer:
    """The local provider's request to xllamacpp, with log-probabilities, made into a ModelAnswer by `to_answer`."""
    body: dict[str, Any] = {
        "messages": request.chat_messages(),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "seed": 0,
        "cache_prompt": True,
        "logprobs": True,
        "top_logprobs": alternatives,
    }
    if request.labels:
        body["grammar"], _ = model._prepare(label_schema(request.labels))
    started = time.perf_counter()
    result = model._ensure_loaded().handle_chat_completions(body)
    latency = (time.perf_counter() - started) * 1000
    choice = result["choices"][0]
    usage = result.get("usage") or {}
    logprobs = [
        TokenLogprob(
            token=t["token"],
            logprob=t["logprob"],
            top=[TopToken(token=a["token"], logprob=a["logprob"]) for a in t.get("top_logprobs") or []],
        )
        for t in ((choice.get("logprobs") or {}).get("content") or [])
    ]
    completion = Completion(
        text=choice["message"].get("content") or "",
        model=model.model_id,
        usage=Usage(input_tokens=usage.get("prompt_tokens") or 0, output_tokens=usage.get("completion_tokens") or 0),
        latency_ms=latency,
        finish_reason=choice.get("finish_reason"),
        logprobs=logprobs or None,
    )
    return to_answer(completion, "small", request)


@dataclass
class Cell:
    n: int = 0
    small_score: float = 0.0
    accepted: int = 0
    accepted_score: float = 0.0
    after_score: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)
    small_tokens_out: int = 0
    small_seconds: float = 0.0
    large_cost: Decimal = Decimal(0)
    all_large_cost: Decimal = Decimal(0)

    def add(self, other: Cell) -> None:
        for name in ("n", "small_score", "accepted", "accepted_score", "after_score", "small_tokens_out", "small_seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)
        self.large_cost += other.large_cost
        self.all_large_cost += other.all_large_cost


class Large:
    """The large tier: a configured OpenAI-compatible model, or the oracle stand-in (see the module docstring)."""

    def __init__(self) -> None:
        self.real = bool(os.environ.get("OPENAI_BASE_URL") and os.environ.get("FRUGAL_LLM_MODEL"))
        self.priced_as = os.environ.get("FRUGAL_BENCH_PRICED_AS", "openai/gpt-4o-mini")
        self.rates = rates_for(self.priced_as)

    @property
    def name(self) -> str:
        return f"openai/{os.environ['FRUGAL_LLM_MODEL']}" if self.real else f"oracle stand-in priced as {self.priced_as}"

    async def answer(self, request: LlmRequest, gold: str) -> tuple[str, Decimal]:
        if self.real:
            answer = await answer_large(request)
            return answer.label or answer.text, answer.cost_usd or Decimal(0)
        # the stand-in's usage: the prompt's words * 1.3 tokens in, the gold answer's out
        words_in = sum(len(m["content"].split()) for m in request.chat_messages())
        usage = Usage(input_tokens=int(words_in * 1.3), output_tokens=int(len(gold.split()) * 1.3) + 4)
        return gold, (self.rates.cost(usage) if self.rates else Decimal(0))


async def run(args: argparse.Namespace) -> None:
    reviews, docs = load(args.split)
    large = Large()
    paths = [Path(p) for p in args.model] or [find_bundled_model()]
    dump = open(args.dump, "w", buffering=1) if args.dump else None  # line-buffered: progress shows
    print(f"split={args.split}  reviews={len(reviews)}  documents={len(docs)} (<= {LONG_WORDS} words, readable)")
    print(f"large tier: {large.name}")
    for path in paths:
        model = LocalModel(path, n_threads=args.threads, n_ctx=4096, model_id=f"local/{path.stem.lower()}")
        model.load()
        cells: dict[tuple[str, str], Cell] = defaultdict(Cell)
        if "sentiment" in args.tasks:
            for r in reviews:
                request = ModelRequest(system=SENTIMENT_SYSTEM, prompt=r["text"], labels=LABELS, max_tokens=16)
                answer = small_answer(model, request, LABEL_ALTERNATIVES)
                verdict = judge(CheckRequest(answer=answer, prompt=r["text"], labels=LABELS))
                right = float(answer.label == r["label"])
                large_request = LlmRequest(system=SENTIMENT_SYSTEM, prompt=r["text"], labels=LABELS, max_tokens=16)
                gold_label, all_large = await large.answer(large_request, r["label"])
                cell = Cell(
                    n=1,
                    small_score=right,
                    small_tokens_out=answer.usage.output_tokens,
                    small_seconds=answer.latency_ms / 1000,
                    all_large_cost=all_large,
                )
                if verdict.accepted:
                    cell.accepted, cell.accepted_score, cell.after_score = 1, right, right
                else:
                    cell.reasons[verdict.reason or "?"] += 1
                    cell.after_score = float(gold_label == r["label"])
                    cell.large_cost = all_large
                cells[("sentiment", r["lang"])].add(cell)
                if dump:
                    dump.write(
                        json.dumps(
                            {
                                "task": "sentiment",
                                "id": r["id"],
                                "lang": r["lang"],
                                "gold": r["label"],
                                "kind": r["kind"],
                                "answer": answer.label,
                                "reasons": verdict.reasons,
                                "scores": verdict.scores,
                            }
                        )
                        + "\n"
                    )
        if "summary" in args.tasks:
            for d in docs:
                request = ModelRequest(system=SUMMARY_SYSTEM, prompt=d["text"], max_tokens=MAX_WORDS * 2)
                answer = small_answer(model, request, 1)
                verdict = judge(CheckRequest(answer=answer, prompt=d["text"], max_words=MAX_WORDS))
                recall = fact_recall(answer.text, d["facts"])
                stand_in = "; ".join(f["fact"] for f in d["facts"])
                large_request = LlmRequest(system=SUMMARY_SYSTEM, prompt=d["text"], max_tokens=MAX_WORDS * 2)
                large_text, all_large = await large.answer(large_request, stand_in)
                cell = Cell(
                    n=1,
                    small_score=recall,
                    small_tokens_out=answer.usage.output_tokens,
                    small_seconds=answer.latency_ms / 1000,
                    all_large_cost=all_large,
                )
                if verdict.accepted:
                    cell.accepted, cell.accepted_score, cell.after_score = 1, recall, recall
                else:
                    cell.reasons[verdict.reason or "?"] += 1
                    cell.after_score = fact_recall(large_text, d["facts"])
                    cell.large_cost = all_large
                cells[("summary", d["lang"])].add(cell)
                if dump:
                    dump.write(
                        json.dumps(
                            {
                                "task": "summary",
                                "id": d["id"],
                                "lang": d["lang"],
                                "recall": recall,
                                "finish": answer.finish_reason,
                                "reasons": verdict.reasons,
                                "scores": verdict.scores,
                                "text": answer.text,
                            }
                        )
                        + "\n"
                    )
        model.close()
        report(model.model_id, cells)
    if dump:
        dump.close()


def report(model: str, cells: dict[tuple[str, str], Cell]) -> None:
    print(f"\n== small model {model}")
    head = (
        f"{'task':9} {'lang':4} {'n':>3} {'before':>7} {'accept':>7} {'escal':>6} {'acc.ok':>7} {'after':>6} "
        f"{'tok/s':>6} {'large $':>9} {'all-large $':>11}  reasons"
    )
    print(head)
    totals: dict[str, Cell] = defaultdict(Cell)
    for (task, lang), c in sorted(cells.items()):
        line(task, lang, c)
        totals[task].add(c)
    for task, c in sorted(totals.items()):
        line(task, "all", c)
    print("before: accuracy (sentiment) or fact recall (summary) of every small answer; acc.ok: of the accepted ones;")
    print("after: accepted small answers + the large tier's answers for the rejected ones")


def line(task: str, lang: str, c: Cell) -> None:
    rate = c.small_tokens_out / c.small_seconds if c.small_seconds else 0.0
    acc_ok = f"{c.accepted_score / c.accepted:7.1%}" if c.accepted else f"{'-':>7}"
    reasons = ", ".join(f"{k} {v}" for k, v in c.reasons.most_common())
    print(
        f"{task:9} {lang:4} {c.n:3d} {c.small_score / c.n:7.1%} {c.accepted / c.n:7.1%} {1 - c.accepted / c.n:6.1%} "
        f"{acc_ok} {c.after_score / c.n:6.1%} {rate:6.1f} {c.large_cost:9.5f} {c.all_large_cost:11.5f}  {reasons}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=["tune", "eval", "all"], default="eval")
    parser.add_argument("--tasks", default="sentiment,summary")
    parser.add_argument("--model", action="append", default=[], help="a GGUF file to measure (repeatable)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dump", help="write one JSON line per item (scores, reasons) for tuning")
    args = parser.parse_args()
    args.tasks = set(args.tasks.split(","))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
