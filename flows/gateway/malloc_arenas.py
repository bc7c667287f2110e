"""Fewer malloc arenas for the gateway's long-lived process (glibc only).

glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core) and
seldom hands their freed pages back. The gateway's threads (the encoder's, the ledger writer's,
the event loop's) allocate in bursts, so its resident memory crept up under steady traffic.
Measured with the gateway on a 50 ms stand-in (70 % hits at concurrency 32 for 15 s, then
cache hits at concurrency 8; docs/performance.md), RSS after ~1.4k requests and after ~90-117k:
default arenas +11.1 % and +11.5 % (279.3 -> 311.3 MB), two arenas +6.6 % (278.4 -> 296.9 MB)
and +6.3 to +8.7 % in four more runs (one run +14 %), at the same requests/s.
`MALLOC_ARENA_MAX`, if set, is left to glibc.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

#: glibc's mallopt parameter for the most arenas
M_ARENA_MAX = -8
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap this process's malloc arenas (before its threads start); False where that cannot be done."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already has (no `ldconfig` run to find it)
    except (OSError, AttributeError):  # no mallopt (macOS, musl): nothing to do
        return False
    done = bool(mallopt(M_ARENA_MAX, arenas))
    if not done:
        log.debug("mallopt(M_ARENA_MAX, %d) was refused", arenas)
    return done
