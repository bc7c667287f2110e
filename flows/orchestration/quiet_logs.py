"""One line per failure on the console, not Prefect's crash logging of our own errors.

A failing orchestrated `frugal run` printed ~97 lines with three tracebacks (the task run's,
the flow run's, the engine's) before its one-line error, for an error that already says what
to fix. The filter here, installed on the console handlers only (the run's logs sent to the
Prefect API keep their tracebacks, for the UI), lets a record through unchanged unless it comes
from Prefect's run loggers and is about a `FrugalError`:

- `drop=True` (`frugal run`, which prints the error itself): the record is dropped;
- `drop=False` (`frugal serve`, whose console is the only place a failure shows): the record
  keeps its one-line message and loses its traceback.

`frugal --debug ...` installs nothing: every traceback shows.
"""

from __future__ import annotations

import logging

import prefect  # noqa: F401  (importing Prefect sets up its logging handlers, which this filters)

from tasks.core.errors import FrugalError

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def _frugal_error(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, FrugalError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _error_names() -> frozenset[str]:
    names: set[str] = set()
    pending: list[type[BaseException]] = [FrugalError]
    while pending:
        kind = pending.pop()
        names.add(kind.__name__)
        pending.extend(kind.__subclasses__())
    return frozenset(names)


class FrugalErrorFilter(logging.Filter):
    """Drops (or strips the traceback of) Prefect's run-logger records about our own errors."""

    def __init__(self, drop: bool) -> None:
        super().__init__()
        self.drop = drop
        self.names = _error_names()

    def _about_ours(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not record.name.startswith(RUN_LOGGERS):
            return False
        if record.exc_info and _frugal_error(record.exc_info[1]):
            return True
        # "Finished in state Failed('Task run encountered an exception StepError: ...')"
        message = record.getMessage()
        return any(f"{name}:" in message for name in self.names)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._about_ours(record):
            return True
        if self.drop:
            return False
        record.exc_info, record.exc_text = None, None
        return True


def quiet_frugal_errors(*, drop: bool = True) -> None:
    """Install the filter on every console (stream) handler Prefect's logging set up; idempotent."""
    loggers = [logging.getLogger(), logging.getLogger("prefect"), *(logging.getLogger(n) for n in RUN_LOGGERS)]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not any(isinstance(f, FrugalErrorFilter) for f in handler.filters):
                handler.addFilter(FrugalErrorFilter(drop))
