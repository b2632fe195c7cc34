"""Per-process CPU time and resident memory, read from /proc (Linux)."""

from __future__ import annotations

import asyncio
import os

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process so far."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based) in proc(5).
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


class Sampler:
    """Samples a process's RSS every `interval` seconds while a load runs."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append(rss_bytes(self.pid))
            await asyncio.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self.cpu_start = cpu_seconds(self.pid)
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = cpu_seconds(self.pid) - self.cpu_start
        self.samples.append(rss_bytes(self.pid))
        if self._task is not None:
            self._task.cancel()

    @property
    def peak(self) -> int:
        return max(self.samples) if self.samples else 0
