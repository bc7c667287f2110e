"""What the machine is doing, for the benchmarks: this process's peak RSS, other processes' CPU time,
and how busy the CPUs are (a run starts on a quiet machine). Linux's /proc; elsewhere the figures
fall back or read as zero."""

from __future__ import annotations

import contextlib
import os
import resource
import time
from pathlib import Path

QUIET_BUSY = 0.15  # a run starts once at most this share of the CPUs was busy over half a second


def reset_peak_rss() -> None:
    """Reset the kernel's high-water mark of this process's RSS (VmHWM), so each run has its own peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds_of(pids: list[int]) -> float:
    """CPU time (user + system) these processes have used so far."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def busy_share(seconds: float = 0.5) -> float:
    """The share of the machine's CPU time that was busy over the next `seconds` (Linux; 0.0 elsewhere)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_until_quiet(limit: float = QUIET_BUSY, timeout: float = 60.0) -> None:
    """Start a run on a quiet machine: the work a run leaves behind (a Prefect server still taking in its
    events and task runs, a worker finishing) must not count against the next run."""
    started = time.perf_counter()
    while (busy := busy_share()) > limit and time.perf_counter() - started < timeout:
        pass
    waited = time.perf_counter() - started
    if waited > 1.0:
        print(f"  (waited {waited:.0f} s for the machine to be quiet: {busy:.0%} of its CPU busy)", flush=True)
