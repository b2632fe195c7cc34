"""The load generator: SSE streams and plain requests, with per-request timings.

It reads as little as it can (it counts `\\n\\n` event ends and looks for the first content
marker) so that, on a small box, the client does not become the bottleneck it measures.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass(slots=True)
class StreamResult:
    ok: bool = False
    error: str | None = None
    t_headers: float | None = None
    t_first_event: float | None = None
    t_first_content: float | None = None
    total: float | None = None
    events: int = 0
    content_events: int = 0
    bytes: int = 0
    gaps: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a stream goes and how its events look."""

    url: str
    body: dict[str, Any]
    headers: dict[str, str]
    content_marker: bytes  # present in an event that carries text
    end_marker: bytes  # present in the event that closes a good stream


async def stream(http: aiohttp.ClientSession, target: Target, timeout: float) -> StreamResult:
    result = StreamResult()
    start = time.perf_counter()
    last = start
    tail = b""
    try:
        async with asyncio.timeout(timeout):
            async with http.post(target.url, json=target.body,
                                 headers=target.headers) as response:
                result.t_headers = time.perf_counter() - start
                if response.status != 200:
                    result.error = f"status {response.status}"
                    await response.read()
                    return result
                saw_end = False
                async for piece in response.content.iter_any():
                    now = time.perf_counter()
                    result.bytes += len(piece)
                    data = tail + piece
                    cut = data.rfind(b"\n\n")
                    if cut < 0:
                        tail = data
                        continue
                    complete, tail = data[:cut + 2], data[cut + 2:]
                    if result.t_first_event is None:
                        result.t_first_event = now - start
                    if result.t_first_content is None and target.content_marker in complete:
                        result.t_first_content = now - start
                    result.content_events += complete.count(target.content_marker)
                    result.events += complete.count(b"\n\n")
                    result.gaps.append(now - last)
                    last = now
                    saw_end = saw_end or target.end_marker in complete
                result.total = time.perf_counter() - start
                if tail.strip():
                    result.error = "broken stream (body ended inside an event)"
                elif not saw_end:
                    result.error = "missing end event"
                else:
                    result.ok = True
    except TimeoutError:
        result.error = "timeout"
    except aiohttp.ClientError as e:
        result.error = f"broken stream ({type(e).__name__})"
    return result


async def wave(http: aiohttp.ClientSession, targets: list[Target],
               timeout: float) -> list[StreamResult]:
    """All `targets` at once."""
    return list(await asyncio.gather(*(stream(http, t, timeout) for t in targets)))


async def sequential(http: aiohttp.ClientSession, targets: list[Target], seconds: float,
                     timeout: float) -> list[StreamResult]:
    """One stream at a time for `seconds`, cycling through `targets`."""
    results = []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        results.append(await stream(http, targets[i % len(targets)], timeout))
        i += 1
    return results


@dataclass(slots=True)
class RequestStats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0


async def requests(http: aiohttp.ClientSession, url: str, headers: dict[str, str],
                   total: int, concurrency: int) -> RequestStats:
    """`total` GETs from `concurrency` workers as fast as the server answers."""
    stats = RequestStats()
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            try:
                async with http.get(url, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        stats.errors += 1
            except aiohttp.ClientError:
                stats.errors += 1
            stats.latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    stats.elapsed = time.perf_counter() - start
    return stats
