"""Abuse limits: concurrent chat rounds per user (sign-in limits: test_ratelimit.py)."""

from __future__ import annotations

from .fake_upstream import Reply
from .helpers import SSEStream, assert_error

SLOW = Reply(tokens=[f"w{i} " for i in range(300)], delay=0.02)


async def test_concurrent_rounds_per_user_are_capped(chat):
    api, alice = chat.api, chat.user
    await api.ok("PUT", "/api/settings/system", "admin", json={
        "max_concurrent_streams": 2, "on_disconnect": "stop"})  # closing below ends them
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
    stored = len(await chat.rows("SELECT id FROM messages"))
    async with chat.open("third", session_id=sessions[2]) as r:
        assert_error(r.status, await r.json(), 429, "limit 2")
        assert r.headers["Retry-After"] == "15"
    await api.error("POST", "/api/chat/completion", alice, 429, "limit 2",
                    json={"sessionId": sessions[2], "content": "third"})
    assert len(await chat.rows("SELECT id FROM messages")) == stored  # nothing stored
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
