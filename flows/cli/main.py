"""`frugal`: run, validate and serve pipelines from the command line.

    frugal run PIPELINE --input key=value ... [--inline | --orchestrated] [--json]
    frugal validate [PATH ...]
    frugal serve [PIPELINE ...] [--subprocess]
    frugal call DEPLOYMENT --input key=value ... [--wait/--no-wait] [--json]
    frugal graph PIPELINE [--format mermaid|dot|svg|png] [--output FILE]
    frugal report [--since 7d] [--by pipeline|model|route|day] [--json] [--png PATH]
    frugal list
    frugal router train|calibrate|eval ...
    frugal demo [--inline | --orchestrated]

Errors print one line and exit non-zero; `--debug` shows the traceback.

Imports of the project and of Prefect are inside the commands that need them: `frugal --help`
and `frugal validate` do not pay for Prefect (about 1.5 s of a cold start), and `frugal run`
imports the Prefect flow engine only for an orchestrated run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

from flows.cli import cache as cache_commands  # argparse only, like the gateway's
from flows.cli import gateway as gateway_commands  # argparse only: the gateway itself loads when it runs
from flows.cli import router as router_cli  # argparse only, like the gateway's
from tasks.core.errors import FrugalError, InputError, SpecErrors
from tasks.core.settings import get_settings

EXIT_ERROR, EXIT_USAGE = 1, 2
#: our processes never send Prefect usage telemetry (it logged `ERROR Failed to send telemetry` offline)
QUIET_PREFECT = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def seconds(raw: str) -> float:
    """An argparse type: a number of seconds, 0 or more."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{raw} must be 0 or more seconds")
    return value


def orchestrated_by_default() -> bool:
    """`frugal run` makes a Prefect flow run when a Prefect server is configured or batches are to run
    on Dask (FRUGAL_BATCH_RUNNER=dask: only flow runs send chunks there), else runs inline."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    from tasks.core.settings import get_settings

    return get_settings().batch.runner == "dask"


def parse_inputs(pairs: list[str], declared: dict[str, str]) -> dict[str, Any]:
    """`key=value` pairs, converted by the input's declared type; `key=@file` reads a file."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--input {pair!r} must look like key=value")
        if raw.startswith("@"):
            raw = read_input_file(key, raw[1:])
        kind = declared.get(key, "string")
        values[key] = _convert(key, raw, kind)
    return values


def read_input_file(key: str, name: str) -> str:
    """`--input key=@FILE`: a regular file (not /dev/zero, a FIFO or a socket) of at most
    FRUGAL_INPUT_FILE_MAX_BYTES, read no further than that, as UTF-8 text."""
    limit = get_settings().engine.input_file_max_bytes
    try:
        with os.fdopen(os.open(name, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:  # a FIFO must not block the open
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise InputError(f"--input {key}: {name} is not a regular file (devices, FIFOs and sockets are not read)")
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise InputError(f"--input {key}: {name} is larger than {limit} bytes (FRUGAL_INPUT_FILE_MAX_BYTES)")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--input {key}: cannot read {name}: {exc}") from exc


def _convert(key: str, raw: str, kind: str) -> Any:
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
        if kind == "boolean":
            lowered = raw.strip().lower()
            if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(raw)
            return lowered in {"true", "1", "yes"}
        if kind in ("list", "object"):
            return json.loads(raw)
    except ValueError as exc:
        raise InputError(f"input '{key}' must be {kind}, got {raw!r}") from exc
    return raw


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from flows.cli.progress_bar import progress_display
    from flows.language import catalog

    pipeline = catalog.load(args.pipeline)
    inputs = parse_inputs(args.input, {k: v.type for k, v in pipeline.spec.inputs.items()})
    pipeline.validate_inputs(inputs)  # fail before any model or server is started
    orchestrated = args.orchestrated if args.orchestrated is not None else orchestrated_by_default()

    with progress_display():
        if not orchestrated:
            from flows.orchestration.inline import run_inline

            result = asyncio.run(run_inline(pipeline, inputs))
        else:
            result = _run_orchestrated(args.pipeline, inputs, debug=args.debug)
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return 0
    output = result.output
    if isinstance(output, dict) and isinstance(output.get("text"), str):
        print(output["text"])
    else:
        print(json.dumps(output, indent=2, ensure_ascii=False))
    print(result.account(), file=sys.stderr)
    return 0


def _run_orchestrated(pipeline: str, inputs: dict[str, Any], *, debug: bool) -> Any:
    """A Prefect flow run on PREFECT_API_URL's server, else on a temporary one that dies with us."""
    import asyncio

    from flows.orchestration.flow import run_orchestrated
    from flows.orchestration.quiet_logs import quiet_frugal_errors
    from flows.orchestration.temporary_server import temporary_server

    if not debug:
        quiet_frugal_errors()
    if os.environ.get("PREFECT_API_URL"):
        return asyncio.run(run_orchestrated(pipeline, inputs))
    with temporary_server() as (api_url, pid):
        hint = "set PREFECT_API_URL to use yours"
        print(f"a temporary Prefect server (pid {pid}, {api_url}) for this run; {hint}", file=sys.stderr)
        return asyncio.run(run_orchestrated(pipeline, inputs))


def cmd_validate(args: argparse.Namespace) -> int:
    from flows.language import catalog
    from flows.language.compiler import all_errors

    paths = [Path(p) for p in args.paths] or catalog.pipeline_paths()
    files: list[Path] = []
    for path in paths:
        files.extend(catalog.pipeline_paths(path) if path.is_dir() else [path])
    if not files:
        print(f"error: no pipeline files found in {', '.join(map(str, paths or [catalog.pipelines_dir()]))}")
        return EXIT_ERROR
    failed = 0
    for file, errors in all_errors(files).items():
        if errors:
            failed += 1
            for error in errors:
                print(f"error: {error.render()}")
        else:
            print(f"ok: {file}")
    if failed:
        print(f"{failed} of {len(files)} pipeline file(s) have errors")
    return EXIT_ERROR if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    from flows.language import catalog

    failed = False
    for _path, pipeline in catalog.load_each():  # one bad file is reported beside the others, not instead of them
        if isinstance(pipeline, Exception):
            print(f"error: {pipeline.render()}", file=sys.stderr)
            failed = True
            continue
        inputs = ", ".join(f"{k}{'' if v.required else '?'}:{v.type}" for k, v in pipeline.spec.inputs.items())
        print(f"{pipeline.name:<20} v{pipeline.spec.version:<4} {inputs}")
    return EXIT_ERROR if failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.language import catalog
    from flows.orchestration.quiet_logs import quiet_frugal_errors
    from flows.orchestration.serve import serve_pipelines

    if not args.debug:
        quiet_frugal_errors(drop=False)
    names = args.pipelines
    if not names:  # every pipeline that loads; a bad file is said, and the others are served
        names = []
        for path, pipeline in catalog.load_each():
            if isinstance(pipeline, Exception):
                print(f"error: not serving {path.name}: {pipeline.render()}", file=sys.stderr)
            else:
                names.append(pipeline.name)
    serve_pipelines(names, in_process=not args.subprocess, record_skips=args.record_skips)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import contextlib

    from flows.cli.demo import main as demo

    orchestrated = args.orchestrated if args.orchestrated is not None else orchestrated_by_default()
    if not orchestrated:
        return demo(inline=True)
    from flows.orchestration.quiet_logs import quiet_frugal_errors
    from flows.orchestration.temporary_server import temporary_server

    if not args.debug:
        quiet_frugal_errors()
    server: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if not os.environ.get("PREFECT_API_URL"):
        print("starting a temporary Prefect server for the demo; set PREFECT_API_URL to use yours", file=sys.stderr)
        server = temporary_server()
    with server:
        return demo(inline=False)


def cmd_call(args: argparse.Namespace) -> int:
    from flows.engine.results import RunResult
    from flows.orchestration.rest_client import RestCaller

    with RestCaller(args.api_url, httpx_settings={"timeout": args.http_timeout}) as caller:
        deployment = caller.find(args.deployment)
        inputs = parse_inputs(args.input, deployment.inputs)
        called = caller.call(deployment.name, inputs, wait=args.wait, timeout=args.timeout)
    if args.json:
        fields = ("deployment", "flow_run_id", "state", "url", "result", "timings")
        print(json.dumps({k: getattr(called, k) for k in fields}, indent=2, ensure_ascii=False))
        return 0
    if called.result is None:
        print(called.flow_run_id)
        print(f"created flow run {called.flow_run_id} of {called.deployment} ({called.state}): {called.url}", file=sys.stderr)
        return 0
    output = called.result.get("output")
    if isinstance(output, dict) and isinstance(output.get("text"), str):
        print(output["text"])
    else:
        print(json.dumps(output, indent=2, ensure_ascii=False))
    try:
        account = RunResult.model_validate(called.result).account()
    except ValueError:  # a server running another version of the result model: the output is what counts
        account = f"cache={output.get('cache', '-') if isinstance(output, dict) else '-'}"
    print(f"{account} flow_run={called.flow_run_id} rest={called.timings['total_ms']:.0f}ms", file=sys.stderr)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from flows.language import catalog
    from flows.language.graph import draw

    pipeline = catalog.load(args.pipeline)
    data = draw(pipeline, args.format)
    if args.output:
        Path(args.output).write_bytes(data)
        print(f"wrote {args.output} ({len(data)} bytes)", file=sys.stderr)
    elif args.format == "png" and sys.stdout.isatty():
        raise InputError("png is binary: give --output FILE (or redirect stdout)")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from flows.ledger import read_entries
    from flows.ledger.observer import config
    from flows.ledger.report import as_json, chart, parse_since, summarise, table

    since = None if args.since == "all" else parse_since(args.since)
    entries = read_entries(since)
    groups, total = summarise(entries, args.by)
    if args.json:
        print(json.dumps(as_json(groups, total, args.by, since), indent=2))
    else:
        period = "all time" if since is None else f"since {since:%Y-%m-%d %H:%M} UTC"
        print(f"Costs and savings {period}, by {args.by}: {len(entries)} ledger entries in {config().target.describe()}")
        reference = reference_models(entries, config().reference.model)
        print(f"Reference model: {reference} (counterfactual = what it would have charged, no caching)\n")
        print(table(groups, total, args.by))
    if args.png:
        print(f"wrote {chart(entries, Path(args.png))}", file=sys.stderr)
    return 0


def reference_models(entries: list[Any], current: str | None) -> str:
    """The reference model(s) the entries' counterfactuals were computed against (the current one if none say)."""
    counts: dict[str, int] = {}
    for entry in entries:
        model = getattr(entry, "reference_model", None)
        if model:
            counts[model] = counts.get(model, 0) + 1
    if not counts:
        return current or "-"
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{model} ({n} entries)" for model, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frugal", description="Cheap, fast LLM answers as Prefect pipelines.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline and print its output")
    run.add_argument("pipeline", help="a pipeline name (deployments/NAME.yaml) or a path to a YAML file")
    run.add_argument("--input", "-i", action="append", default=[], metavar="KEY=VALUE", help="an input; @FILE reads a file")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument(
        "--inline",
        dest="orchestrated",
        action="store_false",
        default=None,
        help="run in this process without Prefect (the default unless PREFECT_API_URL is set; fastest)",
    )
    mode.add_argument(
        "--orchestrated",
        dest="orchestrated",
        action="store_true",
        help="run as a Prefect flow run, each node a task run (the default when PREFECT_API_URL is set; "
        "without it, on a temporary server started for this run)",
    )
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check pipeline files; non-zero exit on any error")
    validate.add_argument("paths", nargs="*", help="files or folders; default: every pipeline")
    validate.set_defaults(func=cmd_validate)

    lister = sub.add_parser("list", help="list the pipelines and their inputs")
    lister.set_defaults(func=cmd_list)

    demo = sub.add_parser("demo", help="run the demo: prompts through answer, reviews through sentiment")
    demo_mode = demo.add_mutually_exclusive_group()
    demo_mode.add_argument(
        "--inline",
        dest="orchestrated",
        action="store_false",
        default=None,
        help="without Prefect (the default unless PREFECT_API_URL is set)",
    )
    demo_mode.add_argument("--orchestrated", dest="orchestrated", action="store_true", help="as Prefect flow runs")
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="serve pipelines as Prefect deployments (no work pool needed)")
    serve.add_argument("pipelines", nargs="*", help="default: every pipeline")
    serve.add_argument(
        "--subprocess", action="store_true", help="Prefect's runner: a new process per run (default: in this process, faster)"
    )
    serve.add_argument(
        "--record-skips",
        action="store_true",
        help="also record each skipped node as a Skipped task run (slower; the run's Markdown artifact always lists them)",
    )
    serve.set_defaults(func=cmd_serve)

    call = sub.add_parser("call", help="call a deployed pipeline over Prefect's REST API and print its output")
    call.add_argument("deployment", help="a deployment name (answer) or FLOW/DEPLOYMENT")
    call.add_argument("--input", "-i", action="append", default=[], metavar="KEY=VALUE", help="an input; @FILE reads a file")
    call.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True, help="wait for the output (default)")
    call.add_argument("--json", action="store_true", help="print the flow run and the whole result as JSON")
    call.add_argument("--timeout", type=seconds, default=300.0, help="seconds to wait for the run (default 300)")
    call.add_argument("--api-url", help="Prefect API URL (default: $PREFECT_API_URL, else http://127.0.0.1:4200/api)")
    call.add_argument("--http-timeout", type=seconds, default=30.0, help=argparse.SUPPRESS)
    call.set_defaults(func=cmd_call)

    graph = sub.add_parser("graph", help="draw a pipeline: nodes, edges from references, conditions")
    graph.add_argument("pipeline", help="a pipeline name or a path to a YAML file")
    graph.add_argument("--format", "-f", choices=("mermaid", "dot", "svg", "png"), default="mermaid", help="default: mermaid")
    graph.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    graph.set_defaults(func=cmd_graph)

    report = sub.add_parser("report", help="what the ledger says was spent and saved, and why")
    report.add_argument("--since", default="7d", help="7d, 24h, 30m, 2w, a date (2025-01-31), or all (default 7d)")
    report.add_argument("--by", choices=("pipeline", "model", "route", "day"), default="pipeline", help="default: pipeline")
    report.add_argument("--json", action="store_true", help="print JSON (exact decimal strings) instead of a table")
    report.add_argument("--png", metavar="PATH", help="also draw spend vs counterfactual and savings by cause, as a PNG")
    report.set_defaults(func=cmd_report)

    gateway_commands.add_parsers(sub)
    router_cli.add_parser(sub)
    cache_commands.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    for name, value in QUIET_PREFECT.items():  # before anything imports Prefect
        os.environ.setdefault(name, value)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API request is noise
    try:
        return int(args.func(args))
    except SpecErrors as exc:
        for error in exc.errors:
            print(f"error: {error.render()}", file=sys.stderr)
        return EXIT_ERROR
    except FrugalError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `frugal ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail again
        return 141
    except Exception as exc:  # the one place foreign errors reach the user: one line, not a traceback
        if args.debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
