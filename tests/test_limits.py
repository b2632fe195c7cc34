"""Abuse limits: failed logins/registrations and concurrent chat rounds per user."""

from __future__ import annotations

import pytest

from aichat.security.ratelimit import FailureLimiter

from .fake_upstream import Reply
from .helpers import SSEStream, assert_error

BAD = {"username": "bob", "password": "wrongpass1"}


async def test_ten_failed_logins_for_a_username_then_429(api):
    await api.register("bob", "password1")
    await api.register("carol", "password1")
    for _ in range(10):
        await api.error("POST", "/api/auth/login", None, 401, json=BAD)
    async with api.client.post("/api/auth/login",
                               json={"username": "bob", "password": "password1"}) as r:
        body = await r.json()
        assert_error(r.status, body, 429, "Too many failed attempts")
        assert 1 <= int(r.headers["Retry-After"]) <= 900
    # Another account from another address is untouched.
    await api.ok("POST", "/api/auth/login", json={"username": "carol", "password": "password1"},
                 headers={"X-Forwarded-For": "198.51.100.7"})


async def test_a_success_forgives_the_username(api):
    await api.register("bob", "password1")
    for round_ in range(2):
        for _ in range(9):
            await api.error("POST", "/api/auth/login", None, 401, json=BAD,
                            headers={"X-Forwarded-For": f"203.0.113.{round_ * 20 + _}"})
        await api.login("bob", "password1")


async def test_failures_from_one_address_block_that_address(api):
    client = {"X-Forwarded-For": "203.0.113.9"}
    for i in range(10):
        await api.error("POST", "/api/auth/login", None, 401, headers=client,
                        json={"username": f"nobody{i}", "password": "password1"})
    await api.error("POST", "/api/auth/login", None, 429, headers=client,
                    json={"username": "admin", "password": "adminpass1"})
    await api.error("POST", "/api/auth/register", None, 429, headers=client,
                    json={"username": "newbie", "password": "password1"})
    await api.login("admin", "adminpass1")  # other addresses still get in


async def test_failed_registrations_count_too(api):
    await api.register("taken")
    client = {"X-Forwarded-For": "203.0.113.50"}
    for _ in range(5):
        await api.error("POST", "/api/auth/register", None, 409, headers=client,
                        json={"username": "taken", "password": "password1"})
        await api.error("POST", "/api/auth/register", None, 400, headers=client,
                        json={"username": "x", "password": "password1"})
    await api.error("POST", "/api/auth/register", None, 429, headers=client,
                    json={"username": "fresh_one", "password": "password1"})


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(start):
    api = await start(app_mode="multi", trusted_proxies="10.0.0.0/8")
    await api.register("admin", "adminpass1")
    for i in range(10):  # each claims another address, but the peer (127.0.0.1) is not trusted
        await api.error("POST", "/api/auth/login", None, 401,
                        headers={"X-Forwarded-For": f"203.0.113.{i}"},
                        json={"username": f"nobody{i}", "password": "password1"})
    await api.error("POST", "/api/auth/login", None, 429,
                    headers={"X-Forwarded-For": "203.0.113.99"},
                    json={"username": "admin", "password": "adminpass1"})


def test_the_window_slides():
    now = [1000.0]
    limiter = FailureLimiter(limit=3, window_s=60, clock=lambda: now[0])
    for step in range(3):
        now[0] += 10
        limiter.failed(["ip:a"])
    with pytest.raises(Exception) as refused:
        limiter.check(["ip:a"])
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "40"
    now[0] = 1010 + 60  # the oldest failure has aged out
    limiter.check(["ip:a"])
    limiter.check(["ip:b"])


SLOW = Reply(tokens=[f"w{i} " for i in range(300)], delay=0.02)


async def test_concurrent_rounds_per_user_are_capped(chat):
    api, alice = chat.api, chat.user
    await api.ok("PUT", "/api/settings/system", "admin", json={"max_concurrent_streams": 2})
    sessions = [chat.session_id] + [
        (await api.ok("POST", "/api/sessions", alice,
                      json={"modelConfigId": chat.model["id"]}))["id"] for _ in range(2)]
    chat.upstream.queue(SLOW, SLOW)
    opened = []
    for session_id in sessions[:2]:
        cm = chat.open("go", session_id=session_id)
        response = await cm.__aenter__()
        reader = SSEStream(response)
        await reader.until("content")
        opened.append((cm, response, reader))
    stored = len(chat.rows("SELECT id FROM messages"))
    async with chat.open("third", session_id=sessions[2]) as r:
        assert_error(r.status, await r.json(), 429, "limit 2")
        assert r.headers["Retry-After"] == "15"
    await api.error("POST", "/api/chat/completion", alice, 429, "limit 2",
                    json={"sessionId": sessions[2], "content": "third"})
    assert len(chat.rows("SELECT id FROM messages")) == stored  # nothing stored
    assert len(chat.upstream.requests) == 2
    # A new message on a busy session replaces its round: allowed at the cap.
    chat.upstream.queue(Reply(tokens=["replaced"]))
    again = await chat.stream("instead", session_id=sessions[0])
    assert again.types()[-1] == "complete"
    # With that round gone, the third session may start.
    chat.upstream.queue(Reply(tokens=["third"]))
    third = await chat.stream("third", session_id=sessions[2])
    assert third.text() == "third"
    for cm, response, reader in opened:
        response.close()
        await cm.__aexit__(None, None, None)


async def test_stream_cap_setting_is_validated(chat):
    for value in (0, 10001, "3", 2.5):
        await chat.api.error("PUT", "/api/settings/system", "admin", 400,
                             "max_concurrent_streams", json={"max_concurrent_streams": value})
