"""Find pipelines by name: `deployments/NAME.yaml`, or any path to a YAML file.

The folder is ``FRUGAL_PIPELINES_DIR`` when set, else the project's
`deployments/`. Compiled pipelines are kept per file and modification time, so
a long-lived worker picks up an edited file and pays compilation once. The
file is looked at (one `stat`) at most every `RECHECK_SECONDS` per name: a
cache hit costs about as much as that system call, so it is not paid on every
request; an edit is seen within that time.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from flows.language.compiler import Pipeline, load_pipeline_file
from tasks.core.errors import PipelineNotFound, SpecError
from tasks.core.settings import env_value, get_settings

PROJECT_DIR = Path(__file__).resolve().parents[2]
_compiled: dict[Path, tuple[int, Pipeline]] = {}
_lock = threading.Lock()
#: seconds between two looks at a pipeline file's modification time
RECHECK_SECONDS = 1.0


def pipelines_dir() -> Path:
    return get_settings().engine.pipelines_dir or PROJECT_DIR / "deployments"


def pipeline_paths(folder: Path | None = None) -> list[Path]:
    folder = folder or pipelines_dir()
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def known_names() -> list[str]:
    return [p.stem for p in pipeline_paths()]


def load_each(folder: Path | None = None) -> list[tuple[Path, Pipeline | SpecError]]:
    """Every pipeline of the folder, or the error that kept it from loading: one bad file
    (malformed, too big, an alias bomb) is reported beside the others instead of hiding them."""
    found: list[tuple[Path, Pipeline | SpecError]] = []
    for path in pipeline_paths(folder):
        try:
            found.append((path, load(str(path))))
        except SpecError as exc:
            found.append((path, exc))
    return found


def resolve(name_or_path: str) -> Path:
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise PipelineNotFound(f"pipeline file {name_or_path} does not exist")
        return path.resolve()
    for suffix in (".yaml", ".yml"):
        path = pipelines_dir() / f"{name_or_path}{suffix}"
        if path.is_file():
            return path.resolve()
    raise PipelineNotFound(f"unknown pipeline '{name_or_path}' in {pipelines_dir()}; known: {', '.join(known_names()) or 'none'}")


_resolved: dict[tuple[str, str], Path] = {}
#: the pipeline last loaded under a name (and FRUGAL_PIPELINES_DIR), and until when it is served without a look at its file
_recent: dict[tuple[str, object], tuple[float, Pipeline]] = {}
_DIR_VARIABLE = "FRUGAL_PIPELINES_DIR"


def load(name_or_path: str) -> Pipeline:
    """The compiled pipeline, from cache unless its file changed (seen within RECHECK_SECONDS)."""
    now = time.monotonic()
    recent = _recent.get((name_or_path, env_value(_DIR_VARIABLE)))
    if recent is not None and now < recent[0]:
        return recent[1]
    pipeline = _load((name_or_path, str(pipelines_dir())), name_or_path)
    _recent[(name_or_path, env_value(_DIR_VARIABLE))] = (now + RECHECK_SECONDS, pipeline)
    return pipeline


def _load(where: tuple[str, str], name_or_path: str) -> Pipeline:
    path = _resolved.get(where)
    try:
        if path is None:
            raise FileNotFoundError(name_or_path)
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        path = _resolved[where] = resolve(name_or_path)
        mtime = path.stat().st_mtime_ns
    with _lock:
        hit = _compiled.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
    pipeline = load_pipeline_file(path)
    with _lock:
        _compiled[path] = (mtime, pipeline)
    return pipeline
