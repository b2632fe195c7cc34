"""Failure limits for login and registration: 10 failures in 15 minutes, then 429.

Counted per client address and per username, in memory (a restart forgives; one process is
the whole service). Behind a reverse proxy every client shares the proxy's address, so the
address is taken from X-Forwarded-For when the peer is a trusted proxy (TRUSTED_PROXIES).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from typing import Callable

from aiohttp import web

from aichat.http.errors import ApiError

LIMIT = 10
WINDOW_S = 15 * 60
MAX_KEYS = 100_000  # bounded memory under a spray of usernames or addresses


class FailureLimiter:
    def __init__(self, limit: int = LIMIT, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def check(self, keys: list[str]) -> None:
        """429 with Retry-After if any key is at its limit."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            times = self._recent(key, now)
            if times is not None and len(times) >= self.limit:
                wait = max(wait, times[0] + self.window_s - now)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ApiError(429, f"Too many failed attempts; try again in {seconds} seconds",
                           {"Retry-After": str(seconds)})

    def failed(self, keys: list[str]) -> None:
        now = self._clock()
        for key in keys:
            times = self._recent(key, now)
            if times is None:
                if len(self._failures) >= MAX_KEYS:
                    del self._failures[next(iter(self._failures))]
                times = self._failures[key] = deque()
            times.append(now)

    def forgive(self, key: str) -> None:
        self._failures.pop(key, None)


def client_address(request: web.Request, trusted: list[ipaddress.IPv4Network |
                                                     ipaddress.IPv6Network]) -> str:
    """The peer, or the rightmost X-Forwarded-For entry not added by a trusted proxy."""
    peer = request.remote or ""
    chain = [peer] + [part.strip() for part in
                      reversed(request.headers.get("X-Forwarded-For", "").split(","))
                      if part.strip()]
    for hop in chain:
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            return hop
        if not any(ip.version == net.version and ip in net for net in trusted):
            return hop
    return chain[-1]


def parse_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(entry, strict=False) for entry in text.replace(",", " ").split()]


class Attempt:
    """One login or registration attempt: checked up front, counted if it fails.

    `async with Attempt(limiter, request, trusted) as attempt:` checks the client address;
    `attempt.named(username)` adds and checks the username once the body is read. Any ApiError
    other than the 429 itself counts as a failure; success forgives the username.
    """

    def __init__(self, limiter: FailureLimiter, request: web.Request,
                 trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self._limiter = limiter
        self._keys = [f"ip:{client_address(request, trusted)}"]
        self._user_key: str | None = None

    def named(self, username: object) -> None:
        if isinstance(username, str) and username:
            self._user_key = f"user:{username}"
            self._keys.append(self._user_key)
            self._limiter.check([self._user_key])

    async def __aenter__(self) -> Attempt:
        self._limiter.check(self._keys)
        return self

    async def __aexit__(self, exc_type: type | None, exc: BaseException | None,
                        tb: object) -> None:
        if exc is None:
            if self._user_key:
                self._limiter.forgive(self._user_key)
        elif isinstance(exc, ApiError) and exc.status != 429:
            self._limiter.failed(self._keys)
