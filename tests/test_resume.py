"""Following a reply from elsewhere (docs/api.md §5.9): numbered events, a resume after a lost
connection by Last-Event-ID or ?after, a snapshot for a client with nothing, several
followers, and the access rules of GET /api/chat/sessions/:id/stream."""

from __future__ import annotations

import asyncio

from .fake_upstream import Reply
from .helpers import SSEStream

TOKENS = [f"w{i} " for i in range(60)]
WHOLE = "".join(TOKENS)


def path(chat) -> str:
    return f"/api/chat/sessions/{chat.session_id}/stream"


async def follow(chat, *, headers: dict[str, str] | None = None, query: str = "",
                 user=None) -> SSEStream:
    """Follow the session's round to its end."""
    async with chat.api.client.get(path(chat) + query, headers={
            **(user or chat.user).headers, **(headers or {})}) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        stream = SSEStream(response)
        await stream.rest()
        return stream


async def cut_off(chat, contents: int) -> SSEStream:
    """Start a slow round and leave after `contents` content events (a lost connection)."""
    chat.upstream.queue(Reply(tokens=TOKENS, delay=0.008))
    async with chat.open() as response:
        stream = SSEStream(response)
        while len([e for e in stream.events if e["type"] == "content"]) < contents:
            await stream.next()
    return stream


async def stored_reply(chat) -> tuple[str, str]:
    [(content, status)] = await chat.rows(
        "SELECT content, status FROM messages WHERE role = 'assistant'")
    return content, status


def generation(stream: SSEStream) -> str:
    return stream.events[0]["generationId"]


async def test_resume_by_last_event_id_gets_exactly_the_rest(chat):
    first = await cut_off(chat, 5)
    rest = await follow(chat, headers={"Last-Event-ID": first.ids[-1]})
    assert first.text() + rest.text() == WHOLE
    assert rest.events[-1]["type"] == "complete"
    # Numbered on from where the first copy ended, in the same generation.
    numbers = [int(i.rpartition(":")[2]) for i in rest.ids]
    assert numbers == sorted(numbers) and numbers[0] > int(first.ids[-1].rpartition(":")[2])
    assert {i.partition(":")[0] for i in rest.ids} == {generation(first)}
    assert await stored_reply(chat) == (WHOLE.strip(), "complete")
    assert rest.events[-1]["assistantMessageId"] == (await chat.messages())[-1]["id"]


async def test_resume_by_after_and_an_old_generation_s_id_is_ignored(chat):
    first = await cut_off(chat, 3)
    seq = first.ids[-1].rpartition(":")[2]
    rest = await follow(chat, query=f"?after={seq}",
                        headers={"Last-Event-ID": "an-older-round:2"})
    assert first.text() + rest.text() == WHOLE


async def test_resume_without_an_id_is_a_snapshot_then_the_live_events(chat):
    first = await cut_off(chat, 4)
    rest = await follow(chat)
    assert rest.events[0] == first.events[0]  # the start event, with its generation
    snapshot = rest.events[1]
    assert snapshot["type"] == "content" and WHOLE.startswith(snapshot["content"])
    assert len(snapshot["content"]) >= len(first.text())
    assert rest.text() == WHOLE  # the snapshot and the live events, never a text twice
    assert rest.events[-1]["type"] == "complete"


async def test_two_followers_and_the_client_get_the_same_reply(chat):
    chat.upstream.queue(Reply(tokens=TOKENS, delay=0.008))
    async with chat.open() as response:
        own = SSEStream(response)
        await own.until("content")
        tabs = [asyncio.create_task(follow(chat)) for _ in range(2)]
        await own.rest()
    followed = [await tab for tab in tabs]
    assert own.text() == WHOLE
    for stream in followed:
        assert stream.text() == WHOLE
        assert stream.events[-1] == own.events[-1]
        assert stream.ids[-1] == own.ids[-1]
    assert len(chat.upstream.requests) == 1


async def test_nothing_running_is_204_and_access_rules(chat):
    async with chat.api.client.get(path(chat), headers=chat.user.headers) as response:
        assert response.status == 204
    bob = await chat.api.register("bob")
    await chat.api.error("GET", path(chat), bob, 404, "Chat session not found")
    await chat.api.error("GET", path(chat), None, 401)
    await chat.api.error("GET", "/api/chat/sessions/999999/stream", chat.user, 404)
    await chat.api.error("GET", "/api/chat/sessions/x/stream", chat.user, 400, "session ID")
    for bad in ("-1", "1.5", "abc", "9" * 12):
        await chat.api.error("GET", path(chat) + f"?after={bad}", chat.user, 400, "after")


async def test_another_users_running_round_is_not_followable(chat):
    chat.upstream.queue(Reply(tokens=TOKENS, delay=0.008))
    bob = await chat.api.register("bob")
    async with chat.open() as response:
        own = SSEStream(response)
        await own.until("content")
        await chat.api.error("GET", path(chat), bob, 404, "Chat session not found")
        await own.rest()


class _Client:
    """A writer that keeps what it is sent (the catch-up's bounds need no network)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def write(self, data: bytes) -> bool:
        self.sent.append(data)
        return True


async def test_the_catch_up_log_is_bounded_but_keeps_the_ending():
    from aichat.chat.broadcast import MAX_KEPT_EVENTS, Broadcast
    broadcast = Broadcast(_Client())  # type: ignore[arg-type]
    await broadcast.send({"type": "start", "messageId": 1})
    for i in range(3 * MAX_KEPT_EVENTS):  # an upstream sending usage with every chunk
        await broadcast.text("content", f"t{i} ")
        await broadcast.send({"type": "usage", "usage": {"completion_tokens": i}})
    await broadcast.send({"type": "end"}, {"type": "complete", "assistantMessageId": 7})
    assert len(broadcast._kept) == MAX_KEPT_EVENTS + 2
    snapshot = broadcast.follow(_Client(), None)  # type: ignore[arg-type]
    assert snapshot.startswith(b"id: ") and b'"type":"start"' in snapshot
    assert snapshot.endswith(b'{"type":"complete","assistantMessageId":7}\n\n')
    assert "".join(f"t{i} " for i in range(3 * MAX_KEPT_EVENTS)).encode() in snapshot


async def test_the_followers_of_one_round_are_capped(chat):
    from aichat.chat.broadcast import MAX_FOLLOWERS
    chat.upstream.queue(Reply(tokens=["first ", "never"], stall_after=1))
    async with chat.open() as response:
        own = SSEStream(response)
        await own.until("content")
        tabs = []
        for _ in range(MAX_FOLLOWERS):  # each attached once its snapshot arrives
            tab = await chat.api.client.get(path(chat), headers=chat.user.headers).__aenter__()
            assert tab.status == 200
            await SSEStream(tab).until("content")
            tabs.append(tab)
        await chat.api.error("GET", path(chat), chat.user, 429,
                             f"At most {MAX_FOLLOWERS} clients may follow one reply")
        await chat.api.ok("POST", "/api/chat/stop", chat.user,
                          json={"sessionId": chat.session_id})
        for tab in tabs:
            rest = SSEStream(tab)
            await rest.rest()
            assert rest.events[-1]["type"] == "stop"
            tab.close()
        await own.rest()
