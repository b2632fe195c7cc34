"""The process's own figures, read from /proc when scraped (Linux; elsewhere: absent)."""

from __future__ import annotations

import os
import resource

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes() -> int:
    """Resident set size now (Linux), else the peak as the OS reports it."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def open_fds() -> float | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def start_time() -> float | None:
    """Seconds since the epoch at which the process started."""
    try:
        with open("/proc/self/stat", "rb") as f:
            started_ticks = int(f.read().rpartition(b")")[2].split()[19])
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return boot + started_ticks / _TICKS
