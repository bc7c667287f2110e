"""`frugal router`: train, calibrate and evaluate the learned router.

    frugal router train DATA.jsonl... [--output FILE] [--max-risk R | --large-share S]
    frugal router calibrate (--max-risk R | --large-share S) [DATA.jsonl...] [--router FILE] [--output FILE]
    frugal router eval DATA.jsonl... [--router FILE] [--split eval|train|all] [--png PATH]

DATA files hold one labelled prompt per line ({"prompt", "label": "small"|"large"}, or an
answer-check record; see tasks/routing/labels.py). Rows with a `split` field: `train` uses
split=train, `calibrate` and `eval` split=eval; rows without one are used by all three.
The routing modules (numpy, the embedder) are imported inside the commands so that
`frugal` itself starts as fast as before.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from tasks.core.errors import InputError
from tasks.core.settings import get_settings

DEFAULT_DATA = ("evals/router/large.jsonl", "evals/router/small.jsonl")


def add_parser(sub: Any) -> None:
    """Register `frugal router ...` on the main parser's subcommands."""
    router = sub.add_parser("router", help="train, calibrate and evaluate the learned router")
    commands = router.add_subparsers(dest="router_command", required=True)

    train = commands.add_parser("train", help="train a router from labelled prompts (split=train rows)")
    train.add_argument("data", nargs="+", help="JSONL files of labelled prompts or answer-check records")
    train.add_argument("--output", "-o", help="router file to write (default FRUGAL_ROUTER_FILE, else DATA_DIR/router.json)")
    _targets(train, required=False)
    train.set_defaults(func=cmd_train)

    calibrate = commands.add_parser("calibrate", help="pick the threshold that meets a target (split=eval rows)")
    calibrate.add_argument("data", nargs="*", help=f"labelled JSONL files (default {' '.join(DEFAULT_DATA)})")
    calibrate.add_argument("--router", help="router file to calibrate (default: the one `classify` uses)")
    calibrate.add_argument(
        "--output", "-o", help="where to write it (default: in place; DATA_DIR/router.json for the packaged one)"
    )
    _targets(calibrate, required=True)
    calibrate.set_defaults(func=cmd_calibrate)

    evaluate = commands.add_parser("eval", help="accuracy, risk, confusion matrix, per language and task; the curve as PNG")
    evaluate.add_argument("data", nargs="*", help=f"labelled JSONL files (default {' '.join(DEFAULT_DATA)})")
    evaluate.add_argument("--router", help="router file (default: the one `classify` uses)")
    evaluate.add_argument("--split", choices=("eval", "train", "all"), default="eval", help="rows to use (default eval)")
    evaluate.add_argument("--png", default=None, help="draw risk vs share sent large into this PNG file")
    evaluate.set_defaults(func=cmd_eval)


def _targets(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--max-risk", type=float, help="largest share of large-needing prompts sent small, e.g. 0.05")
    group.add_argument("--large-share", type=float, help="largest share of all prompts sent large, e.g. 0.3")


def _target(args: argparse.Namespace) -> dict[str, float] | None:
    for name in ("max_risk", "large_share"):
        value = getattr(args, name)
        if value is not None:
            if not 0.0 <= value <= 1.0:
                raise InputError(f"--{name.replace('_', '-')} must be between 0 and 1, got {value}")
            return {name: value}
    return None


def _data(paths: list[str]) -> list[Path]:
    files = [Path(p) for p in (paths or DEFAULT_DATA)]
    for file in files:
        if not file.is_file():
            raise InputError(f"no labelled prompts at {file}: give the JSONL files to use")
    return files


def _rows(paths: list[str], split: str) -> list[Any]:
    from tasks.routing.labels import read_examples
    from tasks.routing.labels import split as of_split

    examples, skipped = read_examples(_data(paths))
    chosen = examples if split == "all" else of_split(examples, split)
    if not chosen:
        raise InputError(f"no labelled prompts in split '{split}' of {', '.join(paths or DEFAULT_DATA)}")
    note = f", {skipped} record(s) without a label skipped" if skipped else ""
    print(f"{len(chosen)} labelled prompts (split {split}){note}", file=sys.stderr)
    return chosen


def _output(args: argparse.Namespace, current: Path | None = None) -> Path:
    from tasks.routing import PACKAGED

    if args.output:
        return Path(args.output)
    if current is not None and current != PACKAGED:
        return current
    settings = get_settings()
    return settings.router.file or settings.engine.data_dir / "router.json"


def cmd_train(args: argparse.Namespace) -> int:
    from tasks.embedders import bundled_embedder, configured_embedder
    from tasks.routing import save_router, train

    examples = _rows(args.data, "train")
    target = _target(args)
    embedder = configured_embedder()
    doc = train(examples, embedder, target=target, files=[Path(p).name for p in args.data])
    if embedder.id != bundled_embedder().id:  # a bundled head too, so routing survives the server being down
        doc.heads.append(train(examples, bundled_embedder(), target=target).heads[0])
    path = save_router(doc, _output(args))
    for head in doc.heads:
        trial = max(head.cross_validation["trials"], key=lambda t: t["accuracy"])
        print(
            f"{head.embedder}: C={head.c} cheap_features={head.cheap_features} cv accuracy={trial['accuracy']:.3f} "
            f"threshold={head.threshold:.3f} for {head.target}"
        )
    print(f"wrote {path} (version {doc.version}, {doc.data['prompts']} prompts, data sha256 {str(doc.data['sha256'])[:12]})")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from tasks.embedders import bundled_embedder, configured_embedder
    from tasks.routing import calibrate, load_router, save_router

    loaded = load_router(args.router)
    examples = _rows(args.data, "eval")
    target = _target(args)
    assert target is not None
    embedder = configured_embedder()
    if loaded.doc.head(embedder.id) is None:
        embedder = bundled_embedder()
    source = f"{', '.join(args.data or DEFAULT_DATA)} ({len(examples)} prompts)"
    doc, head = calibrate(loaded.doc, examples, embedder, target, source)
    point = next(p for p in head.curve if p.threshold == head.threshold)
    path = save_router(doc, _output(args, loaded.path))
    print(
        f"{head.embedder}: threshold {head.threshold:.3f} for {target}: risk {point.risk:.1%}, "
        f"sent large {point.large_share:.1%}, accuracy {point.accuracy:.1%}"
    )
    print(f"wrote {path} (version {doc.version})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from tasks.embedders import bundled_embedder, configured_embedder
    from tasks.routing import curve, load_router
    from tasks.routing.train import embed_all

    loaded = load_router(args.router)
    examples = _rows(args.data, args.split)
    embedder = configured_embedder()
    head = loaded.doc.head(embedder.id)
    if head is None:
        embedder, head = bundled_embedder(), loaded.doc.head(bundled_embedder().id)
    if head is None:
        raise InputError(f"router file {loaded.path} has no head for {embedder.id}")
    texts = [e.prompt for e in examples]
    p = head.probability(embed_all(embedder, texts), texts)
    large = np.asarray([e.large for e in examples])
    sent = p >= head.threshold
    print(f"router {loaded.path} version {loaded.doc.version}, embedder {head.embedder}, threshold {head.threshold:.3f}")
    print(report(examples, sent))
    if args.png:
        points = curve(p, large)
        png = draw_curve(points, float(((~sent) & large).sum() / max(large.sum(), 1)), float(sent.mean()), Path(args.png))
        print(f"wrote {png}")
    return 0


def report(examples: list[Any], sent_large: Any) -> str:
    """Accuracy, risk, share sent large, the confusion matrix, accuracy per language and per task."""
    truth = [e.large for e in examples]
    n = len(examples)
    right = [bool(s) == t for s, t in zip(sent_large, truth, strict=True)]
    counts = Counter((t, bool(s)) for s, t in zip(sent_large, truth, strict=True))
    needing = sum(truth)
    lines = [
        f"accuracy {sum(right) / n:.1%} on {n} prompts; risk (large-needing sent small) "
        f"{counts[(True, False)] / max(needing, 1):.1%}; sent large {sum(map(bool, sent_large)) / n:.1%}",
        "",
        "confusion          routed small  routed large",
        f"  needs small      {counts[(False, False)]:>12}  {counts[(False, True)]:>12}",
        f"  needs large      {counts[(True, False)]:>12}  {counts[(True, True)]:>12}",
    ]
    for key in ("lang", "task"):
        by: dict[str, list[bool]] = defaultdict(list)
        for example, ok in zip(examples, right, strict=True):
            by[str(example.meta.get(key, "-"))].append(ok)
        lines += ["", f"accuracy per {key}:"]
        lines += [f"  {name:<22} {sum(v) / len(v):6.1%}  ({len(v)})" for name, v in sorted(by.items())]
    return "\n".join(lines)


def draw_curve(points: list[Any], risk: float, share: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.2))
    axes.plot([p.large_share for p in points], [p.risk for p in points], drawstyle="steps-post", label="learned router")
    axes.plot([share], [risk], "o", color="tab:red", label=f"threshold: risk {risk:.1%}, large {share:.1%}")
    axes.set_xlabel("share of prompts sent to the large model")
    axes.set_ylabel("risk: large-needing prompts sent small")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title("Router trade-off: cost (share large) vs risk")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
