"""The logger a step should use: Prefect's run logger inside a run, else `frugal`.

A process that has not imported Prefect (an inline run, the gateway) is in no run, and does not
import it here.
"""

from __future__ import annotations

import logging
import sys


def step_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    if "prefect.context" not in sys.modules:
        return logging.getLogger("frugal")
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("frugal")
