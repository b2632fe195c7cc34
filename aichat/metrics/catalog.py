"""Every metric aichat exposes, and the calls that move them (docs/operations.md §9).

Nothing here runs per relayed token: a request, a round, an upstream attempt or a database
write moves a counter or a histogram once; the gauges are read when scraped. Labels are
bounded: route templates (never paths), statuses, the fixed kinds of errors and stops, and
provider hosts capped at MAX_PROVIDERS (later ones count as `other`). No user, model or key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from aichat.metrics import process
from aichat.metrics.exposition import (Capped, Counter, Gauge, Histogram, Labels, Metric,
                                       ReadCounter, render)

if TYPE_CHECKING:
    from aichat.chat.registry import Registry

MAX_PROVIDERS = 50
METHODS = frozenset(("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"))
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
FIRST_TOKEN = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
DB_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


def _one(read: Callable[[], float | None]) -> Callable[[], Iterable[tuple[Labels, float]]]:
    def series() -> Iterable[tuple[Labels, float]]:
        value = read()
        return [] if value is None else [((), value)]
    return series


class Metrics:
    def __init__(self, backend: str, registry: Registry) -> None:
        self.backend, self._registry = backend, registry
        self.connections: Callable[[], int | None] = lambda: None  # set once serving
        self.provider = Capped(MAX_PROVIDERS)
        self.requests = Counter(
            "aichat_http_requests_total", "HTTP requests by method, route template and status",
            ("method", "route", "status"))
        self.request_seconds = Histogram(
            "aichat_http_request_duration_seconds",
            "time to answer a request by route template (a stream: until it ends)", SECONDS,
            ("route",))
        self.rounds = Counter(
            "aichat_rounds_total", "chat rounds (source chat) and /v1 requests (source v1) "
            "by outcome; kind: the error's kind or what stopped it", ("source", "outcome",
                                                                       "kind"))
        self.tokens = Counter(
            "aichat_tokens_total", "tokens of ended rounds, as counted in usage: prompt (in) "
            "and completion (out)", ("source", "direction"))
        self.first_token = Histogram(
            "aichat_upstream_first_token_seconds",
            "from sending a streamed upstream request to its first text", FIRST_TOKEN)
        self.upstream_errors = Counter(
            "aichat_upstream_errors_total", "failed upstream attempts by provider host and kind",
            ("provider", "kind"))
        self.retries = Counter("aichat_upstream_retries_total",
                               "upstream attempts repeated after a failure", ("provider",))
        self.fallbacks = Counter("aichat_upstream_fallbacks_total",
                                 "streams that fell back to one non-streamed call",
                                 ("provider",))
        self.db_writes = Histogram(
            "aichat_db_write_seconds", "a write job from its call to its commit (waiting for "
            "the writer included)", DB_SECONDS, ("backend",))
        self.login_failures = Counter(
            "aichat_login_failures_total",
            "failed sign-ins, registrations and password changes")
        self._all: tuple[Metric, ...] = (
            self.requests, self.request_seconds, self.rounds, self.tokens,
            Gauge("aichat_rounds_running", "rounds running on this instance by state: "
                  "attached (a client reads it), detached (its client left, it runs on)",
                  self._running, ("state",)),
            self.first_token, self.upstream_errors, self.retries, self.fallbacks,
            self.db_writes, self.login_failures,
            Gauge("aichat_http_connections_open", "open client connections",
                  _one(lambda: self.connections())),
            Gauge("process_resident_memory_bytes", "resident memory", _one(process.rss_bytes)),
            ReadCounter("process_cpu_seconds_total", "user and system CPU time",
                        _one(process.cpu_seconds)),
            Gauge("process_open_fds", "open file descriptors", _one(process.open_fds)),
            Gauge("process_start_time_seconds", "start time since the epoch",
                  _one(process.start_time)),
        )

    def _running(self) -> Iterable[tuple[Labels, float]]:
        rounds = self._registry.rounds()
        detached = sum(1 for r in rounds if r.detached)
        return [(("attached",), len(rounds) - detached), (("detached",), detached)]

    # --- the calls that move them ---

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.inc(method if method in METHODS else "other", route, str(status))
        self.request_seconds.observe(seconds, route)

    def round_ended(self, source: str, outcome: str, kind: str, prompt: int,
                    completion: int) -> None:
        self.rounds.inc(source, outcome, kind)
        self.tokens.inc(source, "prompt", by=prompt)
        self.tokens.inc(source, "completion", by=completion)

    def upstream_failed(self, host: str | None, kind: str) -> None:
        self.upstream_errors.inc(self.provider(host or ""), kind)

    def retried(self, host: str | None) -> None:
        self.retries.inc(self.provider(host or ""))

    def fell_back(self, host: str | None) -> None:
        self.fallbacks.inc(self.provider(host or ""))

    def wrote(self, seconds: float) -> None:
        self.db_writes.observe(seconds, self.backend)

    def render(self) -> str:
        return render(self._all)


def connections_of(request: Any) -> Callable[[], int | None]:
    """The server's open connections, from aiohttp's connection manager (the request's
    protocol knows it); None if a future aiohttp moves it."""
    manager = getattr(getattr(request, "protocol", None), "_manager", None)
    if manager is None or not hasattr(manager, "connections"):
        return lambda: None
    return lambda: len(manager.connections)
