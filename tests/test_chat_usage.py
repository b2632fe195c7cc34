"""Usage: per session, per session list and per UTC day (docs/api.md §5.7, §6.4)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from .fake_upstream import Reply
from .helpers import Chat

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# A sum as the usage endpoints show it: the tokens and the cost (null: no priced row in it;
# these tests' models have no prices, tests/test_prices.py has the priced ones).
ZERO = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": None}
PROVIDER_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
PROVIDER_TOTALS = {**PROVIDER_USAGE, "cost": None}
RANGE_ERROR = "Invalid date range"


def heuristic(text: str) -> int:
    non_ascii = sum(1 for ch in text if ord(ch) > 127)
    return math.ceil((len(text) - non_ascii) / 4) + non_ascii


def cost(role: str, content: str) -> int:
    return 4 + heuristic(content) + heuristic(role)


def tokens(prompt: int, completion: int, total: int | None = None) -> dict[str, int]:
    """The token numbers alone (the stream's usage events, a message's usage)."""
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion if total is None else total}


def totals(prompt: int, completion: int, total: int | None = None) -> dict[str, Any]:
    """A usage endpoint's sum of unpriced rows: the tokens and a null cost."""
    return {**tokens(prompt, completion, total), "cost": None}


async def round_(chat: Chat, content: str, reply: Reply, session_id: int | None = None):
    chat.upstream.queue(reply)
    stream = await chat.stream(content, session_id=session_id)
    assert stream.events[-1]["type"] == "complete", stream.events
    return stream


async def usage_of(chat: Chat, session_id: int | None = None) -> dict[str, Any]:
    return await chat.api.ok("GET", "/api/chat/usage", chat.user,
                             params={"sessionId": str(session_id or chat.session_id)})


async def daily(chat: Chat, user=None, **params: str) -> dict[str, Any]:
    return await chat.api.ok("GET", "/api/chat/usage/daily", user or chat.user, params=params)


async def insert_usage(chat: Chat, session_id: int, created_at: str, prompt: int,
                       completion: int, model: str = "fake-model") -> None:
    await chat.api.execute(
        "INSERT INTO usage_metrics (session_id, model, provider, prompt_tokens,"
        " completion_tokens, total_tokens, context_limit, created_at)"
        " VALUES (?, ?, '127.0.0.1', ?, ?, ?, 4000, ?)",
        (session_id, model, prompt, completion, prompt + completion, created_at))


async def new_session(chat: Chat, user=None, model_id: int | None = None) -> int:
    session = await chat.api.ok("POST", "/api/sessions", user or chat.user,
                                json={"modelConfigId": model_id or chat.model["id"]})
    return session["id"]


async def bob_with_session(chat: Chat):
    bob = await chat.api.register("bob")
    model = await chat.api.ok("POST", "/api/models", bob, json={
        "name": "bob-model", "apiUrl": chat.upstream.url, "apiKey": "sk-bob"})
    return bob, await new_session(chat, bob, model["id"])


# --- GET /api/chat/usage ---

async def test_session_usage_before_any_round(chat):
    data = await usage_of(chat)
    assert data == {"totals": ZERO, "last_round": None,
                    "current": {"prompt_tokens": 3, "context_limit": 4000,
                                "context_remaining": 3997}}


async def test_provider_usage_is_stored_and_reported(chat):
    stream = await round_(chat, "Hi there", Reply(tokens=["Hello", " world"],
                                                  usage=PROVIDER_USAGE))
    assert {"type": "usage", "usage": PROVIDER_USAGE} in stream.events
    final = stream.events[-2]
    assert final == {"type": "usage", "usage": {**PROVIDER_USAGE, "context_limit": 4000,
                                                "context_remaining": 4000 - 11}}
    assert await chat.rows("SELECT prompt_tokens, completion_tokens, total_tokens, estimated,"
                           " model, provider, context_limit, cost_nanos FROM usage_metrics") == [
        (11, 7, 18, 0, "fake-model", "127.0.0.1", 4000, None)]  # no price: no cost
    # A chat row: its session, its user (the session's owner), no key, the round's status.
    assert await chat.rows("SELECT session_id, user_id, api_key_id, status FROM usage_metrics") == [
        (chat.session_id, chat.user.id, None, "complete")]
    data = await usage_of(chat)
    assert data["totals"] == PROVIDER_TOTALS
    last = data["last_round"]
    assert TIMESTAMP.match(last["createdAt"]), last
    assert last == {**PROVIDER_TOTALS, "context_limit": 4000, "createdAt": last["createdAt"],
                    "model": "fake-model", "provider": "127.0.0.1"}
    assert await chat.rows("SELECT created_at FROM usage_metrics") == [(last["createdAt"],)]
    expected = 3 + cost("user", "Hi there") + cost("assistant", "Hello world")
    assert data["current"] == {"prompt_tokens": expected, "context_limit": 4000,
                               "context_remaining": 4000 - expected}


async def test_without_provider_usage_the_estimate_is_stored(chat):
    text = "Bonjour, ça va très bien"
    stream = await round_(chat, "Comment ça va ?", Reply(tokens=["  Bonjour, ", "ça va ",
                                                                 "très bien  "]))
    prompt = 3 + cost("user", "Comment ça va ?")
    assert stream.events[1]["usage"]["prompt_tokens"] == prompt
    completion = heuristic(text)
    assert await chat.rows("SELECT content FROM messages WHERE role = 'assistant'") == [(text,)]
    assert await chat.rows("SELECT prompt_tokens, completion_tokens, total_tokens, estimated"
                           " FROM usage_metrics") == [(prompt, completion, prompt + completion, 1)]
    assert stream.events[-2]["usage"] == {**tokens(prompt, completion), "context_limit": 4000,
                                          "context_remaining": 4000 - prompt}
    data = await usage_of(chat)
    assert data["totals"] == totals(prompt, completion)
    assert data["last_round"]["prompt_tokens"] == prompt
    assert data["last_round"]["completion_tokens"] == completion
    assert data["last_round"]["cost"] is None
    messages = await chat.messages()
    assert messages[1]["usage"] == tokens(prompt, completion)


async def test_totals_sum_rounds_and_last_round_is_the_newest(chat):
    await round_(chat, "one", Reply(tokens=["first"], usage=PROVIDER_USAGE))
    stream = await round_(chat, "two", Reply(tokens=["second"]))
    second = stream.events[-2]["usage"]
    data = await usage_of(chat)
    assert data["totals"] == totals(11 + second["prompt_tokens"],
                                    7 + second["completion_tokens"],
                                    18 + second["total_tokens"])
    assert data["last_round"]["prompt_tokens"] == second["prompt_tokens"]
    assert data["last_round"]["completion_tokens"] == second["completion_tokens"]
    # An older row added later is summed but is not the newest round.
    await insert_usage(chat, chat.session_id, "2025-01-01T00:00:00.000Z", 100, 50)
    again = await usage_of(chat)
    assert again["totals"] == totals(data["totals"]["prompt_tokens"] + 100,
                                     data["totals"]["completion_tokens"] + 50)
    assert again["last_round"] == data["last_round"]
    # Another session's rounds do not count here.
    other = await new_session(chat)
    await round_(chat, "elsewhere", Reply(tokens=["x"], usage=PROVIDER_USAGE), other)
    assert (await usage_of(chat))["totals"] == again["totals"]
    assert (await usage_of(chat, other))["totals"] == PROVIDER_TOTALS


@pytest.mark.parametrize("params", [{}, {"sessionId": ""}, {"sessionId": "abc"},
                                    {"sessionId": "0"}, {"sessionId": "-1"},
                                    {"sessionId": "1.5"}, {"sessionId": " 1"}])
async def test_session_usage_bad_session_id(chat, params):
    await chat.api.error("GET", "/api/chat/usage", chat.user, 400, "Invalid sessionId",
                         params=params)


async def test_session_usage_ownership_and_auth(chat):
    bob, bobs = await bob_with_session(chat)
    await chat.api.error("GET", "/api/chat/usage", chat.user, 404,
                         params={"sessionId": str(bobs)})
    await chat.api.error("GET", "/api/chat/usage", bob, 404,
                         params={"sessionId": str(chat.session_id)})
    await chat.api.error("GET", "/api/chat/usage", chat.user, 404,
                         params={"sessionId": "999999"})
    await chat.api.error("GET", "/api/chat/usage", None, 401,
                         params={"sessionId": str(chat.session_id)})
    assert (await chat.api.ok("GET", "/api/chat/usage", bob,
                              params={"sessionId": str(bobs)}))["totals"] == ZERO


# --- GET /api/chat/sessions/usage ---

async def test_sessions_usage_lists_only_own_sessions_with_rows(chat):
    bob, bobs = await bob_with_session(chat)
    assert await chat.api.ok("GET", "/api/chat/sessions/usage", bob) == []
    assert await chat.api.ok("GET", "/api/chat/sessions/usage", chat.user) == []

    second = await new_session(chat)
    await new_session(chat)  # no usage: not listed
    await round_(chat, "hello", Reply(tokens=["hi"], usage=PROVIDER_USAGE))
    await insert_usage(chat, chat.session_id, "2025-01-01T10:00:00.000Z", 1, 2)
    await insert_usage(chat, second, "2025-01-01T10:00:00.000Z", 30, 40)
    await insert_usage(chat, bobs, "2025-01-01T10:00:00.000Z", 500, 500)

    data = await chat.api.ok("GET", "/api/chat/sessions/usage", chat.user)
    assert sorted(data, key=lambda r: r["sessionId"]) == [
        {"sessionId": chat.session_id, "totals": totals(12, 9, 21)},
        {"sessionId": second, "totals": totals(30, 40)}]
    assert await chat.api.ok("GET", "/api/chat/sessions/usage", bob) == [
        {"sessionId": bobs, "totals": totals(500, 500)}]
    await chat.api.error("GET", "/api/chat/sessions/usage", None, 401)


# --- GET /api/chat/usage/daily ---

async def test_daily_groups_by_utc_day_with_whole_day_bounds(chat):
    sid = chat.session_id
    await insert_usage(chat, sid, "2024-12-31T23:59:59.999Z", 1000, 1000)
    await insert_usage(chat, sid, "2025-01-01T00:00:00.000Z", 1, 2)
    await insert_usage(chat, sid, "2025-01-01T12:00:00.000Z", 10, 20)
    await insert_usage(chat, sid, "2025-01-01T23:59:59.999Z", 100, 200)
    await insert_usage(chat, sid, "2025-01-02T00:00:00.000Z", 3, 4)
    await insert_usage(chat, sid, "2025-01-02T23:59:59.999Z", 5, 6)
    await insert_usage(chat, sid, "2025-01-03T00:00:00.000Z", 2000, 2000)

    data = await daily(chat, **{"from": "2025-01-01", "to": "2025-01-02"})
    assert data == {"from": "2025-01-01T00:00:00.000Z", "to": "2025-01-02T23:59:59.999Z",
                    "rows": [{"date": "2025-01-01", **totals(111, 222)},
                             {"date": "2025-01-02", **totals(8, 10)}]}

    data = await daily(chat, **{"from": "2025-01-02", "to": "2025-01-02"})
    assert data["rows"] == [{"date": "2025-01-02", **totals(8, 10)}]

    data = await daily(chat, **{"from": "2024-12-01", "to": "2025-01-31"})
    assert [r["date"] for r in data["rows"]] == ["2024-12-31", "2025-01-01", "2025-01-02",
                                                 "2025-01-03"]

    data = await daily(chat, **{"from": "2025-01-01T12:00:00.000Z",
                                "to": "2025-01-02T00:00:00.000Z"})
    assert data["from"] == "2025-01-01T12:00:00.000Z"
    assert data["to"] == "2025-01-02T00:00:00.000Z"
    assert data["rows"] == [{"date": "2025-01-01", **totals(110, 220)},
                            {"date": "2025-01-02", **totals(3, 4)}]

    data = await daily(chat, **{"from": "2025-02-01", "to": "2025-02-28"})
    assert data["rows"] == []


async def test_daily_defaults_and_today(chat):
    await round_(chat, "today", Reply(tokens=["yes"], usage=PROVIDER_USAGE))
    await insert_usage(chat, chat.session_id, "2025-01-01T08:00:00.000Z", 1, 1)
    [(created,)] = await chat.rows("SELECT created_at FROM usage_metrics WHERE prompt_tokens = 11")
    today = created[:10]

    before = datetime.now(UTC)
    data = await daily(chat)
    after = datetime.now(UTC)
    start = datetime.fromisoformat(data["from"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(data["to"].replace("Z", "+00:00"))
    assert TIMESTAMP.match(data["from"]) and TIMESTAMP.match(data["to"])
    assert before - timedelta(seconds=1) <= end <= after + timedelta(seconds=1)
    assert abs((end - start) - timedelta(days=30)) < timedelta(seconds=1)
    assert data["rows"] == [{"date": today, **PROVIDER_TOTALS}]

    data = await daily(chat, to=today)
    assert data["to"] == f"{today}T23:59:59.999Z"
    assert data["rows"] == [{"date": today, **PROVIDER_TOTALS}]

    data = await daily(chat, **{"from": today})
    assert data["from"] == f"{today}T00:00:00.000Z"
    assert data["rows"] == [{"date": today, **PROVIDER_TOTALS}]

    data = await daily(chat, **{"from": "2025-01-01", "to": today})
    assert data["rows"] == [{"date": "2025-01-01", **totals(1, 1)},
                            {"date": today, **PROVIDER_TOTALS}]


@pytest.mark.parametrize("params", [
    {"from": "garbage"}, {"to": "yesterday"}, {"from": "2025-13-01"}, {"to": "2025-02-30"},
    {"from": "2025-01-03", "to": "2025-01-02"},
    {"from": "2025-01-02T00:00:00.001Z", "to": "2025-01-02T00:00:00.000Z"},
    {"from": "2025/01/01"},
])
async def test_daily_invalid_range(chat, params):
    await chat.api.error("GET", "/api/chat/usage/daily", chat.user, 400, RANGE_ERROR,
                         params=params)


async def test_daily_session_filter_and_ownership(chat):
    bob, bobs = await bob_with_session(chat)
    second = await new_session(chat)
    await insert_usage(chat, chat.session_id, "2025-01-01T10:00:00.000Z", 1, 2)
    await insert_usage(chat, second, "2025-01-01T11:00:00.000Z", 10, 20)
    await insert_usage(chat, second, "2025-01-02T11:00:00.000Z", 100, 200)
    await insert_usage(chat, bobs, "2025-01-01T12:00:00.000Z", 1000, 2000)
    span = {"from": "2025-01-01", "to": "2025-01-31"}

    assert (await daily(chat, **span))["rows"] == [{"date": "2025-01-01", **totals(11, 22)},
                                                   {"date": "2025-01-02", **totals(100, 200)}]
    assert (await daily(chat, **span, sessionId=str(chat.session_id)))["rows"] == [
        {"date": "2025-01-01", **totals(1, 2)}]
    assert (await daily(chat, **span, sessionId=str(second)))["rows"] == [
        {"date": "2025-01-01", **totals(10, 20)}, {"date": "2025-01-02", **totals(100, 200)}]
    assert (await daily(chat, bob, **span))["rows"] == [
        {"date": "2025-01-01", **totals(1000, 2000)}]

    for bad in ("abc", "0", "-3"):
        await chat.api.error("GET", "/api/chat/usage/daily", chat.user, 400, "sessionId",
                             params={**span, "sessionId": bad})
    await chat.api.error("GET", "/api/chat/usage/daily", chat.user, 404,
                         params={**span, "sessionId": str(bobs)})
    await chat.api.error("GET", "/api/chat/usage/daily", bob, 404,
                         params={**span, "sessionId": str(chat.session_id)})
    await chat.api.error("GET", "/api/chat/usage/daily", None, 401, params=span)
