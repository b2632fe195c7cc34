"""One concurrency slot per round, /api and /v1 alike, and one status map for failed answers."""

from __future__ import annotations

import asyncio
import contextlib

from aichat.http.appkeys import registry_key

from .fake_upstream import Reply
from .helpers import SSEStream, assert_error

STALL = Reply(tokens=["first ", "never"], stall_after=1)  # one token, then silence


def v1_stream(chat, content: str):
    return chat.api.client.post("/v1/chat/completions", headers=chat.user.headers, json={
        "model": "fake-model", "stream": True, "messages": [{"role": "user", "content": content}]})


async def wait_rounds(chat) -> None:
    for round_ in chat.api.client.app[registry_key].rounds():
        assert await round_.wait_done(5)


async def test_a_v1_stream_takes_one_slot_not_two(chat):
    await chat.api.ok("PUT", "/api/settings/system", "admin", json={"max_concurrent_streams": 2})
    chat.upstream.queue(STALL, STALL)
    async with contextlib.AsyncExitStack() as stack:
        for i in range(2):  # both run at once: each costs one of the two slots
            response = await stack.enter_async_context(v1_stream(chat, f"stream {i}"))
            assert response.status == 200
            assert b"first" in await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
            stack.callback(response.close)
        async with v1_stream(chat, "third") as third:
            body = await third.json()
            assert third.status == 429 and third.headers["Retry-After"] == "15"
            assert body["error"]["message"] == \
                "Too many requests are generating at once (limit 2)"
        # The limit is shared with chat rounds.
        async with chat.open("a chat round") as r:
            assert_error(r.status, await r.json(), 429, "limit 2")
        assert len(chat.upstream.requests) == 2
    await wait_rounds(chat)
    # Their slots are free again once they end.
    chat.upstream.queue(Reply(tokens=["again"]))
    assert (await chat.stream("again")).text() == "again"


async def test_v1_streams_and_chat_rounds_share_the_limit(chat):
    await chat.api.ok("PUT", "/api/settings/system", "admin", json={
        "max_concurrent_streams": 2, "on_disconnect": "stop"})  # closing below stops both
    other = await chat.api.ok("POST", "/api/sessions", chat.user,
                              json={"modelConfigId": chat.model["id"]})
    chat.upstream.queue(STALL, STALL)
    async with v1_stream(chat, "v1") as v1, chat.open("chat") as api:
        assert b"first" in await asyncio.wait_for(v1.content.readuntil(b"\n\n"), 5)
        await SSEStream(api).until("content")
        await chat.api.error("POST", "/api/chat/completion", chat.user, 429, "limit 2",
                             json={"sessionId": other["id"], "content": "x"})
        v1.close()
        api.close()
    await wait_rounds(chat)


async def refused_model(start, upstream):
    """Alice's model saved while the policy allowed the fake upstream, then refused."""
    api = await start(app_mode="multi")
    await api.register("admin", "adminpass1")
    alice = await api.register("alice")
    await api.ok("PUT", "/api/settings/system", "admin", json={
        "upstream_url_policy": "allowlist", "upstream_allowlist": "127.0.0.0/8"})
    model = await api.ok("POST", "/api/models", alice, json={
        "name": "local", "apiUrl": upstream.url, "apiKey": "k"})
    session = await api.ok("POST", "/api/sessions", alice, json={"modelConfigId": model["id"]})
    await api.ok("PUT", "/api/settings/system", "admin", json={"upstream_url_policy":
                                                               "public_only"})
    return api, alice, session


async def test_a_refused_model_url_is_400_on_api_and_v1(start, upstream):
    api, alice, session = await refused_model(start, upstream)
    await api.error("POST", "/api/chat/completion", alice, 400, "loopback",
                    json={"sessionId": session["id"], "content": "hi"})
    async with api.client.post("/v1/chat/completions", headers=alice.headers, json={
            "model": "local", "messages": [{"role": "user", "content": "hi"}]}) as r:
        body = await r.json()
        assert r.status == 400 and "loopback" in body["error"]["message"]
        assert body["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []  # never reached, never retried


async def test_an_upstream_status_is_502_on_both_with_its_own_message(chat):
    chat.upstream.queue(Reply(status=404), Reply(status=404))
    await chat.api.error("POST", "/api/chat/completion", chat.user, 502,
                         "AI API request failed: 404", json={"sessionId": chat.session_id,
                                                             "content": "hi"})
    async with chat.api.client.post("/v1/chat/completions", headers=chat.user.headers, json={
            "model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}) as r:
        body = await r.json()
        assert r.status == 502
        assert body["error"]["message"].startswith("AI API request failed: 404 ")
        assert "upstream refused" in body["error"]["message"]
