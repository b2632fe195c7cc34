"""The history while a reply is generated (docs/api.md §5.9): the reply is listed as it
streams, `streaming` with its text so far, and the same message id holds how it ended."""

from __future__ import annotations

from .fake_upstream import Reply
from .helpers import SSEStream

TOKENS = [f"w{i} " for i in range(60)]
WHOLE = "".join(TOKENS)


def assistant(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["role"] == "assistant"]


async def test_a_streaming_reply_is_listed_with_its_text_and_keeps_its_id(chat):
    chat.upstream.queue(Reply(tokens=TOKENS, delay=0.008))
    async with chat.open("tell me") as response:
        stream = SSEStream(response)
        while len(stream.text()) < 20:
            await stream.until("content")
        listed = await chat.messages()
        assert [m["role"] for m in listed] == ["user", "assistant"]
        live = listed[1]
        assert live["status"] == "streaming" and live["usage"] is None
        # At least what this client has read, and nothing the upstream did not send.
        assert live["content"].startswith(stream.text().strip())
        assert WHOLE.startswith(live["content"])
        whole = await chat.api.ok("GET", f"/api/sessions/{chat.session_id}", chat.user)
        assert whole["messages"][1]["status"] == "streaming"
        assert WHOLE.startswith(whole["messages"][1]["content"])
        await stream.rest()
    assert stream.events[-1]["assistantMessageId"] == live["id"]
    [done] = assistant(await chat.messages())
    assert (done["id"], done["status"], done["content"]) == (live["id"], "complete",
                                                              WHOLE.strip())
    assert done["usage"]["completion_tokens"] > 0


async def test_a_stopped_reply_is_the_same_one_message(chat):
    chat.upstream.queue(Reply(tokens=TOKENS, stall_after=5))
    async with chat.open() as response:
        stream = SSEStream(response)
        while stream.text().count("w") < 5:
            await stream.until("content")
        [live] = assistant(await chat.messages())
        stopped = await chat.api.ok("POST", "/api/chat/stop", chat.user,
                                    json={"sessionId": chat.session_id})
        await stream.rest()
    assert stopped["assistantMessageId"] == live["id"]
    [kept] = assistant(await chat.messages())
    assert (kept["id"], kept["status"], kept["content"]) == (
        live["id"], "stopped", "".join(TOKENS[:5]).strip())


async def test_a_reply_that_ends_without_text_leaves_no_message(chat):
    chat.upstream.queue(Reply(status=500), Reply(status=500), Reply(status=500),
                        Reply(status=500))
    stream = await chat.stream()
    assert stream.events[-1]["type"] == "error"
    assert stream.events[-1]["assistantMessageId"] is None
    assert [m["role"] for m in await chat.messages()] == ["user"]
    assert await chat.rows("SELECT id FROM messages WHERE status = 'streaming'") == []


async def test_a_regenerated_reply_streams_beside_the_one_it_replaces(chat):
    await chat.stream("question")
    [old] = assistant(await chat.messages())
    chat.upstream.queue(Reply(tokens=TOKENS, delay=0.008))
    async with chat.open(path="/api/chat/regenerate",
                         body={"sessionId": chat.session_id, "messageId": old["id"]}) as r:
        stream = SSEStream(r)
        await stream.until("content")
        during = assistant(await chat.messages())
        assert [(m["id"], m["status"]) for m in during] == [
            (old["id"], "complete"), (during[1]["id"], "streaming")]
        await stream.rest()
    [new] = assistant(await chat.messages())
    assert (new["id"], new["status"], new["content"]) == (during[1]["id"], "complete",
                                                           WHOLE.strip())


async def test_a_new_message_ends_the_streaming_reply_before_its_own(chat):
    chat.upstream.queue(Reply(tokens=TOKENS, stall_after=3), Reply(tokens=["fine"]))
    async with chat.open("first") as response:
        stream = SSEStream(response)
        while stream.text().count("w") < 3:
            await stream.until("content")
        second = await chat.stream("second")
        await stream.rest()
    assert second.events[-1]["type"] == "complete"
    listed = await chat.messages()
    assert [(m["role"], m["status"], m["content"]) for m in listed] == [
        ("user", "complete", "first"), ("assistant", "stopped", "".join(TOKENS[:3]).strip()),
        ("user", "complete", "second"), ("assistant", "complete", "fine")]
