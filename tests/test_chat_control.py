"""Stop, client disconnect, busy sessions, the post-abort guard, regenerate and completion."""

from __future__ import annotations

import asyncio
import logging

import pytest

from .fake_upstream import Reply
from .helpers import SSEStream, assert_error

SLOW = dict(tokens=[f"w{i} " for i in range(200)], delay=0.02)


async def open_stream(chat, content: str = "Tell me a story", **kwargs):
    """Start a stream and return (context manager, response, reader) once content flows."""
    cm = chat.open(content, **kwargs)
    response = await cm.__aenter__()
    assert response.status == 200
    reader = SSEStream(response)
    await reader.until("content")
    return cm, response, reader


def running_round(chat):
    """The session's round as the app holds it, to await its end instead of polling."""
    from aichat.http.appkeys import registry_key
    return chat.api.client.app[registry_key].running(chat.session_id)


# --- stop ---

async def test_stop_endpoint_cancels_upstream_saves_partial_and_ends_stream(chat):
    chat.upstream.queue(Reply(**SLOW))
    cm, response, reader = await open_stream(chat)
    stopped = await chat.api.ok("POST", "/api/chat/stop", chat.user,
                                json={"sessionId": chat.session_id})
    assert stopped["stopped"] is True and isinstance(stopped["assistantMessageId"], int)
    events = await reader.rest()
    await cm.__aexit__(None, None, None)
    assert events[-1] == {"type": "stop", "reason": "cancelled",
                          "assistantMessageId": stopped["assistantMessageId"]}
    assert events[-2]["type"] == "usage" and "completion_tokens" in events[-2]["usage"]
    assert "complete" not in reader.types() and "end" not in reader.types()
    await asyncio.wait_for(chat.upstream.requests[0].disconnected.wait(), 1.0)
    reply = (await chat.messages())[-1]
    assert reply["id"] == stopped["assistantMessageId"] and reply["status"] == "stopped"
    assert reply["content"] == reader.text().strip() and reply["content"].startswith("w0")
    assert reply["usage"]["completion_tokens"] > 0
    assert len(await chat.rows("SELECT id FROM usage_metrics")) == 1


async def test_stop_with_nothing_running_and_ownership(chat):
    assert await chat.api.ok("POST", "/api/chat/stop", chat.user,
                             json={"sessionId": chat.session_id}) == {"stopped": False}
    bob = await chat.api.register("bob")
    await chat.api.error("POST", "/api/chat/stop", bob, 404, "Chat session not found",
                         json={"sessionId": chat.session_id})
    await chat.api.error("POST", "/api/chat/stop", None, 401, json={"sessionId": 1})
    for body in ({}, {"sessionId": "1"}, {"sessionId": 1.5}, {"sessionId": True}):
        await chat.api.error("POST", "/api/chat/stop", chat.user, 400, "sessionId", json=body)


async def test_stop_by_another_user_does_not_touch_the_round(chat):
    chat.upstream.queue(Reply(tokens=["a", "b", "c"], delay=0.05))
    bob = await chat.api.register("bob")
    cm, response, reader = await open_stream(chat)
    await chat.api.error("POST", "/api/chat/stop", bob, 404, json={"sessionId": chat.session_id})
    await reader.rest()
    await cm.__aexit__(None, None, None)
    assert reader.types()[-1] == "complete"


async def on_disconnect(chat, value: str) -> None:
    await chat.api.ok("PUT", "/api/settings/system", chat.api.users["admin"],
                      json={"on_disconnect": value})


async def test_a_round_outlives_its_client_and_is_saved_whole(chat):
    tokens = [f"w{i} " for i in range(40)]
    chat.upstream.queue(Reply(tokens=tokens, delay=0.01))
    cm, response, reader = await open_stream(chat)
    round_ = running_round(chat)
    response.close()  # a reload, a tunnel: the client is gone, nobody pressed stop
    await cm.__aexit__(None, None, None)
    await asyncio.wait_for(round_.done.wait(), 5)
    assert round_.detached and round_.cancel_reason is None
    assert await chat.rows("SELECT content, status FROM messages WHERE role = 'assistant'") == [
        ("".join(tokens).strip(), "complete")]
    [(completion,)] = await chat.rows("SELECT completion_tokens FROM usage_metrics")
    assert completion > 0


async def test_with_on_disconnect_stop_a_client_disconnect_stops_upstream_and_saves_partial(
        chat):
    await on_disconnect(chat, "stop")
    chat.upstream.queue(Reply(tokens=["one ", "two ", "three "], stall_after=2))
    cm, response, reader = await open_stream(chat)
    await reader.until("content")
    round_ = running_round(chat)
    response.close()  # the front end's stop button: abort the fetch while the upstream is silent
    await cm.__aexit__(None, None, None)
    await asyncio.wait_for(chat.upstream.requests[0].disconnected.wait(), 1.5)
    await asyncio.wait_for(round_.done.wait(), 5)
    assert await chat.rows("SELECT content, status FROM messages WHERE role = 'assistant'") == [
        ("one two", "stopped")]
    assert len(await chat.rows("SELECT id FROM usage_metrics")) == 1


async def test_a_new_round_on_a_busy_session_stops_the_running_one(chat):
    chat.upstream.queue(Reply(**SLOW), Reply(tokens=["second"]))
    cm, response, first = await open_stream(chat, "first question")
    second = await chat.stream("second question")
    assert second.types()[-1] == "complete" and second.text() == "second"
    events = await first.rest()
    await cm.__aexit__(None, None, None)
    assert events[-1]["type"] == "stop" and events[-1]["reason"] == "cancelled"
    rows = await chat.rows("SELECT role, content, status FROM messages ORDER BY id")
    assert [(r[0], r[2]) for r in rows] == [("user", "complete"), ("assistant", "stopped"),
                                            ("user", "complete"), ("assistant", "complete")]
    # The second round's context holds the first exchange, partial reply included.
    sent = chat.upstream.requests[1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]


# --- the post-abort guard ---

async def test_abort_then_completion_with_same_content_returns_the_partial(chat):
    chat.upstream.queue(Reply(tokens=["alpha ", "beta ", "gamma"], stall_after=2))
    cm, response, reader = await open_stream(chat, "Explain")
    await reader.until("content")
    response.close()
    await cm.__aexit__(None, None, None)
    data = await chat.api.ok("POST", "/api/chat/completion", chat.user,
                             json={"sessionId": chat.session_id, "content": "Explain"})
    assert data["content"] == "alpha beta"
    assert data["assistantMessage"]["status"] == "stopped"
    assert data["assistantMessage"]["content"] == "alpha beta"
    # The round outlived its client until the re-send stopped it: upstream cancelled too.
    await asyncio.wait_for(chat.upstream.requests[0].disconnected.wait(), 2)
    assert data["userMessageId"] == reader.events[0]["messageId"]
    assert data["usage"]["completion_tokens"] > 0 and "context_limit" in data["usage"]
    assert len(chat.upstream.requests) == 1  # no new upstream call
    assert len(await chat.messages()) == 2  # nothing new stored
    # Once per round: the same request again is a real completion.
    chat.upstream.queue(Reply(tokens=["fresh answer"]))
    again = await chat.api.ok("POST", "/api/chat/completion", chat.user,
                              json={"sessionId": chat.session_id, "content": "Explain"})
    assert again["content"] == "fresh answer" and len(chat.upstream.requests) == 2
    assert len(await chat.messages()) == 4


async def test_guard_cancels_a_round_still_running_and_ignores_other_content(chat):
    chat.upstream.queue(Reply(**SLOW))
    cm, response, reader = await open_stream(chat, "Long one")
    data = await chat.api.ok("POST", "/api/chat/completion", chat.user,
                             json={"sessionId": chat.session_id, "content": "Long one"})
    assert data["content"].startswith("w0") and data["assistantMessage"]["status"] == "stopped"
    await reader.rest()
    await cm.__aexit__(None, None, None)
    assert reader.types()[-1] == "stop"
    assert len(chat.upstream.requests) == 1


async def test_guard_does_not_apply_to_a_different_message_or_a_completed_round(chat):
    await chat.stream("Question A")
    chat.upstream.queue(Reply(tokens=["B answer"]))
    data = await chat.api.ok("POST", "/api/chat/completion", chat.user,
                             json={"sessionId": chat.session_id, "content": "Question A"})
    assert data["content"] == "B answer" and len(chat.upstream.requests) == 2


# --- completion ---

async def test_completion_returns_the_stored_reply_and_usage(chat):
    chat.upstream.queue(Reply(content="A full answer.",
                              usage={"prompt_tokens": 9, "completion_tokens": 3,
                                     "total_tokens": 12}))
    data = await chat.api.ok("POST", "/api/chat/completion", chat.user,
                             json={"sessionId": chat.session_id, "content": "Question?"})
    assert data["content"] == "A full answer."
    assert data["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
                             "context_limit": 4000, "context_remaining": 3991}
    message = data["assistantMessage"]
    assert message["role"] == "assistant" and message["status"] == "complete"
    assert message["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    assert chat.upstream.requests[0].body["stream"] is False
    stored = await chat.messages()
    assert [m["id"] for m in stored] == [data["userMessageId"], message["id"]]


async def test_completion_upstream_failure_is_502_and_keeps_the_user_message(chat):
    chat.upstream.queue(Reply(status=503), Reply(status=503))
    await chat.api.error("POST", "/api/chat/completion", chat.user, 502,
                         "AI API request failed: 503",
                         json={"sessionId": chat.session_id, "content": "Q"})
    assert len(chat.upstream.requests) == 2  # one retry
    assert [m["role"] for m in await chat.messages()] == ["user"]


async def test_completion_timeout_is_504(chat_factory):
    chat = await chat_factory(provider_timeout_ms=300)
    chat.upstream.queue(Reply(headers_delay=5))
    await chat.api.error("POST", "/api/chat/completion", chat.user, 504, "timed out",
                         json={"sessionId": chat.session_id, "content": "Q"})


async def test_completion_validation_and_ownership(chat):
    bob = await chat.api.register("bob")
    body = {"sessionId": chat.session_id, "content": "hi"}
    await chat.api.error("POST", "/api/chat/completion", None, 401, json=body)
    await chat.api.error("POST", "/api/chat/completion", bob, 404, "Chat session not found",
                         json=body)
    await chat.api.error("POST", "/api/chat/completion", chat.user, 400, "content",
                         json={"sessionId": chat.session_id, "content": "   "})
    assert await chat.rows("SELECT id FROM messages") == [] and chat.upstream.requests == []


# --- regenerate ---

async def test_regenerate_streams_a_new_reply_and_replaces_the_old(chat):
    chat.upstream.queue(Reply(tokens=["first reply"]), Reply(tokens=["better reply"]))
    await chat.stream("Question")
    old = await chat.messages()
    async with chat.open(path="/api/chat/regenerate",
                         body={"sessionId": chat.session_id,
                               "messageId": old[1]["id"]}) as response:
        reader = SSEStream(response)
        await reader.rest()
    assert reader.types()[0] == "start" and reader.events[0]["messageId"] == old[0]["id"]
    assert reader.types()[-1] == "complete" and reader.text() == "better reply"
    now = await chat.messages()
    assert [(m["role"], m["content"]) for m in now] == [("user", "Question"),
                                                        ("assistant", "better reply")]
    assert now[0]["id"] == old[0]["id"]
    sent = chat.upstream.requests[1].body["messages"]
    assert sent == [{"role": "user", "content": [{"type": "text", "text": "Question"}]}]
    # Both rounds' usage rows remain; the old one is unlinked.
    assert len(await chat.rows("SELECT id FROM usage_metrics")) == 2
    assert len(await chat.rows("SELECT id FROM usage_metrics WHERE message_id IS NULL")) == 1


async def test_failed_regenerate_keeps_the_old_reply(chat):
    chat.upstream.queue(Reply(tokens=["keep me"]))
    await chat.stream("Question")
    chat.upstream.queue(*[Reply(status=500)] * 3)
    async with chat.open(path="/api/chat/regenerate",
                         body={"sessionId": chat.session_id}) as response:
        reader = SSEStream(response)
        await reader.rest()
    assert reader.types()[-1] == "error"
    assert [m["content"] for m in await chat.messages()] == ["Question", "keep me"]


async def test_regenerate_errors(chat):
    api, alice = chat.api, chat.user
    await api.error("POST", "/api/chat/regenerate", alice, 400, "Nothing to regenerate",
                    json={"sessionId": chat.session_id})
    chat.upstream.queue(Reply(tokens=["r1"]), Reply(tokens=["r2"]))
    await chat.stream("q1")
    await chat.stream("q2")
    msgs = await chat.messages()
    bob = await api.register("bob")
    await api.error("POST", "/api/chat/regenerate", bob, 404, "Chat session not found",
                    json={"sessionId": chat.session_id})
    await api.error("POST", "/api/chat/regenerate", alice, 404, "Message not found",
                    json={"sessionId": chat.session_id, "messageId": msgs[0]["id"]})
    await api.error("POST", "/api/chat/regenerate", alice, 404, "Message not found",
                    json={"sessionId": chat.session_id, "messageId": 99999})
    await api.error("POST", "/api/chat/regenerate", alice, 400,
                    "Only the latest reply can be regenerated",
                    json={"sessionId": chat.session_id, "messageId": msgs[1]["id"]})
    await api.error("POST", "/api/chat/regenerate", alice, 400, "messageId",
                    json={"sessionId": chat.session_id, "messageId": "3"})
    await api.error("POST", "/api/chat/regenerate", None, 401,
                    json={"sessionId": chat.session_id})
    assert len(chat.upstream.requests) == 2


# --- deletes during a round, and abnormal ends ---

async def test_deleting_the_session_mid_stream_saves_nothing(chat):
    chat.upstream.queue(Reply(**SLOW))
    cm, response, reader = await open_stream(chat)
    await chat.api.ok("DELETE", f"/api/sessions/{chat.session_id}", chat.user)
    events = await reader.rest()
    await cm.__aexit__(None, None, None)
    assert events[-1]["type"] == "stop"
    assert await chat.rows("SELECT id FROM messages") == []
    assert await chat.rows("SELECT id FROM usage_metrics") == []


async def test_a_key_that_does_not_decrypt_fails_the_round_cleanly(chat):
    other = await chat.api.ok("POST", "/api/models", chat.user, json={
        "name": "other", "apiUrl": chat.upstream.url, "apiKey": "sk-other"})
    [(key,)] = await chat.rows("SELECT api_key FROM model_configs WHERE id = ?", (other["id"],))
    assert await chat.api.execute("UPDATE model_configs SET api_key = ? WHERE id = ?",
                                  (key, chat.model["id"])) == 1
    reader = await chat.stream("hello")
    assert reader.types()[-1] == "error" and "decrypt" in reader.events[-1]["error"]
    assert chat.upstream.requests == []


async def test_twenty_aborted_streams_leave_the_server_healthy(chat, caplog):
    caplog.set_level(logging.WARNING)
    scripts = [Reply(**SLOW), Reply(headers_delay=2), Reply(tokens=["x"], stall_after=1),
               Reply(tokens=["y"] * 50, delay=0.01, drop_after=5)]
    for i in range(20):
        chat.upstream.queue(scripts[i % len(scripts)])
        cm = chat.open(f"message {i}")
        response = await cm.__aenter__()
        reader = SSEStream(response)
        await reader.next()  # at least the start event: abort at varying phases
        if i % 2:
            await reader.next()
        response.close()
        await cm.__aexit__(None, None, None)
    # The last aborted round may still be saving; a new round waits for it (busy session).
    chat.upstream.queue(Reply(tokens=["still ", "alive"]))
    final = await chat.stream("are you there?")
    assert final.types()[-1] == "complete" and final.text() == "still alive"
    assert (await chat.api.ok("GET", "/api/health"))["status"] == "healthy"
    await asyncio.sleep(0)
    bad = [r for r in caplog.records if "exception was never retrieved" in r.getMessage()
           or r.levelno >= logging.ERROR]
    assert bad == [], [r.getMessage() for r in bad]


async def test_error_envelope_on_stream_validation(chat):
    status, body = await chat.api.call("POST", "/api/chat/stream", chat.user,
                                       json={"sessionId": 0, "content": "x"})
    assert_error(status, body, 400, "sessionId")


@pytest.mark.parametrize("path", ["/api/chat/stream", "/api/chat/completion",
                                  "/api/chat/regenerate", "/api/chat/stop"])
async def test_chat_routes_need_a_token(chat, path):
    await chat.api.error("POST", path, None, 401, "Missing or invalid authorization header",
                         json={"sessionId": chat.session_id, "content": "x"})
