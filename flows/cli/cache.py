"""`frugal cache purge`: remove cached answers from the exact cache and the semantic index.

    frugal cache purge --namespace NS             everything of a namespace
    frugal cache purge --older-than 7d            answers stored more than 7 days ago (any namespace)
    frugal cache purge --prompt TEXT [--neighbours] [--namespace NS]
                                                  the answers to TEXT (as the semantic index holds
                                                  it, compared normalised) and, with --neighbours,
                                                  to every cached prompt within the threshold of it

The stores and the embedder are imported when the command runs, not at the top: the rest of
the CLI starts without them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tasks.core.errors import InputError


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cache = sub.add_parser("cache", help="manage the prompt cache")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    purge = cache_sub.add_parser("purge", help="remove cached answers (exact and semantic entries)")
    purge.add_argument("--namespace", help="only this namespace (alone: all of it)")
    purge.add_argument("--older-than", metavar="AGE", help="stored more than AGE ago: 7d, 24h, 30m, 2w, or a date")
    purge.add_argument("--prompt", metavar="TEXT", help="the cached answers to this prompt")
    purge.add_argument("--neighbours", action="store_true", help="with --prompt: and to prompts close to it in meaning")
    purge.add_argument("--threshold", type=float, default=None, help="with --neighbours: least similarity (default 0.78)")
    purge.set_defaults(func=run)


#: what `--prompt` cannot find: an answer's value holds no prompt; the semantic index does
UNINDEXED = (
    "note: --prompt finds prompts through the semantic index: answers stored with `cache: exact`, or on a Redis "
    "without vector sets (before 8), are not in it; purge those with --namespace NS or --older-than AGE"
)


def run(args: argparse.Namespace) -> int:
    if not (args.namespace is not None or args.older_than or args.prompt):
        raise InputError("say what to purge: --namespace NS, --older-than AGE, or --prompt TEXT")
    if args.prompt is None and (args.neighbours or args.threshold is not None):
        raise InputError("--neighbours and --threshold go with --prompt TEXT")
    if args.prompt is not None and args.older_than:
        raise InputError("--prompt and --older-than do not combine: purge by one or the other")
    exact, semantic = asyncio.run(_purge(args))
    print(f"purged {exact} cached answer(s) and {semantic} semantic index entr{'y' if semantic == 1 else 'ies'}")
    if args.prompt is not None and not semantic:
        print(UNINDEXED, file=sys.stderr)
    return 0


async def _purge(args: argparse.Namespace) -> tuple[int, int]:
    from flows.ledger.report import parse_since
    from tasks.core.settings import get_settings
    from tasks.semantic.embedding import embed
    from tasks.semantic.normalise import normalise
    from tasks.steps.cache import DEFAULT_THRESHOLD
    from tasks.stores.semantic_index import open_index
    from tasks.stores.semantic_purge import purge

    settings = get_settings().cache
    index = open_index(settings)
    if args.prompt is None:
        before = parse_since(args.older_than) if args.older_than else None
        return await purge(settings, index, args.namespace, before)
    wanted = normalise(args.prompt)
    entries = await index.entries(args.namespace)
    selected = {(e.namespace, e.group, e.key): e for e in entries if normalise(e.text) == wanted}
    if args.neighbours:
        threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
        vector = (await embed([args.prompt]))[0]  # the index holds prompts' vectors as written
        sizes: dict[tuple[str, str], int] = {}
        for e in entries:
            sizes[(e.namespace, e.group)] = sizes.get((e.namespace, e.group), 0) + 1
        by_key = {(e.namespace, e.group, e.key): e for e in entries}
        for (namespace, group), size in sizes.items():
            for near in await index.nearest(namespace, group, vector, size):
                if near.similarity >= threshold and (namespace, group, near.key) in by_key:
                    selected[(namespace, group, near.key)] = by_key[(namespace, group, near.key)]
    return await purge(settings, index, selected=list(selected.values()))
