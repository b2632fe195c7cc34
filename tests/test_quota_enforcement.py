"""Quotas enforced (docs/api.md §9): each limit refuses with its own message and resets with
its UTC period; a refusal leaves no trace; a round holds its prompt until its usage row is
stored; and concurrent rounds never pass a limit by their prompts.

The quota clock is moved forward only; usage rows are dated by the database's real clock, so
tokens are used at the real now and the clock is then moved to the moment under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aichat.http.appkeys import clock_key, registry_key

from .fake_upstream import Reply
from .helpers import SSEStream, assert_error

STALL = Reply(tokens=["first ", "never"], stall_after=1)  # one token, then silence
HI = 10  # "Hi there" alone: 3 + (4 + 2 + 1)
V1_HI = 9  # /v1 "hi" alone: 3 + (4 + 1 + 1)
HELLO = 4  # the fake upstream's default reply, "Hello, world!"


def tokens(text: str) -> int:
    """The heuristic count of an ASCII text: ceil(characters / 4) (docs/api.md §5.3)."""
    return -(-len(text) // 4)


def prompt(*turns: tuple[str, str]) -> int:
    """A conversation's cost: 3 + Σ (4 + tokens(content) + tokens(role))."""
    return 3 + sum(4 + tokens(text) + tokens(role) for role, text in turns)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


# --- moments (all whole seconds, so "…:SS.000Z") ---

def iso(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%S}.000Z"


def today_at(hour: int, minute: int, second: int) -> datetime:
    return datetime.now(UTC).replace(hour=hour, minute=minute, second=second, microsecond=0)


def next_midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def next_month(moment: datetime) -> datetime:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def minute_from_now(second: int) -> datetime:
    """`second` seconds into the next minute: a moment that stays ahead of the real clock."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return start + timedelta(seconds=second)


def seconds(start: datetime, end: datetime) -> int:
    return int((end - start).total_seconds())


@pytest.fixture(autouse=True)
def _clear_of_midnight() -> None:
    """The tests move the clock ahead within today (up to 23:59:50); usage rows must be
    dated today by the real clock, so today has to last a few more minutes."""
    moment = datetime.now(UTC)
    if moment.hour == 23 and moment.minute >= 55:
        pytest.skip("too close to midnight UTC for the quota clock tests")


# --- the app ---

def set_clock(chat, moment: datetime) -> None:
    chat.api.client.app[clock_key].set(moment)


async def limit(chat, user=None, **limits: Any) -> dict:
    user = user or chat.user
    return await chat.api.ok("PUT", f"/api/users/{user.id}/limits", "admin", json=limits)


async def new_session(chat, model_id: int | None = None) -> int:
    session = await chat.api.ok("POST", "/api/sessions", chat.user,
                                json={"modelConfigId": model_id or chat.model["id"]})
    return session["id"]


def body_for(chat, path: str, content: str = "Hi there",
             session_id: int | None = None) -> dict[str, Any]:
    session_id = session_id or chat.session_id
    if path == "/api/chat/regenerate":
        return {"sessionId": session_id}
    return {"sessionId": session_id, "content": content}


async def post(chat, path: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    async with chat.api.client.post(path, json=body, headers=chat.user.headers) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


async def refused(chat, message: str, retry_after: int, *, path: str = "/api/chat/completion",
                  content: str = "Hi there", session_id: int | None = None) -> dict[str, str]:
    """The /api refusal: 429, the unified error body with exactly `message`, Retry-After."""
    status, body, headers = await post(chat, path, body_for(chat, path, content, session_id))
    assert_error(status, body, 429)
    assert body == {"success": False, "error": message, "data": None}
    assert headers["Retry-After"] == str(retry_after)
    return headers


async def complete(chat, content: str = "Hi there", session_id: int | None = None) -> dict:
    return await chat.api.ok("POST", "/api/chat/completion", chat.user,
                             json=body_for(chat, "/api/chat/completion", content, session_id))


def v1(chat, content: str = "hi", *, stream: bool = False, key: str | None = None,
       model: str = "fake-model"):
    auth = {"Authorization": f"Bearer {key}"} if key is not None else chat.user.headers
    return chat.api.client.post("/v1/chat/completions", headers=auth, json={
        "model": model, "stream": stream, "messages": [{"role": "user", "content": content}]})


def rate_headers(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}


async def holds(chat) -> list[tuple]:
    return await chat.rows("SELECT user_id, api_key_id, tokens, cost_nanos FROM quota_holds")


async def day_tokens(chat) -> int:
    [(total,)] = await chat.rows("SELECT COALESCE(SUM(tokens), 0) FROM quota_days")
    return int(total)


def running(chat, session_id: int | None = None):
    """The session's round as the app holds it, to await its end instead of polling."""
    round_ = chat.api.client.app[registry_key].running(session_id or chat.session_id)
    assert round_ is not None
    return round_


async def trace(chat) -> dict[str, Any]:
    """Everything a request could leave behind."""
    return {
        "messages": await chat.rows("SELECT id, role, content, status FROM messages ORDER BY id"),
        "usage": await chat.rows("SELECT id, total_tokens FROM usage_metrics ORDER BY id"),
        "days": await chat.rows("SELECT user_id, day, api_key_id, tokens, cost_nanos"
                                " FROM quota_days"),
        "minutes": await chat.rows("SELECT user_id, minute, requests FROM quota_minutes"),
        "holds": await holds(chat),
        "upstream": len(chat.upstream.requests)}


# --- each limit: refused, then reset by its period ---

async def test_the_request_limit_resets_at_the_next_minute(chat):
    moment = minute_from_now(45)
    set_clock(chat, moment)
    await limit(chat, requestsPerMinute=2)
    await complete(chat)
    await complete(chat)
    reset = moment.replace(second=0) + timedelta(minutes=1)
    await refused(chat, f"Request limit of 2 per minute reached; resets at {iso(reset)}", 15)
    assert await chat.rows("SELECT requests FROM quota_minutes") == [(2,)]
    assert len(chat.upstream.requests) == 2
    set_clock(chat, reset)
    await complete(chat)
    assert await chat.rows("SELECT minute, requests FROM quota_minutes") == [
        (f"{reset:%Y-%m-%dT%H:%M}", 1)]


async def test_the_daily_token_limit_resets_at_midnight_utc(chat):
    await limit(chat, tokensPerDay=100)
    chat.upstream.queue(Reply(usage=usage(60, 40)))
    await complete(chat)  # the provider's numbers: exactly the day's budget
    assert await day_tokens(chat) == 100
    moment = today_at(23, 59, 30)
    set_clock(chat, moment)
    midnight = next_midnight(moment)
    await refused(chat, f"Daily token limit of 100 reached; resets at {iso(midnight)}", 30)
    set_clock(chat, midnight)
    await complete(chat)  # yesterday's 100 no longer count (the prompt is 23 now)


async def test_the_monthly_token_limit_resets_on_the_first(chat):
    await limit(chat, tokensPerMonth=1_000_000)
    chat.upstream.queue(Reply(usage=usage(999_000, 1_000)))
    await complete(chat)
    first = next_month(datetime.now(UTC))
    moment = first - timedelta(seconds=10)  # the month's last day, 23:59:50
    set_clock(chat, moment)
    await refused(chat, f"Monthly token limit of 1 000 000 reached; resets at {iso(first)}", 10)
    set_clock(chat, first)
    await complete(chat)


async def priced_model(chat) -> int:
    """A model at 1 currency unit per token, prompt and reply alike."""
    model = await chat.api.ok("POST", "/api/models", chat.user, json={
        "name": "priced", "apiUrl": chat.upstream.url, "apiKey": "sk-priced",
        "inputPricePerMTok": 1_000_000, "outputPricePerMTok": 1_000_000})
    return model["id"]


async def spent(chat, prompt: int, reply: int) -> int:
    """A monthly cost limit of 25.00 and one priced round of `prompt` + `reply` tokens (one
    currency unit each) spent; a second session on the priced model, for the next round."""
    model = await priced_model(chat)
    priced, other_priced = await new_session(chat, model), await new_session(chat, model)
    await limit(chat, costPerMonth=25)
    chat.upstream.queue(Reply(usage=usage(prompt, reply)))
    await complete(chat, session_id=priced)
    return other_priced


async def test_the_monthly_cost_limit_counts_priced_rounds_and_resets_on_the_first(chat):
    other_priced = await spent(chat, 12, 8)  # 20.00 of 25.00
    assert await chat.rows("SELECT tokens, cost_nanos FROM quota_days") == [(20, 20 * 10**9)]
    first = next_month(datetime.now(UTC))
    moment = first - timedelta(seconds=10)
    set_clock(chat, moment)
    await refused(chat, "Monthly cost limit of 25.00 USD reached (5.00 left; this request "
                        f"needs about {HI}.00); resets at {iso(first)}", 10,
                  session_id=other_priced)
    # A model without prices has no cost: its rounds never meet a cost limit.
    await complete(chat)
    set_clock(chat, first)
    await complete(chat, session_id=other_priced)


async def refused_for_cost(chat, limit_shown: str, session_id: int) -> None:
    """A priced round refused by the monthly cost limit late today; an unpriced one passes."""
    moment = today_at(23, 59, 30)
    set_clock(chat, moment)
    first = next_month(moment)
    await refused(chat, f"Monthly cost limit of {limit_shown} USD reached; resets at "
                        f"{iso(first)}", seconds(moment, first), session_id=session_id)
    await complete(chat)


async def test_a_cost_limit_of_zero_blocks_priced_rounds_only(chat):
    priced = await new_session(chat, await priced_model(chat))
    await limit(chat, costPerMonth=0)
    await refused_for_cost(chat, "0.00", priced)
    assert len(chat.upstream.requests) == 1


async def test_an_unpriced_model_is_never_refused_by_a_cost_limit(chat):
    # A priced reply crosses the cost limit mid-stream (it is not cut); the next priced round
    # is refused, but a model without prices "never counts against a cost limit" (§9).
    other_priced = await spent(chat, 12, 18)  # 30.00 of 25.00
    await refused_for_cost(chat, "25.00", other_priced)


async def v1_call(chat, key: str | None = None) -> dict:
    async with v1(chat, key=key) as response:
        body = await response.json()
        assert response.status == 200, body
        return body


async def test_an_api_keys_monthly_limit_refuses_that_key_only(chat):
    limited = await chat.api.ok("POST", "/api/keys", chat.user,
                                json={"name": "limited", "tokensPerMonth": 40})
    other = await chat.api.ok("POST", "/api/keys", chat.user, json={"name": "other"})
    # The user's own rounds (JWT) do not count against the key's limit.
    chat.upstream.queue(Reply(usage=usage(V1_HI, 30)))
    await v1_call(chat)
    chat.upstream.queue(Reply(usage=usage(V1_HI, 40 - V1_HI)))
    await v1_call(chat, limited["key"])  # 40 of the key's 40
    first = next_month(datetime.now(UTC))
    moment = first - timedelta(seconds=10)
    set_clock(chat, moment)
    async with v1(chat, key=limited["key"]) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "10"
        assert (await response.json())["error"]["message"] == (
            f"This API key's monthly token limit of 40 reached; resets at {iso(first)}")
    sent = len(chat.upstream.requests)
    await v1_call(chat)  # the same user with a JWT
    await v1_call(chat, other["key"])  # and with another key
    assert len(chat.upstream.requests) == sent + 2
    set_clock(chat, first)
    await v1_call(chat, limited["key"])


async def test_a_keys_requests_count_against_its_owners_limits(chat):
    key = await chat.api.ok("POST", "/api/keys", chat.user, json={"name": "k"})
    await limit(chat, tokensPerDay=50)
    chat.upstream.queue(Reply(usage=usage(V1_HI, 50 - V1_HI)))
    await v1_call(chat, key["key"])
    moment = today_at(23, 59, 30)
    set_clock(chat, moment)
    await refused(chat, f"Daily token limit of 50 reached; resets at "
                        f"{iso(next_midnight(moment))}", 30)
    assert len(chat.upstream.requests) == 1


# --- the refusal ---

async def test_the_message_says_what_is_left_and_what_the_request_needs(chat):
    await limit(chat, tokensPerDay=50_000)
    chat.upstream.queue(Reply(usage=usage(49_000, 688)))
    await complete(chat)
    moment = today_at(23, 59, 30)
    set_clock(chat, moment)
    content = "a" * 5888  # a new session: 3 + 4 + 1472 + 1 = 1 480
    assert prompt(("user", content)) == 1480
    await refused(chat, "Daily token limit of 50 000 reached (312 left; this request needs "
                        f"about 1 480); resets at {iso(next_midnight(moment))}", 30,
                  content=content, session_id=await new_session(chat))


async def test_of_several_limits_hit_the_one_that_resets_last_is_named(chat):
    # Mid-month in the future: the day, the month and the minute all end at different times,
    # and only holds (undated) count, so the real date does not matter.
    moment = next_month(datetime.now(UTC)) + timedelta(days=14, hours=12, seconds=45)
    set_clock(chat, moment)
    await limit(chat, requestsPerMinute=1, tokensPerDay=15, tokensPerMonth=15)
    chat.upstream.queue(STALL)
    other = await new_session(chat)
    async with chat.open() as response:
        await SSEStream(response).until("content")  # holds HI = 10 of each 15
        needs = f"(5 left; this request needs about {HI})"
        await refused(chat, f"Monthly token limit of 15 reached {needs}; resets at "
                            f"{iso(next_month(moment))}", seconds(moment, next_month(moment)),
                      session_id=other)
        await limit(chat, tokensPerMonth=100)
        midnight = next_midnight(moment)
        await refused(chat, f"Daily token limit of 15 reached {needs}; resets at "
                            f"{iso(midnight)}", seconds(moment, midnight), session_id=other)
        await limit(chat, tokensPerDay=100)
        minute = moment.replace(second=0) + timedelta(minutes=1)
        await refused(chat, f"Request limit of 1 per minute reached; resets at {iso(minute)}",
                      15, session_id=other)
        await chat.api.ok("POST", "/api/chat/stop", chat.user,
                          json={"sessionId": chat.session_id})
    assert len(chat.upstream.requests) == 1


PATHS = ["/api/chat/stream", "/api/chat/completion", "/api/chat/regenerate"]


@pytest.mark.parametrize("path", PATHS)
async def test_a_refused_request_leaves_no_trace(chat, path):
    await limit(chat, tokensPerDay=HI + HELLO, requestsPerMinute=100)
    moment = today_at(23, 59, 30)
    set_clock(chat, moment)
    await chat.stream()  # prompt and reply: the day's budget exactly
    before = await trace(chat)
    assert before["days"] == [(chat.user.id, f"{datetime.now(UTC):%Y-%m-%d}", 0, HI + HELLO, 0)]
    assert before["minutes"] == [(chat.user.id, f"{moment:%Y-%m-%dT%H:%M}", 1)]
    assert before["holds"] == [] and before["upstream"] == 1
    headers = await refused(chat, f"Daily token limit of {HI + HELLO} reached; resets at "
                                  f"{iso(next_midnight(moment))}", 30, path=path)
    assert rate_headers(headers)["x-ratelimit-remaining-tokens"] == "0"
    assert await trace(chat) == before


async def test_a_refused_message_still_supersedes_the_round_on_its_session(chat):
    # The check counts the prompt as it will be sent, so it comes once the session's running
    # round has stopped and saved its reply (§5.2, §9): that reply is kept, and nothing of the
    # refused message is stored or sent.
    await limit(chat, tokensPerDay=20)
    moment = today_at(23, 59, 30)
    set_clock(chat, moment)
    chat.upstream.queue(STALL)
    async with chat.open() as response:
        stream = SSEStream(response)
        await stream.until("content")
        assert await holds(chat) == [(chat.user.id, 0, HI, 0)]
        status, body, headers = await post(chat, "/api/chat/stream", body_for(
            chat, "/api/chat/stream"))
        assert status == 429 and headers["Retry-After"] == "30"
        assert body["error"].startswith("Daily token limit of 20 reached")
        assert body["error"].endswith(f"; resets at {iso(next_midnight(moment))}")
        await stream.rest()
    assert stream.text() == "first " and stream.events[-1]["type"] == "stop"
    assert chat.upstream.requests[0].disconnected.is_set()
    assert len(chat.upstream.requests) == 1
    assert [(m["role"], m["status"]) for m in await chat.messages()] == [
        ("user", "complete"), ("assistant", "stopped")]
    assert await holds(chat) == []


# --- /v1 ---

async def test_v1_refusal_is_openais_rate_limit_error_with_rate_headers(chat):
    moment = minute_from_now(45)
    set_clock(chat, moment)
    to_midnight = f"{seconds(moment, next_midnight(moment))}s"
    await limit(chat, requestsPerMinute=3, tokensPerDay=35)
    chat.upstream.queue(Reply(usage=usage(V1_HI, 6)))
    async with v1(chat) as response:
        assert response.status == 200
        assert rate_headers(response.headers) == {
            "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "2",
            "x-ratelimit-reset-requests": "15s",
            "x-ratelimit-limit-tokens": "35", "x-ratelimit-remaining-tokens": str(35 - V1_HI),
            "x-ratelimit-reset-tokens": to_midnight}
        await response.json()
    chat.upstream.queue(Reply(usage=usage(V1_HI, 6)))
    async with v1(chat, stream=True) as response:
        assert response.status == 200
        assert rate_headers(response.headers) == {
            "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "1",
            "x-ratelimit-reset-requests": "15s",
            "x-ratelimit-limit-tokens": "35",
            "x-ratelimit-remaining-tokens": str(35 - 15 - V1_HI),
            "x-ratelimit-reset-tokens": to_midnight}
        assert (await response.read()).endswith(b"data: [DONE]\n\n")
    assert await day_tokens(chat) == 30
    async with v1(chat) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == to_midnight[:-1]
        assert await response.json() == {"error": {
            "message": f"Daily token limit of 35 reached (5 left; this request needs about "
                       f"{V1_HI}); resets at {iso(next_midnight(moment))}",
            "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}}
        # Nothing counted for the refused request: two of three requests, 5 tokens left.
        assert rate_headers(response.headers) == {
            "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "1",
            "x-ratelimit-reset-requests": "15s",
            "x-ratelimit-limit-tokens": "35", "x-ratelimit-remaining-tokens": "5",
            "x-ratelimit-reset-tokens": to_midnight}
    assert len(chat.upstream.requests) == 2
    assert await chat.rows("SELECT requests FROM quota_minutes") == [(2,)]


async def test_v1_request_limit_refusal_and_the_tokens_header_of_the_least_left(chat):
    moment = minute_from_now(50)
    set_clock(chat, moment)
    key = await chat.api.ok("POST", "/api/keys", chat.user,
                            json={"name": "k", "tokensPerMonth": 100})
    await limit(chat, requestsPerMinute=1, tokensPerDay=1000)
    async with v1(chat, key=key["key"]) as response:
        assert response.status == 200
        # The key's monthly 100 has less left than the user's daily 1000.
        assert rate_headers(response.headers) == {
            "x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "10s",
            "x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": str(100 - V1_HI),
            "x-ratelimit-reset-tokens": f"{seconds(moment, next_month(moment))}s"}
        await response.json()
    async with v1(chat, key=key["key"]) as response:
        assert response.status == 429 and response.headers["Retry-After"] == "10"
        error = (await response.json())["error"]
        minute = moment.replace(second=0) + timedelta(minutes=1)
        assert error == {"message": f"Request limit of 1 per minute reached; resets at "
                                    f"{iso(minute)}", "type": "rate_limit_error",
                         "param": None, "code": "rate_limit_exceeded"}
        assert rate_headers(response.headers)["x-ratelimit-remaining-requests"] == "0"


async def test_v1_answers_carry_no_rate_headers_without_limits(chat):
    for stream in (False, True):
        async with v1(chat, stream=stream) as response:
            assert response.status == 200
            assert rate_headers(response.headers) == {}
            await response.read()
    assert await chat.rows("SELECT user_id FROM quota_minutes") == []


# --- holds ---

ENDINGS = ["complete", "stop", "upstream failure", "client disconnect", "session deleted"]


@pytest.mark.parametrize("ending", ENDINGS)
async def test_a_round_holds_its_prompt_until_it_ends(chat, ending):
    await limit(chat, tokensPerDay=1000)
    held = [(chat.user.id, 0, HI, 0)]
    if ending == "client disconnect":  # else the round would outlive its client (§6.1)
        await chat.api.ok("PUT", "/api/settings/system", "admin", json={"on_disconnect": "stop"})
    if ending == "upstream failure":
        chat.upstream.queue(Reply(status=500, headers_delay=0.5), Reply(status=500))
        answer = asyncio.create_task(chat.api.call(
            "POST", "/api/chat/completion", chat.user,
            json={"sessionId": chat.session_id, "content": "Hi there"}))
        await chat.upstream.wait_requests(1)
        assert await holds(chat) == held
        status, body = await answer
        assert_error(status, body, 502, "AI API request failed: 500")
        assert await holds(chat) == []
        assert await chat.rows("SELECT status, total_tokens FROM usage_metrics") == [
            ("error", HI)]
        return
    chat.upstream.queue(Reply(tokens=["first ", "second"], delay=0.3) if ending == "complete"
                        else STALL)
    async with chat.open() as response:
        stream = SSEStream(response)
        await stream.until("content")
        round_ = running(chat)
        assert await holds(chat) == held
        if ending == "stop":
            await chat.api.ok("POST", "/api/chat/stop", chat.user,
                              json={"sessionId": chat.session_id})
        elif ending == "client disconnect":
            response.close()
        elif ending == "session deleted":
            await chat.api.ok("DELETE", f"/api/sessions/{chat.session_id}", chat.user)
        if ending != "client disconnect":
            await stream.rest()
        assert await round_.wait_done(5)
    assert await holds(chat) == []
    counted = await chat.rows("SELECT status, prompt_tokens FROM usage_metrics")
    expected = {"complete": [("complete", HI)], "stop": [("stopped", HI)],
                "client disconnect": [("stopped", HI)], "session deleted": []}
    assert counted == expected[ending]


async def test_a_v1_hold_names_its_key_and_holds_the_prompts_cost(chat):
    await priced_model(chat)
    key = await chat.api.ok("POST", "/api/keys", chat.user,
                            json={"name": "k", "tokensPerMonth": 1000})
    chat.upstream.queue(STALL)
    async with v1(chat, stream=True, key=key["key"], model="priced") as response:
        assert b"first" in await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
        [round_] = chat.api.client.app[registry_key].rounds()
        assert await holds(chat) == [(chat.user.id, key["id"], V1_HI, V1_HI * 10**9)]
        response.close()
    assert await round_.wait_done(5)
    assert await holds(chat) == []
    assert await chat.rows("SELECT api_key_id, tokens, cost_nanos FROM quota_days") == [
        (key["id"], V1_HI + tokens("first "), (V1_HI + tokens("first ")) * 10**9)]


async def test_a_superseding_round_holds_the_prompt_it_sends(chat):
    # A new message supersedes the round running on its session, which stores its partial
    # reply first; the new round's context (§5.3) then includes that reply. Its hold must be
    # that prompt, or the prompts of rounds in flight pass the limit (§9).
    await limit(chat, tokensPerDay=10**6)
    chat.upstream.queue(STALL, STALL)
    async with chat.open() as first:
        await SSEStream(first).until("content")
        async with chat.open() as second:
            await SSEStream(second).until("content")
            sent = prompt(("user", "Hi there"), ("assistant", "first"), ("user", "Hi there"))
            assert [len(r.body["messages"]) for r in chat.upstream.requests] == [1, 3]
            held = await holds(chat)
            await chat.api.ok("POST", "/api/chat/stop", chat.user,
                              json={"sessionId": chat.session_id})
    prompts = await chat.rows("SELECT prompt_tokens FROM usage_metrics ORDER BY id")
    assert prompts == [(HI,), (sent,)]
    assert held == [(chat.user.id, 0, sent, 0)]


async def test_a_superseding_round_whose_grown_prompt_would_pass_the_limit_is_refused(chat):
    # Admitted on the context before the replaced round's reply was saved, it is checked again
    # for the prompt it would send: the prompts held never pass the limit (§9).
    first_reply = tokens("first")
    sent = prompt(("user", "Hi there"), ("assistant", "first"), ("user", "Hi there"))
    await limit(chat, tokensPerDay=HI + first_reply + sent - 1)
    chat.upstream.queue(STALL)
    async with chat.open() as first:
        await SSEStream(first).until("content")
        async with chat.open() as second:
            assert second.status == 429, await second.text()
            assert "Daily token limit" in (await second.json())["error"]
    assert len(chat.upstream.requests) == 1
    assert [m["role"] for m in await chat.messages()] == ["user", "assistant"]
    assert await holds(chat) == []


async def test_no_hold_and_no_count_without_limits(chat):
    async def stalled_round_holds_nothing() -> None:
        chat.upstream.queue(STALL)
        async with chat.open() as response:
            await SSEStream(response).until("content")
            assert await holds(chat) == []
            await chat.api.ok("POST", "/api/chat/stop", chat.user,
                              json={"sessionId": chat.session_id})

    await stalled_round_holds_nothing()
    assert await chat.rows("SELECT user_id FROM quota_minutes") == []
    # A request limit alone counts the request but holds nothing.
    await limit(chat, requestsPerMinute=100)
    await stalled_round_holds_nothing()
    assert await chat.rows("SELECT requests FROM quota_minutes") == [(1,)]


# --- concurrency ---

DAILY_REFUSAL = re.compile(r"Daily token limit of (\d+) reached"
                           r"( \((\d+) left; this request needs about (\d+)\))?; resets at (.+)")


async def test_parallel_rounds_never_pass_the_limit_by_their_prompts(chat):
    budget, reply = 200, "ok fine"  # each round: HI + 2 tokens
    await limit(chat, tokensPerDay=budget, maxConcurrentStreams=50)
    moment = today_at(23, 59, 30)
    set_clock(chat, moment)
    chat.upstream.default = Reply(tokens=["ok ", "fine"], delay=0.2)
    sessions = await asyncio.gather(*(new_session(chat) for _ in range(50)))
    answers = await asyncio.gather(*(chat.api.call(
        "POST", "/api/chat/completion", chat.user,
        json={"sessionId": s, "content": "Hi there"}) for s in sessions))
    admitted = [body for status, body in answers if status == 200]
    refusals = [(status, body) for status, body in answers if status != 200]
    assert admitted and len(admitted) * HI <= budget
    assert len(admitted) + len(refusals) == 50
    for status, body in refusals:
        assert_error(status, body, 429)
        match = DAILY_REFUSAL.fullmatch(body["error"])
        assert match is not None, body["error"]
        assert match.group(1) == str(budget) and match.group(5) == iso(next_midnight(moment))
        if match.group(2):
            assert match.group(4) == str(HI) and int(match.group(3)) < HI
    assert len(chat.upstream.requests) == len(admitted)
    rows = await chat.rows("SELECT prompt_tokens, completion_tokens, total_tokens"
                           " FROM usage_metrics")
    assert rows == [(HI, tokens(reply), HI + tokens(reply))] * len(admitted)
    # The prompts fit; only the replies of the rounds in flight may pass the budget.
    assert sum(r[0] for r in rows) <= budget
    assert await day_tokens(chat) == sum(r[2] for r in rows) <= \
        budget + len(admitted) * tokens(reply)
    assert await holds(chat) == []


async def test_all_rounds_in_flight_take_exactly_what_fits(chat):
    # Stalled streams never end by themselves: every admission sees only holds, so exactly
    # budget // prompt are admitted, whatever the timing.
    budget = 5 * V1_HI + 3
    await limit(chat, tokensPerDay=budget, maxConcurrentStreams=50)
    moment = today_at(23, 59, 30)
    set_clock(chat, moment)
    chat.upstream.default = STALL

    async def attempt(stack: Any) -> tuple[int, Any]:
        response = await stack.enter_async_context(v1(chat, stream=True))
        if response.status != 200:
            return response.status, await response.json()
        first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
        assert b"first" in first
        return 200, response

    async with contextlib.AsyncExitStack() as stack:
        answers = await asyncio.gather(*(attempt(stack) for _ in range(50)))
        streams = [r for status, r in answers if status == 200]
        assert len(streams) == budget // V1_HI == 5
        assert await holds(chat) == [(chat.user.id, 0, V1_HI, 0)] * 5
        for status, body in answers:
            if status != 200:
                assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
                assert body["error"]["message"] == (
                    f"Daily token limit of {budget} reached (3 left; this request needs about "
                    f"{V1_HI}); resets at {iso(next_midnight(moment))}")
        rounds = chat.api.client.app[registry_key].rounds()
        for response in streams:
            response.close()
        for round_ in rounds:
            assert await round_.wait_done(5)
    assert await holds(chat) == []
    rows = await chat.rows("SELECT status, prompt_tokens, completion_tokens FROM usage_metrics")
    assert rows == [("stopped", V1_HI, tokens("first "))] * 5
    assert await day_tokens(chat) == 5 * (V1_HI + tokens("first ")) <= \
        budget + 5 * tokens("first ")


async def test_a_request_limit_admits_exactly_that_many_of_a_burst(chat):
    await limit(chat, requestsPerMinute=10, maxConcurrentStreams=30)
    moment = minute_from_now(30)
    set_clock(chat, moment)

    async def attempt() -> tuple[int, Any, dict[str, str]]:
        async with v1(chat) as response:
            return response.status, await response.json(), rate_headers(response.headers)

    answers = await asyncio.gather(*(attempt() for _ in range(30)))
    admitted = [headers for status, _, headers in answers if status == 200]
    assert len(admitted) == 10
    assert sorted(int(h["x-ratelimit-remaining-requests"]) for h in admitted) == list(range(10))
    minute = moment.replace(second=0) + timedelta(minutes=1)
    for status, body, headers in answers:
        if status != 200:
            assert status == 429 and headers["x-ratelimit-remaining-requests"] == "0"
            assert body["error"]["message"] == \
                f"Request limit of 10 per minute reached; resets at {iso(minute)}"
    assert len(chat.upstream.requests) == 10
    assert await chat.rows("SELECT requests FROM quota_minutes") == [(10,)]


# --- a user's own limit and the system default ---

async def test_a_users_own_limit_beats_the_default_and_null_restores_it(chat):
    await chat.api.ok("PUT", "/api/settings/system", "admin", json={"default_tokens_per_day": 5})
    moment = today_at(23, 59, 30)
    set_clock(chat, moment)
    resets = iso(next_midnight(moment))
    await refused(chat, f"Daily token limit of 5 reached (5 left; this request needs about "
                        f"{HI}); resets at {resets}", 30)
    await limit(chat, tokensPerDay=1000)
    await complete(chat)
    await limit(chat, tokensPerDay=None)
    await refused(chat, f"Daily token limit of 5 reached; resets at {resets}", 30)
    assert len(chat.upstream.requests) == 1

