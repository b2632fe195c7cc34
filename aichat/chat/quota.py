"""Quotas (docs/api.md §9): the limits a request is under, the check before a round starts,
the hold its prompt keeps while it runs, and where a user stands.

Minutes, days and months are UTC calendar periods. A round is admitted when its prompt fits
what is left once the rounds in flight are counted at their prompts; its reply is counted
when it ends, so rounds in flight together can pass a token or cost limit by their replies
(never by their prompts), and the next request is refused.
"""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, TypeVar

from aichat.http.appkeys import clock_key, db_key, registry_key
from aichat.http.errors import ApiError
from aichat.settings.system import StreamSettings
from aichat.store import prices, quotas
from aichat.store.base import Database, Transaction
from aichat.store.quotas import Ask, Periods, Standing
from aichat.store.users import User
from aichat.timeutil import iso

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits in force for one request (None: unlimited); cost in billionths."""

    requests_per_minute: int | None
    tokens_per_day: int | None
    tokens_per_month: int | None
    cost_per_month_nanos: int | None
    max_streams: int
    key_tokens_per_month: int | None = None  # the API key's own (POST /api/keys)

    @classmethod
    def of(cls, user: User, settings: StreamSettings) -> Limits:
        """The user's own limits where an admin set them, else the system defaults."""
        cost = user.cost_per_month_micros
        return cls(
            _first(user.requests_per_minute, settings.requests_per_minute),
            _first(user.tokens_per_day, settings.tokens_per_day),
            _first(user.tokens_per_month, settings.tokens_per_month),
            cost * 1000 if cost is not None else settings.cost_per_month_nanos,
            _first(user.max_concurrent_streams, settings.max_streams) or settings.max_streams)

    @property
    def holds(self) -> bool:
        """Whether a round must hold its prompt: some token or cost limit applies."""
        return any(limit is not None for limit in (
            self.tokens_per_day, self.tokens_per_month, self.cost_per_month_nanos,
            self.key_tokens_per_month))

    @property
    def any(self) -> bool:
        return self.holds or self.requests_per_minute is not None


def _first(own: int | None, default: int | None) -> int | None:
    return own if own is not None else default


def periods(now: datetime) -> Periods:
    month = f"{now.year:04d}-{now.month:02d}"
    day = f"{month}-{now.day:02d}"
    following = _next_month(now)
    return Periods(f"{day}T{now.hour:02d}:{now.minute:02d}", day, f"{month}-01",
                   f"{following.year:04d}-{following.month:02d}-01")


def _next_month(now: datetime) -> datetime:
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def resets(now: datetime) -> dict[str, datetime]:
    """When each period after `now` begins: its limit's reset."""
    minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    return {"minute": minute, "day": day, "month": _next_month(now)}


def grouped(number: int) -> str:
    """50000 as "50 000", as the messages write numbers."""
    return f"{number:,}".replace(",", " ")


def money(nanos: int) -> str:
    """An amount of the currency with at least two decimals and at most nine."""
    text = format(Decimal(nanos) / prices.NANOS, "f")
    whole, _, cents = text.partition(".")
    return f"{whole}.{cents.rstrip('0').ljust(2, '0')}"


@dataclass(frozen=True, slots=True)
class Meter:
    """One limit against one count: the quota's unit of account."""

    name: str  # the camelCase name of docs/api.md §9
    limit: int | None
    used: int
    reserved: int
    period: str  # "minute", "day" or "month": when it resets
    words: str  # the message's name of it

    def left(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used - self.reserved)

    def refuses(self, need: int) -> bool:
        """Whether `need` more would pass the limit (needing nothing of it never does: an
        unpriced model's round and a cost limit already passed)."""
        return (self.limit is not None and need > 0
                and self.used + self.reserved + need > self.limit)


def meters(limits: Limits, now: Standing, currency: str) -> list[Meter]:
    """The limits of a request, each against the standing (prompts in flight: `reserved`)."""
    return [
        Meter("requestsPerMinute", limits.requests_per_minute, now.requests, 0, "minute",
              "Request limit of {} per minute"),
        Meter("tokensPerDay", limits.tokens_per_day, now.day_tokens, now.held_tokens, "day",
              "Daily token limit of {}"),
        Meter("tokensPerMonth", limits.tokens_per_month, now.month_tokens, now.held_tokens,
              "month", "Monthly token limit of {}"),
        Meter("costPerMonth", limits.cost_per_month_nanos, now.month_cost_nanos,
              now.held_cost_nanos, "month", "Monthly cost limit of {} " + currency),
        Meter("keyTokensPerMonth", limits.key_tokens_per_month, now.key_month_tokens,
              now.key_held_tokens, "month", "This API key's monthly token limit of {}"),
    ]


def _needs(ask: Ask) -> dict[str, int]:
    return {"requestsPerMinute": 1, "costPerMonth": ask.cost_nanos, "tokensPerDay": ask.tokens,
            "tokensPerMonth": ask.tokens, "keyTokensPerMonth": ask.tokens}


@dataclass(frozen=True, slots=True)
class Refusal:
    meter: Meter
    message: str
    reset: datetime


def refusal(limits: Limits, ask: Ask, now: datetime, currency: str,
            standing: Standing) -> Refusal | None:
    """The limit this request would pass, if any: of several, the one that resets last (the
    earliest moment a retry can succeed)."""
    needs, when = _needs(ask), resets(now)
    hit = [m for m in meters(limits, standing, currency) if m.refuses(needs[m.name])]
    if not hit:
        return None
    meter = max(hit, key=lambda m: when[m.period])
    reset = when[meter.period]
    assert meter.limit is not None
    shown = money(meter.limit) if meter.name == "costPerMonth" else grouped(meter.limit)
    message = meter.words.format(shown) + " reached"
    left = meter.left()
    if left and meter.name != "requestsPerMinute":
        need = needs[meter.name]
        amount = money if meter.name == "costPerMonth" else grouped
        message += f" ({amount(left)} left; this request needs about {amount(need)})"
    return Refusal(meter, f"{message}; resets at {iso(reset)}", reset)


def rate_headers(limits: Limits, standing: Standing, ask: Ask, now: datetime,
                 admitted: bool) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers (requests, and the token limit with the least left),
    after this request if `admitted`."""
    headers: dict[str, str] = {}
    when = resets(now)
    for kind, candidates in (("requests", ("requestsPerMinute",)),
                             ("tokens", ("tokensPerDay", "tokensPerMonth", "keyTokensPerMonth"))):
        applying = [m for m in meters(limits, standing, "") if m.name in candidates
                    and m.limit is not None]
        if not applying:
            continue
        need = _needs(ask)[applying[0].name] if admitted else 0
        meter = min(applying, key=lambda m: (m.left() or 0) - need)
        left = max(0, (meter.left() or 0) - need)
        seconds = max(1, math.ceil((when[meter.period] - now).total_seconds()))
        headers.update({f"x-ratelimit-limit-{kind}": str(meter.limit),
                        f"x-ratelimit-remaining-{kind}": str(left),
                        f"x-ratelimit-reset-{kind}": f"{seconds}s"})
    return headers


class Hold:
    """A round's prompt held against the limits (a quota_holds row), released once: in the
    commit that stores the round's usage row (`take`), else when the round ends or, if it
    never started, when the request that opened it ends (`holding`)."""

    def __init__(self, db: Database | None = None, hold_id: int | None = None) -> None:
        self.db, self.id = db, hold_id
        self.owned = False  # by a started round, which releases it

    def take(self) -> int | None:
        hold_id, self.id = self.id, None
        return hold_id

    def put_back(self, hold_id: int | None) -> None:
        self.id = hold_id

    async def release(self) -> None:
        hold_id = self.take()
        if hold_id is not None and self.db is not None:
            await self.db.run(quotas.release, hold_id)


@dataclass(slots=True)
class Admission:
    """An admitted request: the hold its round takes, and what its rate headers are made of."""

    hold: Hold
    limits: Limits | None = None  # None: no limit applies, nothing was read
    standing: Standing | None = None
    ask: Ask | None = None
    now: datetime | None = None

    def headers(self) -> dict[str, str]:
        """OpenAI's `x-ratelimit-*` headers (only /v1 sends them on success)."""
        if self.limits is None or self.standing is None or self.ask is None or self.now is None:
            return {}
        return rate_headers(self.limits, self.standing, self.ask, self.now, admitted=True)


async def admit(app: Mapping[Any, Any], limits: Limits, ask: Ask, currency: str,
                then: Callable[[Transaction], Awaitable[T]] | None = None
                ) -> tuple[Admission, T | None]:
    """Check the request against `limits` and count it, or 429 naming the limit and its
    reset; then run the store job `then` (a chat round's user message) in the same commit,
    only if admitted. No limit set: nothing is read or written but `then`'s rows."""
    db: Database = app[db_key]
    if not limits.any:
        return Admission(Hold()), (await db.run(then) if then is not None else None)
    now = app[clock_key].now()
    cluster = app[registry_key].cluster
    ask = Ask(ask.user_id, ask.api_key_id, ask.tokens, ask.cost_nanos,
              request=limits.requests_per_minute is not None, hold=limits.holds,
              instance=cluster.instance if cluster is not None else 0)
    at = periods(now)

    async def job(tx: Transaction) -> tuple[Standing, Refusal | None, int | None, T | None]:
        standing, refused, hold_id = await quotas.admit(
            tx, ask, at, lambda standing: refusal(limits, ask, now, currency, standing))
        done = await then(tx) if refused is None and then is not None else None
        return standing, refused, hold_id, done

    standing, refused, hold_id, done = await db.run(job)
    if refused is not None:
        seconds = max(1, math.ceil((refused.reset - now).total_seconds()))
        raise ApiError(429, refused.message, {
            "Retry-After": str(seconds),
            **rate_headers(limits, standing, ask, now, admitted=False)})
    return Admission(Hold(db, hold_id), limits, standing, ask, now), done


@asynccontextmanager
async def holding(hold: Hold) -> AsyncIterator[None]:
    """Inside, a round is started with `hold`, or the hold is released on the way out."""
    try:
        yield
    finally:
        if not hold.owned:
            await hold.release()


def prompt_cost(model: Mapping[str, Any], tokens: int) -> int:
    """What a prompt costs at the model's prices (0 without them: an unpriced model's rounds
    do not count against a cost limit)."""
    return prices.cost_nanos(tokens, 0, model.get("input_price_micros"),
                             model.get("output_price_micros")) or 0


async def report(app: Mapping[Any, Any], user: User, limits: Limits,
                 currency: str) -> dict[str, Any]:
    """GET /api/quota: each limit, what is used in its current period, what rounds in flight
    hold, what remains and when it resets."""
    now = app[clock_key].now()
    standing = await quotas.standing(app[db_key], user.id, 0, periods(now))
    when = resets(now)
    out: dict[str, Any] = {}
    for meter in meters(limits, standing, currency)[:4]:
        as_amount = prices.from_nanos if meter.name == "costPerMonth" else (lambda n: n)
        left = meter.left()
        out[meter.name] = {
            "limit": as_amount(meter.limit) if meter.limit is not None else None,
            "used": as_amount(meter.used), "reserved": as_amount(meter.reserved),
            "remaining": as_amount(left) if left is not None else None,
            "resetsAt": iso(when[meter.period])}
    running = await app[registry_key].streams_of(user.id)
    out["maxConcurrentStreams"] = {"limit": limits.max_streams, "used": running,
                                   "reserved": 0,
                                   "remaining": max(0, limits.max_streams - running),
                                   "resetsAt": None}
    return {"currency": currency, "limits": out}
