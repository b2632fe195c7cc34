"""Failure limits for sign-in, registration and password change.

Only credential failures count (a wrong password, an unknown user, a taken username): a
malformed body or a closed registration says nothing about guessing, and counting them would
let one front-end bug lock a whole office behind its NAT address out. Three counters:

- per client address (an IPv6 client usually holds a whole /64, so that is one address):
  past `LOGIN_ADDRESS_LIMIT` failures the address gets 429;
- per (address, username): past `LOGIN_ACCOUNT_LIMIT` failures, 429 — one guesser at one
  account;
- per username, from anywhere: never a refusal (anyone could then lock any account out), but
  past `LOGIN_ACCOUNT_LIMIT` failures every attempt on that name waits, doubling up to 8 s:
  a spread-out guesser slows down while the owner still gets in.

Each counter is a leaky bucket: a failure adds one and the level drains at `limit` per
window, so "10 per 15 minutes" gives back one attempt every 90 s. Memory is bounded: at most
`max_keys` keys per counter; a full table first drops drained keys, then the oldest key still
below its limit, and never a key at its limit (so a flood of cheap new keys cannot reset one).
Counts live in memory: a restart forgives. With several instances on PostgreSQL,
`SharedFailureLimiter` keeps them in the database as well (the table login_failures), so a
guesser gains nothing by spreading attempts over the instances. Behind a reverse proxy every
client shares the proxy's address, so the address comes from X-Forwarded-For when the peer is
a trusted proxy (TRUSTED_PROXIES).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import time
from typing import Any, Callable

from aiohttp import web

from aichat.http.appkeys import metrics_key
from aichat.http.errors import ApiError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

WINDOW_S = 15 * 60
ADDRESS_LIMIT = 30
PAIR_LIMIT = 10
MAX_KEYS = 50_000  # per counter: about 12 MB at most, then the eviction rule above
MAX_DELAY_S = 8.0
_SWEEP_EVERY_S = 60.0
_EVICT_SCAN = 1000  # a full table looks this far for a key below its limit, no further
_USERNAME = re.compile(r"[A-Za-z0-9_]{3,20}")  # no account can have another name


class CredentialError(ApiError):
    """A failure that counts: the caller presented a credential and it was wrong."""


class Buckets:
    """Leaky buckets keyed by string: `level` failures, draining at `limit` per window."""

    def __init__(self, limit: int, window_s: float, max_keys: int,
                 clock: Callable[[], float]) -> None:
        self.limit, self.max_keys, self._clock = limit, max_keys, clock
        self._rate = limit / window_s
        self._levels: dict[str, tuple[float, float]] = {}
        self._swept_at = clock()

    def __len__(self) -> int:
        return len(self._levels)

    def level(self, key: str) -> float:
        entry = self._levels.get(key)
        if entry is None:
            return 0.0
        level, at = entry
        return max(0.0, level - (self._clock() - at) * self._rate)

    def wait_s(self, key: str) -> float:
        """Seconds until `key` may try again; 0 if it may now."""
        excess = self.level(key) - (self.limit - 1)
        return excess / self._rate if excess > 0 else 0.0

    def add(self, key: str) -> None:
        if key not in self._levels and not self._make_room():
            return  # every key is at its limit: the newcomer goes uncounted, none is reset
        self._levels[key] = (self.level(key) + 1, self._clock())

    def forget(self, key: str) -> None:
        self._levels.pop(key, None)

    @property
    def rate(self) -> float:
        """How fast a level drains, per second."""
        return self._rate

    def set(self, key: str, level: float) -> None:
        """Take a level known elsewhere (the shared counts) as this key's level now."""
        if level <= 0:
            self._levels.pop(key, None)
        elif key in self._levels or self._make_room():
            self._levels[key] = (level, self._clock())

    def _make_room(self) -> bool:
        now = self._clock()
        if len(self._levels) < self.max_keys and now - self._swept_at < _SWEEP_EVERY_S:
            return True
        self._swept_at = now
        for key in [k for k in self._levels if self.level(k) == 0]:
            del self._levels[key]
        if len(self._levels) < self.max_keys:
            return True
        for i, key in enumerate(self._levels):
            if i >= _EVICT_SCAN:
                return False
            if self.level(key) <= self.limit - 1:  # not refused now
                del self._levels[key]
                return True
        return False


def address_key(address: str) -> str:
    """The client's address as counted: IPv6 by its /64, IPv4-mapped as IPv4."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]  # not an IP (a Unix socket peer): still bounded
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def client_address(request: web.BaseRequest, trusted: list[IPNetwork]) -> str:
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


def parse_networks(text: str) -> list[IPNetwork]:
    return [ipaddress.ip_network(entry, strict=False) for entry in text.replace(",", " ").split()]


class FailureLimiter:
    """The three counters of this module's docstring, for the whole process."""

    def __init__(self, *, address_limit: int = ADDRESS_LIMIT, pair_limit: int = PAIR_LIMIT,
                 window_s: float = WINDOW_S, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.addresses = Buckets(address_limit, window_s, max_keys, clock)
        self.pairs = Buckets(pair_limit, window_s, max_keys, clock)
        self.names = Buckets(pair_limit, window_s, max_keys, clock)

    def refuse_if_limited(self, address: str, username: str | None) -> None:
        wait = self.addresses.wait_s(address)
        if username is not None:
            wait = max(wait, self.pairs.wait_s(f"{address} {username}"))
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ApiError(429, f"Too many failed attempts; try again in {seconds} seconds",
                           {"Retry-After": str(seconds)})

    def delay_s(self, username: str) -> float:
        """How long an attempt on `username` waits: 0 until it has drawn `pair_limit`
        failures, then 0.25 s doubling per further failure, at most MAX_DELAY_S."""
        excess = self.names.level(username) - (self.names.limit - 1)
        return 0.0 if excess <= 0 else min(MAX_DELAY_S, 0.25 * 2 ** min(excess - 1, 8))

    def failed(self, address: str, username: str | None) -> None:
        self.addresses.add(address)
        if username is not None:
            self.pairs.add(f"{address} {username}")
            self.names.add(username)

    def succeeded(self, address: str, username: str | None) -> None:
        if username is not None:
            self.pairs.forget(f"{address} {username}")

    def _counters(self, address: str,
                  username: str | None) -> list[tuple[str, Buckets, str]]:
        keys = [("a", self.addresses, address)]
        if username is not None:
            keys += [("p", self.pairs, f"{address} {username}"), ("n", self.names, username)]
        return keys

    # Where several instances share the counts (SharedFailureLimiter); here, nothing to do.

    async def load(self, address: str, username: str | None) -> None:
        """Bring the shared levels of these keys into this process's counters."""

    async def record(self, address: str, username: str | None, failed: bool) -> None:
        """Share a failure (or a success, which clears the pair)."""


class SharedFailureLimiter(FailureLimiter):
    """The counters of all instances: each check first loads the keys' levels from the
    database (one query), each failure is added there too. Rows drained for two windows are
    swept by the cluster janitor's clock: `sweep` (store/cluster.py calls it)."""

    def __init__(self, db: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._db = db

    async def load(self, address: str, username: str | None) -> None:
        counters = self._counters(address, username)
        marks = ", ".join("?" for _ in counters)
        rows = await self._db.all(
            "SELECT key, level, extract(epoch FROM clock_timestamp()) - at AS age"
            f" FROM login_failures WHERE key IN ({marks})",
            [f"{kind}:{key}" for kind, _, key in counters])
        levels = {row["key"]: (row["level"], float(row["age"])) for row in rows}
        for kind, buckets, key in counters:
            level, age = levels.get(f"{kind}:{key}", (0.0, 0.0))
            buckets.set(key, max(0.0, level - age * buckets.rate))

    async def record(self, address: str, username: str | None, failed: bool) -> None:
        if not failed:
            if username is not None:
                await self._db.run(_forget, f"p:{address} {username}")
            return
        await self._db.run(_add, [(f"{kind}:{key}", buckets.rate)
                                  for kind, buckets, key in self._counters(address, username)])


async def _add(tx: Any, keys: list[tuple[str, float]]) -> None:
    for key, rate in keys:
        await tx.execute(
            "INSERT INTO login_failures (key, level, at)"
            " VALUES (?, 1, extract(epoch FROM clock_timestamp()))"
            " ON CONFLICT (key) DO UPDATE SET level = GREATEST(0, login_failures.level"
            " - (excluded.at - login_failures.at) * CAST(? AS DOUBLE PRECISION)) + 1,"
            " at = excluded.at", (key, rate))


async def _forget(tx: Any, key: str) -> None:
    await tx.execute("DELETE FROM login_failures WHERE key = ?", (key,))


class Attempt:
    """One sign-in, registration or password change, as an async context manager.

    Entering refuses a limited address; `await attempt.named(username)` adds the username's
    limits (and its slow-down) once the body is read. Leaving with a `CredentialError` counts
    one failure; any other error counts nothing; success clears the (address, username) pair.
    """

    def __init__(self, guard: FailureLimiter, request: web.BaseRequest,
                 trusted: list[IPNetwork]) -> None:
        self._guard = guard
        self._address = address_key(client_address(request, trusted))
        self._username: str | None = None
        self._metrics = request.config_dict.get(metrics_key) \
            if isinstance(request, web.Request) else None

    async def named(self, username: object) -> None:
        if not isinstance(username, str) or not _USERNAME.fullmatch(username):
            return  # no account has such a name: the address alone is counted
        self._username = username
        await self._guard.load(self._address, username)
        self._guard.refuse_if_limited(self._address, username)
        delay = self._guard.delay_s(username)
        if delay:
            await asyncio.sleep(delay)

    async def __aenter__(self) -> Attempt:
        await self._guard.load(self._address, None)
        self._guard.refuse_if_limited(self._address, None)
        return self

    async def __aexit__(self, exc_type: type | None, exc: BaseException | None,
                        tb: object) -> None:
        if exc is None:
            self._guard.succeeded(self._address, self._username)
            await self._guard.record(self._address, self._username, failed=False)
        elif isinstance(exc, CredentialError):
            if self._metrics is not None:
                self._metrics.login_failures.inc()
            self._guard.failed(self._address, self._username)
            await self._guard.record(self._address, self._username, failed=True)
