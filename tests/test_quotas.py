"""Quotas (docs/api.md §9): an admin's view and overrides of a user's limits, the system
defaults, where a user stands (`GET /api/quota`), the UTC periods' resets, and an API key's own
monthly token limit. Refusals under load and the /v1 rate headers: test_quota_enforcement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aichat.http.appkeys import clock_key

from .fake_upstream import Reply
from .helpers import Api, Chat, SSEStream, User

NAMES = ("requestsPerMinute", "tokensPerDay", "tokensPerMonth", "costPerMonth",
         "maxConcurrentStreams")
COLUMNS = ("requests_per_minute", "tokens_per_day", "tokens_per_month", "cost_per_month_micros",
           "max_concurrent_streams")
UNSET = dict.fromkeys(NAMES)
BUILT_IN = {**UNSET, "maxConcurrentStreams": 3}  # every default but the streams': unlimited
DEFAULT_KEYS = ("default_requests_per_minute", "default_tokens_per_day",
                "default_tokens_per_month", "default_cost_per_month")
INT_RULE = "{} must be an integer from {} to {}"
COST_RULE = "{} must be a number from 0 to 1000000000 with at most 6 decimals"
RANGES = {"requestsPerMinute": (1, 1_000_000), "tokensPerDay": (1, 10**12),
          "tokensPerMonth": (1, 10**12), "maxConcurrentStreams": (1, 10_000)}
PRICED = {"inputPricePerMTok": 2.5, "outputPricePerMTok": 10}
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
USAGE_2 = {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
# At PRICED: 11 × 2.5 + 7 × 10 = 97.5 and 30 × 2.5 + 12 × 10 = 195 per million, in billionths.
NANOS, NANOS_2 = 97_500, 195_000


def amount(nanos: int) -> float:
    """Billionths of the currency as the API shows them."""
    return float(Decimal(nanos) / 1_000_000_000)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def set_clock(api: Api, moment: datetime | None) -> None:
    api.client.app[clock_key].set(moment)


def limits_path(user_id: int) -> str:
    return f"/api/users/{user_id}/limits"


async def limits_of(api: Api, user_id: int) -> dict[str, Any]:
    return await api.ok("GET", limits_path(user_id), "admin")


async def put_limits(api: Api, user_id: int, body: dict[str, Any]) -> dict[str, Any]:
    data = await api.ok("PUT", limits_path(user_id), "admin", json=body)
    assert await limits_of(api, user_id) == data, body
    return data


async def stored_limits(api: Api, user_id: int) -> tuple:
    [row] = await api.rows(f"SELECT {', '.join(COLUMNS)} FROM users WHERE id = ?", (user_id,))
    return row


async def quota(api: Api, user: User) -> dict[str, Any]:
    """The user's own quota, checked equal to what an admin sees of it."""
    data = await api.ok("GET", "/api/quota", user)
    assert await api.ok("GET", f"/api/users/{user.id}/quota", "admin") == data
    return data


async def round_(chat: Chat, usage: dict[str, int] = USAGE, user: User | None = None,
                 session_id: int | None = None) -> None:
    chat.upstream.queue(Reply(tokens=["ok"], usage=usage))
    stream = await chat.stream("Hi", user=user, session_id=session_id)
    assert stream.types()[-1] == "complete", stream.events


async def used_rows(api: Api, user_id: int) -> tuple[int, int]:
    """The user's usage rows summed here: (tokens, billionths)."""
    rows = await api.rows("SELECT total_tokens, cost_nanos FROM usage_metrics WHERE user_id = ?",
                          (user_id,))
    return sum(t for t, _ in rows), sum(c or 0 for _, c in rows)


# --- GET|PUT /api/users/:id/limits ---

async def test_a_new_user_has_no_own_limits_and_the_built_in_defaults(api):
    alice = await api.register("alice")
    assert await limits_of(api, alice.id) == {**UNSET, "defaults": BUILT_IN,
                                              "effective": BUILT_IN}
    assert await stored_limits(api, alice.id) == (None,) * 5


async def test_put_limits_sets_keeps_absent_ones_and_null_returns_to_the_default(api):
    alice = await api.register("alice")
    bob = await api.register("bob")

    async def put(body: dict[str, Any], own: dict[str, Any], stored: tuple) -> None:
        data = await put_limits(api, alice.id, body)
        expected_own = {**UNSET, **own}
        assert {name: data[name] for name in NAMES} == expected_own, body
        assert data["defaults"] == BUILT_IN
        assert data["effective"] == {name: BUILT_IN[name] if expected_own[name] is None
                                     else expected_own[name] for name in NAMES}
        assert await stored_limits(api, alice.id) == stored, body

    await put({"tokensPerDay": 5000, "costPerMonth": 1.25},
              {"tokensPerDay": 5000, "costPerMonth": 1.25}, (None, 5000, None, 1_250_000, None))
    # Absent names are kept.
    await put({"requestsPerMinute": 60, "maxConcurrentStreams": 1},
              {"requestsPerMinute": 60, "tokensPerDay": 5000, "costPerMonth": 1.25,
               "maxConcurrentStreams": 1}, (60, 5000, None, 1_250_000, 1))
    await put({}, {"requestsPerMinute": 60, "tokensPerDay": 5000, "costPerMonth": 1.25,
                   "maxConcurrentStreams": 1}, (60, 5000, None, 1_250_000, 1))
    # null: back to the default, the others kept.
    await put({"tokensPerDay": None, "maxConcurrentStreams": None, "tokensPerMonth": 9},
              {"requestsPerMinute": 60, "tokensPerMonth": 9, "costPerMonth": 1.25},
              (60, None, 9, 1_250_000, None))
    # Cost is exact to the millionth, and 0 is a limit (blocks every priced round), not unset.
    await put({"costPerMonth": 0.000001}, {"requestsPerMinute": 60, "tokensPerMonth": 9,
                                           "costPerMonth": 0.000001}, (60, None, 9, 1, None))
    await put({"costPerMonth": 0}, {"requestsPerMinute": 60, "tokensPerMonth": 9,
                                    "costPerMonth": 0}, (60, None, 9, 0, None))
    await put(dict(UNSET), {}, (None,) * 5)
    # The ends of every range.
    await put({"requestsPerMinute": 1, "tokensPerDay": 1, "tokensPerMonth": 1,
               "costPerMonth": 123.456789, "maxConcurrentStreams": 1},
              {"requestsPerMinute": 1, "tokensPerDay": 1, "tokensPerMonth": 1,
               "costPerMonth": 123.456789, "maxConcurrentStreams": 1},
              (1, 1, 1, 123_456_789, 1))
    await put({"costPerMonth": 999_999_999.999999}, {
        "requestsPerMinute": 1, "tokensPerDay": 1, "tokensPerMonth": 1,
        "costPerMonth": 999_999_999.999999, "maxConcurrentStreams": 1},
        (1, 1, 1, 999_999_999_999_999, 1))
    highest = {"requestsPerMinute": 1_000_000, "tokensPerDay": 10**12, "tokensPerMonth": 10**12,
               "costPerMonth": 1_000_000_000, "maxConcurrentStreams": 10_000}
    await put(highest, highest, (1_000_000, 10**12, 10**12, 10**15, 10_000))
    # Another user's limits are theirs alone.
    assert await limits_of(api, bob.id) == {**UNSET, "defaults": BUILT_IN, "effective": BUILT_IN}


async def test_effective_limits_follow_the_system_defaults_unless_the_user_has_their_own(api):
    alice = await api.register("alice")
    bob = await api.register("bob")
    defaults = {"requestsPerMinute": 100, "tokensPerDay": 1000, "tokensPerMonth": 20000,
                "costPerMonth": 2.5, "maxConcurrentStreams": 5}
    await api.ok("PUT", "/api/settings/system", "admin", json={
        "default_requests_per_minute": 100, "default_tokens_per_day": 1000,
        "default_tokens_per_month": 20000, "default_cost_per_month": 2.5,
        "max_concurrent_streams": 5})
    assert await limits_of(api, alice.id) == {**UNSET, "defaults": defaults,
                                              "effective": defaults}

    # An own limit beats the default, higher or lower; a cost of 0 too.
    own = {"tokensPerDay": 50000, "tokensPerMonth": 10, "costPerMonth": 0,
           "maxConcurrentStreams": 1}
    data = await put_limits(api, alice.id, own)
    assert data == {**UNSET, **own, "defaults": defaults, "effective": {**defaults, **own}}
    assert await limits_of(api, bob.id) == {**UNSET, "defaults": defaults,
                                            "effective": defaults}

    # Defaults removed: what alice has of her own stays in force, the rest is built in again.
    await api.ok("PUT", "/api/settings/system", "admin",
                 json={**dict.fromkeys(DEFAULT_KEYS), "max_concurrent_streams": None})
    assert await limits_of(api, alice.id) == {**UNSET, **own, "defaults": BUILT_IN,
                                              "effective": {**BUILT_IN, **own}}
    assert await limits_of(api, bob.id) == {**UNSET, "defaults": BUILT_IN, "effective": BUILT_IN}


def bad_limits() -> list[tuple[str, Any, str]]:
    """(name, bad value, the 400's message) for every limit."""
    cases: list[tuple[str, Any, str]] = []
    for name, (lo, hi) in RANGES.items():
        rule = INT_RULE.format(name, lo, hi)
        cases += [(name, bad, rule) for bad in (lo - 1, hi + 1, -1, str(lo), 2.5, float(lo),
                                                True, [lo], {"value": lo})]
    cost_rule = COST_RULE.format("costPerMonth")
    cases += [("costPerMonth", bad, cost_rule) for bad in (
        -0.000001, -1, 0.0000001, 1.2500001, 1_000_000_000.000001, 1_000_000_001, "1.25", "",
        True, False, [1.25])]
    return cases


async def test_a_bad_limit_is_a_400_naming_it_and_changes_nothing(api):
    alice = await api.register("alice")
    before = await put_limits(api, alice.id, {"requestsPerMinute": 7, "tokensPerDay": 700,
                                              "costPerMonth": 0.7})
    stored = await stored_limits(api, alice.id)
    valid = {"requestsPerMinute": 8, "tokensPerDay": 800, "tokensPerMonth": 8000,
             "costPerMonth": 0.8, "maxConcurrentStreams": 8}
    for name, bad, rule in bad_limits():
        error = await api.error("PUT", limits_path(alice.id), "admin", 400,
                                json={**valid, name: bad})
        assert error == rule, (name, bad, error)
    await api.error("PUT", limits_path(alice.id), "admin", 400, "Invalid JSON body", data=b"{")
    assert await limits_of(api, alice.id) == before
    assert await stored_limits(api, alice.id) == stored


async def test_limit_routes_are_for_admins_and_unknown_users_are_404(api):
    alice = await api.register("alice")
    bob = await api.register("bob")
    routes = [("GET", limits_path(alice.id), None), ("PUT", limits_path(alice.id),
                                                     {"tokensPerDay": 1}),
              ("GET", f"/api/users/{alice.id}/quota", None)]
    for method, path, body in routes:
        await api.error(method, path, None, 401, json=body)
        # A user is refused even their own.
        for user in (bob, alice):
            await api.error(method, path, user, 403, "Admin", json=body)
        unknown = path.replace(f"/{alice.id}/", "/999999/")
        await api.error(method, unknown, "admin", 404, "User not found", json=body)
        await api.error(method, path.replace(f"/{alice.id}/", "/abc/"), "admin", 400,
                        "Invalid user ID", json=body)
    await api.error("PUT", limits_path(999999), "admin", 404, "User not found", json={})
    assert await stored_limits(api, alice.id) == (None,) * 5


# --- the system defaults: /api/settings/system ---

async def test_system_default_limits_are_null_until_an_admin_sets_them(api):
    bob = await api.register("bob")

    async def check(values: dict[str, Any], source: str) -> None:
        for user in (bob, "admin"):
            data = await api.ok("GET", "/api/settings/system", user)
            assert {key: data[key] for key in DEFAULT_KEYS} == values
            assert {key: data["sources"][key] for key in DEFAULT_KEYS} == dict.fromkeys(
                DEFAULT_KEYS, source)

    await check(dict.fromkeys(DEFAULT_KEYS), "default")
    values = {"default_requests_per_minute": 60, "default_tokens_per_day": 50_000,
              "default_tokens_per_month": 1_000_000, "default_cost_per_month": 5.25}
    data = await api.ok("PUT", "/api/settings/system", "admin", json=values)
    assert {key: data[key] for key in DEFAULT_KEYS} == values
    await check(values, "admin")
    for cost in (0.000001, 0, 123.456789, 999_999_999.999999, 1_000_000_000, 7):
        data = await api.ok("PUT", "/api/settings/system", "admin",
                            json={"default_cost_per_month": cost})
        assert data["default_cost_per_month"] == cost
        await check({**values, "default_cost_per_month": cost}, "admin")
        limits = await limits_of(api, bob.id)
        assert limits["defaults"]["costPerMonth"] == cost
        assert limits["effective"]["costPerMonth"] == cost
    await api.ok("PUT", "/api/settings/system", "admin", json=dict.fromkeys(DEFAULT_KEYS))
    await check(dict.fromkeys(DEFAULT_KEYS), "default")
    assert await api.rows("SELECT key FROM system_settings WHERE key LIKE 'default_%'") == []


async def test_the_highest_system_defaults_are_kept(api):
    """Every value PUT accepts is stored and in force: 10**11 and 10**12 tokens too."""
    bob = await api.register("bob")
    for tokens in (99_999_999_999, 10**11, 10**12):
        values = {"default_requests_per_minute": 1_000_000, "default_tokens_per_day": tokens,
                  "default_tokens_per_month": tokens}
        data = await api.ok("PUT", "/api/settings/system", "admin", json=values)
        assert {key: data[key] for key in values} == values, tokens
        assert {key: data["sources"][key] for key in values} == dict.fromkeys(values, "admin")
        effective = (await limits_of(api, bob.id))["effective"]
        assert (effective["tokensPerDay"], effective["tokensPerMonth"]) == (tokens, tokens)


async def test_a_bad_system_default_is_a_400_naming_the_key_and_stores_nothing(api):
    await api.ok("PUT", "/api/settings/system", "admin", json={"default_tokens_per_day": 500})
    before = await api.ok("GET", "/api/settings/system", "admin")
    cases: list[tuple[str, Any, str]] = []
    for key, hi in (("default_requests_per_minute", 1_000_000),
                    ("default_tokens_per_day", 10**12), ("default_tokens_per_month", 10**12)):
        rule = INT_RULE.format(key, 1, hi)
        cases += [(key, bad, rule) for bad in (0, -1, hi + 1, "60", 1.5, True)]
    cost_rule = COST_RULE.format("default_cost_per_month")
    cases += [("default_cost_per_month", bad, cost_rule)
              for bad in (-0.01, 0.0000001, 1_000_000_001, "5", True)]
    for key, bad, rule in cases:
        error = await api.error("PUT", "/api/settings/system", "admin", 400,
                                json={"brand_text": "Changed", "default_tokens_per_day": 900,
                                      key: bad})
        assert error == rule, (key, bad, error)
    assert await api.ok("GET", "/api/settings/system", "admin") == before


# --- GET /api/quota ---

async def test_quota_shape_and_resets_follow_the_utc_calendar(api):
    alice = await api.register("alice")
    await api.error("GET", "/api/quota", None, 401)
    # (now, next minute, next UTC midnight, first of next month), in increasing order.
    moments = [
        ("2031-01-31T12:00:00.000Z", "2031-01-31T12:01:00.000Z", "2031-02-01T00:00:00.000Z",
         "2031-02-01T00:00:00.000Z"),
        ("2031-03-15T10:20:30.123Z", "2031-03-15T10:21:00.000Z", "2031-03-16T00:00:00.000Z",
         "2031-04-01T00:00:00.000Z"),
        ("2031-06-01T00:00:00.000Z", "2031-06-01T00:01:00.000Z", "2031-06-02T00:00:00.000Z",
         "2031-07-01T00:00:00.000Z"),
        ("2031-12-15T08:00:59.999Z", "2031-12-15T08:01:00.000Z", "2031-12-16T00:00:00.000Z",
         "2032-01-01T00:00:00.000Z"),
        ("2031-12-31T23:59:59.999Z", "2032-01-01T00:00:00.000Z", "2032-01-01T00:00:00.000Z",
         "2032-01-01T00:00:00.000Z"),
        ("2032-02-28T23:59:00.000Z", "2032-02-29T00:00:00.000Z", "2032-02-29T00:00:00.000Z",
         "2032-03-01T00:00:00.000Z"),
    ]
    for now, minute, day, month in moments:
        set_clock(api, at(now))

        def meter(resets: str | None, limit: int | None = None) -> dict[str, Any]:
            return {"limit": limit, "used": 0, "reserved": 0, "remaining": limit,
                    "resetsAt": resets}

        assert await quota(api, alice) == {"currency": "USD", "limits": {
            "requestsPerMinute": meter(minute), "tokensPerDay": meter(day),
            "tokensPerMonth": meter(month), "costPerMonth": meter(month),
            "maxConcurrentStreams": meter(None, 3)}}, now


async def test_quota_counts_the_users_usage_rows(chat):
    api, alice = chat.api, chat.user
    await api.ok("PUT", f"/api/models/{chat.model['id']}", alice, json=PRICED)
    await put_limits(api, alice.id, {"requestsPerMinute": 50, "tokensPerDay": 100_000,
                                     "costPerMonth": 1.25, "maxConcurrentStreams": 2})
    # Pinned at the real now, so both rounds fall in one quota minute (and one UTC day).
    now = datetime.now(UTC)
    set_clock(api, now)
    await round_(chat, USAGE)
    await round_(chat, USAGE_2)

    assert await api.rows("SELECT total_tokens, cost_nanos FROM usage_metrics"
                          " WHERE user_id = ? ORDER BY id", (alice.id,)) == [
        (18, NANOS), (42, NANOS_2)]
    tokens, nanos = await used_rows(api, alice.id)
    assert (tokens, nanos) == (60, NANOS + NANOS_2)
    # The trigger kept quota_days in step with the rows.
    [(day_tokens, day_nanos)] = await api.rows(
        "SELECT SUM(tokens) AS tokens, SUM(cost_nanos) AS nanos FROM quota_days"
        " WHERE user_id = ?", (alice.id,))
    assert (day_tokens, day_nanos) == (tokens, nanos)

    data = await quota(api, alice)
    assert data["currency"] == "USD"
    limits = data["limits"]
    assert list(limits) == list(NAMES)
    assert limits["requestsPerMinute"] == {
        "limit": 50, "used": 2, "reserved": 0, "remaining": 48,
        "resetsAt": (now.replace(second=0, microsecond=0) + timedelta(minutes=1))
        .strftime("%Y-%m-%dT%H:%M:00.000Z")}
    assert limits["tokensPerDay"] | {"resetsAt": None} == {
        "limit": 100_000, "used": tokens, "reserved": 0, "remaining": 100_000 - tokens,
        "resetsAt": None}
    assert limits["tokensPerMonth"] | {"resetsAt": None} == {
        "limit": None, "used": tokens, "reserved": 0, "remaining": None, "resetsAt": None}
    assert limits["costPerMonth"] | {"resetsAt": None} == {
        "limit": 1.25, "used": amount(nanos), "reserved": 0,
        "remaining": amount(1_250_000_000 - nanos), "resetsAt": None}
    assert limits["costPerMonth"]["used"] == 0.0002925
    assert limits["maxConcurrentStreams"] == {"limit": 2, "used": 0, "reserved": 0,
                                              "remaining": 2, "resetsAt": None}

    # The next minute: no request started in it yet.
    set_clock(api, now + timedelta(minutes=1))
    requests = (await quota(api, alice))["limits"]["requestsPerMinute"]
    assert (requests["used"], requests["remaining"]) == (0, 50)
    set_clock(api, now)

    # The currency is the setting's; the numbers are not converted.
    await api.ok("PUT", "/api/settings/system", "admin", json={"currency": "EUR"})
    assert await quota(api, alice) == {**data, "currency": "EUR"}


async def test_another_users_usage_never_counts_as_mine(chat):
    api, alice = chat.api, chat.user
    bob = await api.register("bob")
    model = await api.ok("POST", "/api/models", bob, json={
        "name": "bob-model", "apiUrl": chat.upstream.url, "apiKey": "sk-bob", **PRICED})
    session = await api.ok("POST", "/api/sessions", bob, json={"modelConfigId": model["id"]})
    await api.ok("PUT", f"/api/models/{chat.model['id']}", alice, json=PRICED)
    await round_(chat, USAGE)
    await round_(chat, USAGE_2, user=bob, session_id=session["id"])
    await round_(chat, USAGE_2, user=bob, session_id=session["id"])

    mine, bobs = await quota(api, alice), await quota(api, bob)
    for user, data, (tokens, nanos) in ((alice, mine, (18, NANOS)),
                                        (bob, bobs, (84, 2 * NANOS_2))):
        assert await used_rows(api, user.id) == (tokens, nanos)
        limits = data["limits"]
        assert limits["tokensPerDay"]["used"] == limits["tokensPerMonth"]["used"] == tokens
        assert limits["costPerMonth"]["used"] == amount(nanos)
    # The admin's own usage: none.
    admin = api.users["admin"]
    limits = (await quota(api, admin))["limits"]
    assert [limits[name]["used"] for name in NAMES] == [0] * 5


async def test_remaining_is_never_below_zero(chat):
    """A reply that crosses a limit is counted in full; what is left is then 0."""
    api, alice = chat.api, chat.user
    await api.ok("PUT", f"/api/models/{chat.model['id']}", alice, json=PRICED)
    # The prompt "Hi" is about 9 tokens: 22 500 billionths at the input price.
    await put_limits(api, alice.id, {"tokensPerDay": 20, "costPerMonth": 0.00003})
    await round_(chat, {"prompt_tokens": 11, "completion_tokens": 40, "total_tokens": 51})
    limits = (await quota(api, alice))["limits"]
    assert limits["tokensPerDay"] | {"resetsAt": None} == {
        "limit": 20, "used": 51, "reserved": 0, "remaining": 0, "resetsAt": None}
    assert limits["costPerMonth"] | {"resetsAt": None} == {
        "limit": 0.00003, "used": amount(11 * 2500 + 40 * 10_000), "reserved": 0,
        "remaining": 0, "resetsAt": None}


async def test_a_round_in_flight_holds_its_prompt_and_takes_a_stream(chat):
    api, alice = chat.api, chat.user
    await api.ok("PUT", f"/api/models/{chat.model['id']}", alice, json=PRICED)
    await put_limits(api, alice.id, {"tokensPerDay": 100_000, "costPerMonth": 1})
    await round_(chat, USAGE)
    chat.upstream.queue(Reply(tokens=["one ", "two ", "three"], stall_after=1))
    async with chat.open("Tell me a long story") as response:
        assert response.status == 200
        reader = SSEStream(response)
        await chat.upstream.wait_requests(2)

        [(held_tokens, held_nanos)] = await api.rows(
            "SELECT tokens, cost_nanos FROM quota_holds WHERE user_id = ?", (alice.id,))
        assert held_tokens > 0 and held_nanos == held_tokens * 2500  # at the input price
        limits = (await quota(api, alice))["limits"]
        assert limits["maxConcurrentStreams"] == {"limit": 3, "used": 1, "reserved": 0,
                                                  "remaining": 2, "resetsAt": None}
        for name, limit in (("tokensPerDay", 100_000), ("tokensPerMonth", None)):
            assert limits[name] | {"resetsAt": None} == {
                "limit": limit, "used": 18, "reserved": held_tokens,
                "remaining": None if limit is None else limit - 18 - held_tokens,
                "resetsAt": None}, name
        assert limits["costPerMonth"] | {"resetsAt": None} == {
            "limit": 1, "used": amount(NANOS), "reserved": amount(held_nanos),
            "remaining": amount(1_000_000_000 - NANOS - held_nanos), "resetsAt": None}

        await reader.until("content")
        stopped = await api.ok("POST", "/api/chat/stop", alice,
                               json={"sessionId": chat.session_id})
        assert stopped["stopped"] is True
        await reader.rest()
    assert reader.types()[-1] == "stop", reader.events

    # Held, then used: the hold went in the commit that stored the round's usage row.
    assert await api.rows("SELECT id FROM quota_holds") == []
    tokens, nanos = await used_rows(api, alice.id)
    assert tokens > 18 and nanos > NANOS
    limits = (await quota(api, alice))["limits"]
    assert limits["maxConcurrentStreams"]["used"] == 0
    assert limits["tokensPerDay"]["used"] == limits["tokensPerMonth"]["used"] == tokens
    assert limits["costPerMonth"]["used"] == amount(nanos)
    assert [limits[name]["reserved"] for name in NAMES] == [0] * 5


# --- resets ---

async def test_used_tokens_reset_at_the_next_utc_day_and_month(chat):
    api, alice = chat.api, chat.user
    await api.ok("PUT", f"/api/models/{chat.model['id']}", alice, json=PRICED)
    await round_(chat, USAGE)
    [(created,)] = await api.rows("SELECT created_at FROM usage_metrics")
    day = at(created).replace(hour=0, minute=0, second=0, microsecond=0)
    limits = (await quota(api, alice))["limits"]
    assert [limits[name]["used"] for name in NAMES[1:]] == [18, 18, amount(NANOS), 0]

    # The next UTC midnight: the day starts from 0; the month keeps its tokens unless the
    # round ended on a month's last day.
    midnight = day + timedelta(days=1)
    same_month = midnight.month == day.month
    set_clock(api, midnight)
    limits = (await quota(api, alice))["limits"]
    assert limits["tokensPerDay"]["used"] == 0
    assert limits["tokensPerMonth"]["used"] == (18 if same_month else 0)
    assert limits["costPerMonth"]["used"] == (amount(NANOS) if same_month else 0)
    assert limits["tokensPerDay"]["resetsAt"] == (
        midnight + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00.000Z")

    # The first of the next month: nothing used.
    next_month = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    set_clock(api, next_month + timedelta(seconds=1))
    limits = (await quota(api, alice))["limits"]
    assert [limits[name]["used"] for name in NAMES] == [0] * 5
    assert limits["tokensPerDay"]["used"] == 0
    assert await used_rows(api, alice.id) == (18, NANOS)  # the rows stay


async def test_each_period_sums_only_its_own_utc_days(api):
    """Usage rows dated across a month's and a year's end, read at moments after each."""
    alice = await api.register("alice")
    bob = await api.register("bob")

    async def row(user: User, created: str, tokens: int, nanos: int | None = None) -> None:
        await api.execute(
            "INSERT INTO usage_metrics (user_id, session_id, model, status, prompt_tokens,"
            " completion_tokens, total_tokens, cost_nanos, created_at)"
            " VALUES (?, NULL, 'm', 'complete', ?, 0, ?, ?, ?)",
            (user.id, tokens, tokens, nanos, created))

    async def used(now: str) -> tuple[int, int, float]:
        set_clock(api, at(now))
        limits = (await quota(api, alice))["limits"]
        return (limits["tokensPerDay"]["used"], limits["tokensPerMonth"]["used"],
                limits["costPerMonth"]["used"])

    await row(alice, "2031-11-30T23:59:59.999Z", 10, 1000)
    assert await used("2031-11-30T23:59:59.999Z") == (10, 10, amount(1000))
    assert await used("2031-12-01T00:00:00.000Z") == (0, 0, 0)
    await row(alice, "2031-12-01T00:00:00.000Z", 20)
    await row(alice, "2031-12-15T12:00:00.000Z", 40, 4000)
    await row(bob, "2031-12-15T12:00:00.000Z", 1000, 100_000)
    assert await used("2031-12-15T13:00:00.000Z") == (40, 60, amount(4000))
    assert await used("2031-12-16T00:00:00.000Z") == (0, 60, amount(4000))
    await row(alice, "2031-12-31T23:59:59.999Z", 80, 8000)
    assert await used("2031-12-31T23:59:59.999Z") == (80, 140, amount(12_000))
    assert await used("2032-01-01T00:00:00.000Z") == (0, 0, 0)
    await row(alice, "2032-01-01T00:00:00.000Z", 160)
    assert await used("2032-01-01T00:00:00.000Z") == (160, 160, 0)
    limits = (await quota(api, bob))["limits"]
    assert (limits["tokensPerDay"]["used"], limits["tokensPerMonth"]["used"]) == (0, 0)


async def test_deleting_a_session_does_not_give_its_tokens_back(chat):
    api, alice = chat.api, chat.user
    await api.ok("PUT", f"/api/models/{chat.model['id']}", alice, json=PRICED)
    await put_limits(api, alice.id, {"tokensPerDay": 1000, "costPerMonth": 1})
    set_clock(api, datetime.now(UTC))
    await round_(chat, USAGE)
    await round_(chat, USAGE_2)
    before = await quota(api, alice)
    limits = before["limits"]
    assert limits["tokensPerDay"]["used"] == limits["tokensPerMonth"]["used"] == 60
    assert limits["tokensPerDay"]["remaining"] == 940
    assert limits["costPerMonth"]["used"] == amount(NANOS + NANOS_2)

    await api.ok("DELETE", f"/api/sessions/{chat.session_id}", alice)
    assert await api.rows("SELECT id FROM chat_sessions WHERE id = ?", (chat.session_id,)) == []
    assert await used_rows(api, alice.id) == (0, 0)  # its usage rows went with it (§4.4)
    assert await quota(api, alice) == before


# --- an API key's own monthly token limit (POST /api/keys) ---

async def test_an_api_keys_token_limit_is_stored_and_listed(api):
    alice = await api.register("alice")
    rule = INT_RULE.format("tokensPerMonth", 1, 10**12)
    for bad in (0, -5, 10**12 + 1, "20000", 1.5, 20000.0, True, [20000]):
        error = await api.error("POST", "/api/keys", alice, 400,
                                json={"name": "bad", "tokensPerMonth": bad})
        assert error == rule, (bad, error)
    assert await api.rows("SELECT id FROM api_keys") == []

    created = []
    for name, body in (("limited", {"tokensPerMonth": 20_000}),
                       ("null", {"tokensPerMonth": None}), ("absent", {}),
                       ("lowest", {"tokensPerMonth": 1}),
                       ("highest", {"tokensPerMonth": 10**12})):
        key = await api.ok("POST", "/api/keys", alice, json={"name": name, **body})
        assert key["name"] == name and key["key"].startswith("aic_")
        assert key["tokensPerMonth"] == body.get("tokensPerMonth"), name
        created.append(key)
    listed = await api.ok("GET", "/api/keys", alice)
    assert [(k["id"], k["tokensPerMonth"]) for k in listed] == [
        (k["id"], k["tokensPerMonth"]) for k in reversed(created)]
    assert all("key" not in k for k in listed)
    assert await api.rows("SELECT name, tokens_per_month FROM api_keys ORDER BY id") == [
        ("limited", 20_000), ("null", None), ("absent", None), ("lowest", 1),
        ("highest", 10**12)]
