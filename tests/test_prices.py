"""Model prices and round costs (docs/api.md §3, §6.4): prices per million tokens stored
exactly in millionths, each usage row's cost in billionths at the prices of its round's start,
and the usage endpoints' `cost` sums (null when no row in the sum had a price)."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from aichat.app import create_app

from .fake_upstream import Reply
from .helpers import Chat, SSEStream

INPUT, OUTPUT = "inputPricePerMTok", "outputPricePerMTok"
PRICE_RULE = "{} must be a number from 0 to 1000000 with at most 6 decimals"
URL = "https://api.example.com/v1/chat/completions"
PROVIDER_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
# 2.5 and 10 per million tokens: (11 × 2500000 + 7 × 10000000) / 1000 billionths.
PRICED = {INPUT: 2.5, OUTPUT: 10}
PRICED_NANOS = 97_500
PRICED_COST = 0.0000975


def amount(nanos: int) -> float:
    """Billionths of the currency as the API shows them."""
    return nanos / 1_000_000_000


def half_up(prompt: int, completion: int, input_micros: int, output_micros: int) -> int:
    """The cost rule computed here on its own: tokens × micros / 1000, rounded half up."""
    return (prompt * input_micros + completion * output_micros + 500) // 1000


def sums(prompt: int, completion: int, cost: float | None) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "cost": cost}


# --- the prices of a model config ---

ROUTES = {"personal": ("/api/models", "/api/models/{}"),
          "system": ("/api/models/system", "/api/models/system/{}")}


async def owner(api, kind: str):
    """Who writes the model: a regular user their personal one, the admin a system one."""
    return await api.register("alice") if kind == "personal" else api.users["admin"]


async def create(api, kind: str, user, name: str = "m", **prices: Any) -> dict:
    return await api.ok("POST", ROUTES[kind][0], user,
                        json={"name": name, "apiUrl": URL, "apiKey": "sk-x", **prices})


async def update(api, kind: str, user, model_id: int, body: dict) -> dict:
    return await api.ok("PUT", ROUTES[kind][1].format(model_id), user, json=body)


async def stored(api, model_id: int) -> tuple:
    [row] = await api.rows("SELECT input_price_micros, output_price_micros FROM model_configs"
                           " WHERE id = ?", (model_id,))
    return row


@pytest.mark.parametrize("kind", ["personal", "system"])
async def test_prices_round_trip_on_create_and_read(api, kind):
    user = await owner(api, kind)
    model = await create(api, kind, user, **PRICED)
    assert (model[INPUT], model[OUTPUT]) == (2.5, 10)
    assert await stored(api, model["id"]) == (2_500_000, 10_000_000)
    assert await api.ok("GET", f"/api/models/{model['id']}", user) == model
    assert (await api.ok("GET", "/api/models", user))[kind] == [model]
    if kind == "system":
        assert await api.ok("GET", "/api/models/system/list", user) == [
            {**model, "_count": {"chatSessions": 0}}]
        # Everyone reads a system model's prices.
        bob = await api.register("bob")
        assert await api.ok("GET", f"/api/models/{model['id']}", bob) == model

    # No prices, or null ones, on create: none.
    for body in ({}, {INPUT: None, OUTPUT: None}):
        plain = await create(api, kind, user, f"plain-{len(body)}", **body)
        assert (plain[INPUT], plain[OUTPUT]) == (None, None)
        assert await stored(api, plain["id"]) == (None, None)
        assert await api.ok("GET", f"/api/models/{plain['id']}", user) == plain


@pytest.mark.parametrize("price, micros", [
    (0, 0), (0.000001, 1), (0.15, 150_000), (3, 3_000_000), (2.000001, 2_000_001),
    (123456.789012, 123_456_789_012), (999999.999999, 999_999_999_999),
    (1000000, 1_000_000_000_000), (1000000.0, 1_000_000_000_000)])
async def test_every_allowed_price_is_stored_exactly(api, price, micros):
    user = await owner(api, "personal")
    model = await create(api, "personal", user, **{INPUT: price, OUTPUT: price})
    assert (model[INPUT], model[OUTPUT]) == (price, price)
    assert await stored(api, model["id"]) == (micros, micros)
    # The same through an update, one price at a time; 0 is a price (free), not "none".
    other = await create(api, "personal", user, "other")
    assert (await update(api, "personal", user, other["id"], {OUTPUT: price}))[OUTPUT] == price
    assert await stored(api, other["id"]) == (None, micros)
    got = await api.ok("GET", f"/api/models/{other['id']}", user)
    assert (got[INPUT], got[OUTPUT]) == (None, price)


@pytest.mark.parametrize("kind", ["personal", "system"])
async def test_update_sets_keeps_and_removes_prices(api, kind):
    user = await owner(api, kind)
    model = await create(api, kind, user)
    mid = model["id"]

    async def put(body: dict, expected: tuple, micros: tuple) -> dict:
        updated = await update(api, kind, user, mid, body)
        assert (updated[INPUT], updated[OUTPUT]) == expected, (body, updated)
        assert await stored(api, mid) == micros, body
        assert await api.ok("GET", f"/api/models/{mid}", user) == updated
        return updated

    await put({INPUT: 1.25}, (1.25, None), (1_250_000, None))
    await put({OUTPUT: 5}, (1.25, 5), (1_250_000, 5_000_000))  # absent: kept
    renamed = await put({"name": "renamed", "supportsImages": True}, (1.25, 5),
                        (1_250_000, 5_000_000))
    assert renamed == {**model, "name": "renamed", "supportsImages": True, INPUT: 1.25,
                       OUTPUT: 5}
    await put({INPUT: None}, (None, 5), (None, 5_000_000))  # null: removed
    await put({INPUT: 0, OUTPUT: None}, (0, None), (0, None))
    await put({INPUT: None, OUTPUT: None}, (None, None), (None, None))
    await put({INPUT: None}, (None, None), (None, None))  # removing nothing is fine
    await put({INPUT: 7, OUTPUT: 0.000001}, (7, 0.000001), (7_000_000, 1))


BAD_PRICES = [-1, -0.000001, 1000000.000001, 1000001, 10**23, 0.0000001, 2.5000001,
              1.23456789, "2.5", "", True, False, [2.5], {"value": 2.5}]


@pytest.mark.parametrize("kind", ["personal", "system"])
@pytest.mark.parametrize("bad", BAD_PRICES, ids=repr)
async def test_a_bad_price_is_a_400_naming_the_field_and_stores_nothing(api, kind, bad):
    user = await owner(api, kind)
    model = await create(api, kind, user, **PRICED)
    before = await api.rows("SELECT * FROM model_configs ORDER BY id")
    for field, good in ((INPUT, OUTPUT), (OUTPUT, INPUT)):
        rule = PRICE_RULE.format(field)
        error = await api.error("POST", ROUTES[kind][0], user, 400,
                                json={"name": "new", "apiUrl": URL, "apiKey": "sk-x",
                                      field: bad, good: 1})
        assert error == rule
        # In an update, with other valid changes: none of them is applied either.
        error = await api.error("PUT", ROUTES[kind][1].format(model["id"]), user, 400,
                                json={"name": "changed", field: bad, good: 1})
        assert error == rule
    assert await api.rows("SELECT * FROM model_configs ORDER BY id") == before
    assert await api.ok("GET", f"/api/models/{model['id']}", user) == model


# --- a round's cost ---

async def round_(chat: Chat, reply: Reply, content: str = "Hi there",
                 session_id: int | None = None) -> SSEStream:
    chat.upstream.queue(reply)
    stream = await chat.stream(content, session_id=session_id)
    assert stream.events[-1]["type"] == "complete", stream.events
    return stream


async def set_prices(chat: Chat, **prices: Any) -> None:
    await chat.api.ok("PUT", f"/api/models/{chat.model['id']}", chat.user, json=prices)


async def usage_of(chat: Chat, session_id: int | None = None) -> dict[str, Any]:
    return await chat.api.ok("GET", "/api/chat/usage", chat.user,
                             params={"sessionId": str(session_id or chat.session_id)})


async def costs(chat: Chat) -> list[int | None]:
    return [nanos for (nanos,) in await chat.rows(
        "SELECT cost_nanos FROM usage_metrics ORDER BY id")]


async def today(chat: Chat) -> str:
    [(day,)] = await chat.rows("SELECT DISTINCT substr(created_at, 1, 10) FROM usage_metrics")
    return day


async def daily(chat: Chat, day: str, path: str = "/api/chat/usage/daily") -> list[dict]:
    data = await chat.api.ok("GET", path, chat.user, params={"from": day, "to": day})
    return data["rows"]


async def test_a_priced_round_stores_its_cost_and_every_usage_endpoint_shows_it(chat):
    await set_prices(chat, **PRICED)
    await round_(chat, Reply(tokens=["Hello"], usage=PROVIDER_USAGE))
    assert await chat.rows("SELECT prompt_tokens, completion_tokens, cost_nanos"
                           " FROM usage_metrics") == [(11, 7, PRICED_NANOS)]
    expected = sums(11, 7, PRICED_COST)

    data = await usage_of(chat)
    assert data["totals"] == expected
    last = data["last_round"]
    assert last == {**expected, "context_limit": 4000, "createdAt": last["createdAt"],
                    "model": "fake-model", "provider": "127.0.0.1"}
    assert await chat.api.ok("GET", "/api/chat/sessions/usage", chat.user) == [
        {"sessionId": chat.session_id, "totals": expected}]
    day = await today(chat)
    assert await daily(chat, day) == [{"date": day, **expected}]
    # A chat round is not a /v1 request.
    assert await daily(chat, day, "/api/keys/usage") == []


async def test_a_v1_request_stores_its_cost_for_the_keys_usage(chat):
    await set_prices(chat, **PRICED)
    await chat.api.ok("POST", "/api/models/system", "admin", json={
        "name": "shared", "apiUrl": chat.upstream.url, "apiKey": "sk-sys",
        INPUT: 1, OUTPUT: 2})
    key = await chat.api.ok("POST", "/api/keys", chat.user, json={"name": "laptop"})
    client = openai.AsyncOpenAI(base_url=str(chat.api.client.make_url("/v1")),
                                api_key=key["key"], max_retries=0)
    try:
        chat.upstream.queue(
            Reply(content="a", usage={"prompt_tokens": 12, "completion_tokens": 3,
                                      "total_tokens": 15}),
            Reply(tokens=["b"], usage=PROVIDER_USAGE),
            Reply(content="c", usage={"prompt_tokens": 1000, "completion_tokens": 500,
                                      "total_tokens": 1500}))
        messages = [{"role": "user", "content": "hi"}]
        await client.chat.completions.create(model="fake-model", messages=messages)
        stream = await client.chat.completions.create(model="fake-model", messages=messages,
                                                      stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream
                        if c.choices]) == "b"
        await client.chat.completions.create(model="shared", messages=messages)
    finally:
        await client.close()

    # 12 × 2.5 + 3 × 10 = 60 per million; 11 × 2.5 + 7 × 10 = 97.5; 1000 × 1 + 500 × 2 = 2000.
    assert await chat.rows("SELECT model, api_key_id, cost_nanos FROM usage_metrics"
                           " ORDER BY id") == [
        ("fake-model", key["id"], 60_000), ("fake-model", key["id"], PRICED_NANOS),
        ("shared", key["id"], 2_000_000)]
    day = await today(chat)
    assert await daily(chat, day, "/api/keys/usage") == [
        {"date": day, "model": "fake-model", "requests": 2, **sums(23, 10, 0.0001575)},
        {"date": day, "model": "shared", "requests": 1, **sums(1000, 500, 0.002)}]
    # /v1 requests are not chat rounds.
    assert await daily(chat, day) == []
    assert await chat.api.ok("GET", "/api/chat/sessions/usage", chat.user) == []


@pytest.mark.parametrize("prices", [{INPUT: 2.5}, {OUTPUT: 10}, {INPUT: 0}],
                         ids=["input-only", "output-only", "free-input-only"])
async def test_a_model_with_one_price_has_no_cost(chat, prices):
    await set_prices(chat, **prices)
    await round_(chat, Reply(usage=PROVIDER_USAGE))
    assert await costs(chat) == [None]
    expected = sums(11, 7, None)
    data = await usage_of(chat)
    assert data["totals"] == expected and data["last_round"]["cost"] is None
    assert await chat.api.ok("GET", "/api/chat/sessions/usage", chat.user) == [
        {"sessionId": chat.session_id, "totals": expected}]
    day = await today(chat)
    assert await daily(chat, day) == [{"date": day, **expected}]


async def test_free_prices_cost_zero_not_null(chat):
    await set_prices(chat, **{INPUT: 0, OUTPUT: 0})
    await round_(chat, Reply(usage=PROVIDER_USAGE))
    assert await costs(chat) == [0]
    data = await usage_of(chat)
    assert data["totals"] == sums(11, 7, 0) and data["last_round"]["cost"] == 0


async def test_sums_count_the_priced_rounds_and_keep_each_rounds_own_price(chat):
    reply = Reply(usage=PROVIDER_USAGE)
    await round_(chat, reply)  # no prices yet
    await set_prices(chat, **PRICED)
    await round_(chat, reply)
    assert await costs(chat) == [None, PRICED_NANOS]
    data = await usage_of(chat)
    assert data["totals"] == sums(22, 14, PRICED_COST)  # the priced round only
    assert data["last_round"]["cost"] == PRICED_COST

    # A new price leaves the stored costs alone; the next round pays it.
    await set_prices(chat, **{INPUT: 5, OUTPUT: 20})
    assert await costs(chat) == [None, PRICED_NANOS]
    assert (await usage_of(chat))["totals"] == data["totals"]
    await round_(chat, reply)
    assert await costs(chat) == [None, PRICED_NANOS, 2 * PRICED_NANOS]
    # Without a price again: the next round has no cost, the sum stays what was priced.
    await set_prices(chat, **{OUTPUT: None})
    await round_(chat, reply)
    assert await costs(chat) == [None, PRICED_NANOS, 2 * PRICED_NANOS, None]
    expected = sums(44, 28, amount(3 * PRICED_NANOS))
    data = await usage_of(chat)
    assert data["totals"] == expected and data["last_round"]["cost"] is None

    # A second session with an unpriced round only: its sum's cost is null.
    other = (await chat.api.ok("POST", "/api/sessions", chat.user,
                               json={"modelConfigId": chat.model["id"]}))["id"]
    await round_(chat, reply, session_id=other)
    assert (await usage_of(chat, other))["totals"] == sums(11, 7, None)
    listed = await chat.api.ok("GET", "/api/chat/sessions/usage", chat.user)
    assert sorted(listed, key=lambda r: r["sessionId"]) == [
        {"sessionId": chat.session_id, "totals": expected},
        {"sessionId": other, "totals": sums(11, 7, None)}]
    day = await today(chat)
    assert await daily(chat, day) == [{"date": day, **sums(55, 35, amount(3 * PRICED_NANOS))}]
    per_session = await chat.api.ok("GET", "/api/chat/usage/daily", chat.user,
                                    params={"from": day, "to": day, "sessionId": str(other)})
    assert per_session["rows"] == [{"date": day, **sums(11, 7, None)}]


async def test_a_round_costs_the_prices_of_its_start(chat):
    """A price changed while a round runs applies from the next round on."""
    await set_prices(chat, **PRICED)
    chat.upstream.queue(Reply(tokens=["one ", "two ", "three"], stall_after=2))
    async with chat.open("Tell me a story") as response:
        assert response.status == 200
        reader = SSEStream(response)
        await reader.until("content")
        await set_prices(chat, **{INPUT: 100, OUTPUT: 1000})
        stopped = await chat.api.ok("POST", "/api/chat/stop", chat.user,
                                    json={"sessionId": chat.session_id})
        assert stopped["stopped"] is True
        await reader.rest()
    assert reader.events[-1]["type"] == "stop", reader.events
    [(prompt, completion, status, nanos)] = await chat.rows(
        "SELECT prompt_tokens, completion_tokens, status, cost_nanos FROM usage_metrics")
    assert status == "stopped" and prompt > 0 and completion > 0
    assert nanos == half_up(prompt, completion, 2_500_000, 10_000_000)
    assert (await usage_of(chat))["totals"] == sums(prompt, completion, amount(nanos))

    await round_(chat, Reply(usage=PROVIDER_USAGE))
    assert await costs(chat) == [nanos, half_up(11, 7, 100_000_000, 1_000_000_000)]
    assert (await usage_of(chat))["last_round"]["cost"] == 0.0081  # 1100 + 7000 per million


# (input, output, prompt tokens, completion tokens, billionths): exact halves round up, which
# neither truncation nor rounding half to even would do (12.5 → 13, 1000.5 → 1001, 0.5 → 1).
ROUNDING = [
    (0.0005, 0.001, 11, 7, 13),  # 5500 + 7000 = 12500 millionths of a billionth: 12.5
    (1.000001, 0.000499, 1, 1, 1001),  # 1000001 + 499 = 1000500: 1000.5
    (0.0005, 0.0005, 1, 0, 1),  # 500: 0.5
    (1.000001, 0.000498, 1, 1, 1000),  # 1000.499: down
    (1.000001, 0.0005, 1, 1, 1001),  # 1000.501: up
    (2.5, 10, 11, 7, 97_500),  # exact
]


async def test_costs_round_half_up_to_whole_billionths(chat):
    for price_in, price_out, prompt, completion, nanos in ROUNDING:
        await set_prices(chat, **{INPUT: price_in, OUTPUT: price_out})
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}
        await round_(chat, Reply(usage=usage))
        assert (await costs(chat))[-1] == nanos, (price_in, price_out, prompt, completion)
        assert nanos == half_up(prompt, completion, round(price_in * 1_000_000),
                                round(price_out * 1_000_000))
        assert (await usage_of(chat))["last_round"]["cost"] == amount(nanos)
    total = sum(row[-1] for row in ROUNDING)
    assert await costs(chat) == [row[-1] for row in ROUNDING]
    prompts = sum(row[2] for row in ROUNDING)
    completions = sum(row[3] for row in ROUNDING)
    assert (await usage_of(chat))["totals"] == sums(prompts, completions, amount(total))
    assert amount(total) == 0.000100516


@pytest.mark.sqlite_only  # PostgreSQL: the cluster recovers a dead instance's rounds
async def test_a_recovered_round_has_no_cost(chat, aiohttp_client):
    await set_prices(chat, **PRICED)
    await round_(chat, Reply(usage=PROVIDER_USAGE))
    message = await chat.api.ok("GET", f"/api/chat/sessions/{chat.session_id}/messages",
                                chat.user)
    user_message = message["messages"][0]["id"]
    # What a crash leaves: a running round's checkpoint, recovered at the next start.
    await chat.api.execute(
        "INSERT INTO round_checkpoints (session_id, user_message_id, regenerate, model,"
        " provider, prompt_tokens, context_limit, content, reasoning)"
        " VALUES (?, ?, 1, 'fake-model', '127.0.0.1', 42, 4000, 'half an ans', NULL)",
        (chat.session_id, user_message))
    await aiohttp_client(create_app(chat.api.config))
    assert await chat.rows("SELECT status, prompt_tokens, cost_nanos FROM usage_metrics"
                           " ORDER BY id") == [("complete", 11, PRICED_NANOS),
                                               ("interrupted", 42, None)]
    data = await usage_of(chat)
    assert data["totals"] == sums(11 + 42, 7 + 3, PRICED_COST)
    assert data["last_round"]["cost"] is None


async def test_a_garbage_token_count_from_the_provider_keeps_the_reply_and_its_cost_bounded(
        chat_factory):
    """A provider reporting 10**15 tokens must not lose the reply to an overflowing cost:
    counts past 100 000 000 are replaced by the local estimate."""
    chat = await chat_factory()
    await chat.api.ok("PUT", f"/api/models/{chat.model['id']}", chat.user,
                      json={"inputPricePerMTok": 1000000, "outputPricePerMTok": 1000000})
    chat.upstream.queue(Reply(tokens=["kept"], usage={
        "prompt_tokens": 10**15, "completion_tokens": 10**15, "total_tokens": 2 * 10**15}))
    stream = await chat.stream("hi")
    assert stream.types()[-1] == "complete"
    [(content, status)] = await chat.rows(
        "SELECT content, status FROM messages WHERE role = 'assistant'")
    assert (content, status) == ("kept", "complete")
    [(prompt, completion, estimated, cost)] = await chat.rows(
        "SELECT prompt_tokens, completion_tokens, estimated, cost_nanos FROM usage_metrics")
    assert estimated == 1 and prompt < 1000 and completion < 1000
    assert cost == (prompt + completion) * 10**12 // 1000
