"""POST /api/chat/stream against the scripted fake upstream (docs/api.md §5.1-5.8, and the
§2 settings)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import pytest
from aiohttp import web

from .fake_upstream import Reply
from .helpers import SSEStream

KEY = "sk-alice-SECRET-0001"
FAILED = "AI API request failed: "


# --- helpers ---

def tokens(text: str) -> int:
    """docs/api.md §5.3 heuristic (the test config uses TOKENIZER_MODE=heuristic)."""
    non_ascii = sum(1 for ch in text if ord(ch) > 127)
    return math.ceil((len(text) - non_ascii) / 4) + non_ascii


def cost(role: str, content: str) -> int:
    return 4 + tokens(content) + tokens(role)


def is_terminal(event: dict) -> bool:
    return event["type"] in ("complete", "error") or (
        event["type"] == "stop" and event.get("reason") == "cancelled")


def check_stream(stream: SSEStream) -> dict:
    """Shape rules every stream obeys; returns the terminal event."""
    events = stream.events
    assert events and events[0]["type"] == "start", events
    terminals = [e for e in events if is_terminal(e)]
    assert len(terminals) == 1, events
    assert is_terminal(events[-1]), events
    for block in stream.raw:
        assert b"[DONE]" not in block, block
        if block != b": ping\n\n":
            assert block.startswith(b"data: ") and block.endswith(b"\n\n"), block
            assert b"\n" not in block[:-2] and b"\r" not in block, block
    for e in events:
        if e["type"] in ("content", "reasoning"):
            assert isinstance(e["content"], str) and e["content"], e
    return events[-1]


def usages(stream: SSEStream) -> list[dict]:
    return [e["usage"] for e in stream.events if e["type"] == "usage"]


async def stream_of(chat, content: str = "Hi there", **kwargs: Any) -> SSEStream:
    stream = await chat.stream(content, **kwargs)
    check_stream(stream)
    return stream


async def message_rows(chat, session_id: int | None = None) -> list[tuple]:
    return await chat.rows("SELECT id, role, content, status, reasoning FROM messages"
                           " WHERE session_id = ? ORDER BY id", (session_id or chat.session_id,))


async def usage_rows(chat, session_id: int | None = None) -> list[tuple]:
    return await chat.rows("SELECT message_id, model, provider, prompt_tokens, completion_tokens,"
                           " total_tokens, context_limit FROM usage_metrics WHERE session_id = ?"
                           " ORDER BY id", (session_id or chat.session_id,))


async def assert_nothing_saved_but_the_user_message(chat, content: str = "Hi there") -> None:
    rows = await message_rows(chat)
    assert [(r[1], r[2]) for r in rows] == [("user", content)], rows


async def set_system(chat, **values: Any) -> None:
    await chat.api.ok("PUT", "/api/settings/system", chat.api.users["admin"], json=values)


async def second_session(chat, name: str, api_url: str, *, images: bool = True) -> int:
    model = await chat.api.ok("POST", "/api/models", chat.user, json={
        "name": name, "apiUrl": api_url, "apiKey": KEY, "supportsImages": images})
    session = await chat.api.ok("POST", "/api/sessions", chat.user,
                                json={"modelConfigId": model["id"], "title": name})
    return session["id"]


# --- 1. a normal reply ---

async def test_normal_reply_events_headers_and_storage(chat):
    async with chat.open("Hi there") as response:
        assert response.status == 200
        headers = response.headers
        assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert headers["Cache-Control"] == "no-cache, no-transform"
        assert headers["X-Accel-Buffering"] == "no"
        assert "Content-Encoding" not in headers
        assert "Content-Length" not in headers
        stream = SSEStream(response)
        done = await stream.until("complete")
        # Reply and usage row are committed before the terminal event goes out.
        assert (await message_rows(chat))[-1][:4] == (
            done["assistantMessageId"], "assistant", "Hello, world!", "complete")
        assert (await usage_rows(chat))[0][0] == done["assistantMessageId"]
        await stream.rest()
    terminal = check_stream(stream)
    assert stream.types() == ["start", "usage", "content", "content", "content", "content",
                              "stop", "end", "usage", "complete"]
    assert stream.text() == "Hello, world!"
    assert stream.events[6] == {"type": "stop", "reason": "stop"}

    prompt = 3 + cost("user", "Hi there")
    first, last = usages(stream)
    assert first == {"prompt_tokens": prompt, "total_tokens": prompt, "context_limit": 4000,
                     "context_remaining": 4000 - prompt}
    completion = tokens("Hello, world!")
    assert last == {"prompt_tokens": prompt, "completion_tokens": completion,
                    "total_tokens": prompt + completion, "context_limit": 4000,
                    "context_remaining": 4000 - prompt}

    messages = await chat.messages()
    assert [m["role"] for m in messages] == ["user", "assistant"]
    user, reply = messages
    generation = stream.events[0]["generationId"]
    assert stream.events[0] == {"type": "start", "messageId": user["id"],
                                "generationId": generation}
    # Every event is numbered within its round: <generationId>:1, :2, ... (docs/api.md §5.9).
    assert stream.ids == [f"{generation}:{n}" for n in range(1, len(stream.events) + 1)]
    assert user["content"] == "Hi there" and user["status"] == "complete"
    assert terminal == {"type": "complete", "assistantMessageId": reply["id"]}
    assert reply["content"] == "Hello, world!" and reply["status"] == "complete"
    assert reply["reasoning"] is None
    assert reply["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion}
    assert await usage_rows(chat) == [(reply["id"], "fake-model", "127.0.0.1", prompt,
                                       completion, prompt + completion, 4000)]


async def test_events_are_compact_one_line_json(chat):
    chat.upstream.queue(Reply(tokens=['He said "hi"\n', "and\tleft", " — 完了"]))
    stream = await stream_of(chat)
    for block, event in zip([b for b in stream.raw if b != b": ping\n\n"], stream.events,
                            strict=True):
        body = block[len(b"data: "):-2].decode()
        assert body in (json.dumps(event, separators=(",", ":"), ensure_ascii=False),
                        json.dumps(event, separators=(",", ":")))
    assert stream.text() == 'He said "hi"\nand\tleft — 完了'
    assert (await chat.messages())[1]["content"] == 'He said "hi"\nand\tleft — 完了'


async def test_stored_text_is_trimmed_and_other_finish_reasons_are_informational(chat):
    chat.upstream.queue(Reply(tokens=["\n  ", "Trim me", "  \n"], finish_reason="length"))
    stream = await stream_of(chat)
    assert {"type": "stop", "reason": "length"} in stream.events
    assert stream.types()[-3:] == ["end", "usage", "complete"]
    assert (await chat.messages())[1]["content"] == "Trim me"


# --- 2. the upstream request ---

async def test_upstream_request_url_headers_and_body(chat):
    await stream_of(chat, "first")
    await stream_of(chat, "first")  # same text again: the earlier one stays in the history
    first, second = chat.upstream.requests
    headers = {k.lower(): v for k, v in second.headers.items()}
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["content-type"].split(";")[0].strip() == "application/json"
    assert first.body == {"model": "fake-model", "stream": True, "temperature": 0.7,
                          "messages": [{"role": "user",
                                        "content": [{"type": "text", "text": "first"}]}]}
    assert second.body == {"model": "fake-model", "stream": True, "temperature": 0.7,
                           "messages": [
                               {"role": "user", "content": "first"},
                               {"role": "assistant", "content": "Hello, world!"},
                               {"role": "user",
                                "content": [{"type": "text", "text": "first"}]}]}


async def test_upstream_url_is_used_exactly_as_stored(chat, aiohttp_server):
    seen: list[str] = []

    async def anywhere(request: web.Request) -> web.Response:
        seen.append(request.method + " " + request.path_qs)
        body = ('data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n'
                "data: [DONE]\n\n")
        return web.Response(text=body, content_type="text/event-stream")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anywhere)
    server = await aiohttp_server(app)
    url = str(server.make_url("/openai/deployments/x/chat/completions?api-version=2024-02"))
    session_id = await second_session(chat, "custom-url", url)
    stream = await stream_of(chat, session_id=session_id)
    assert stream.text() == "ok"
    assert seen == ["POST /openai/deployments/x/chat/completions?api-version=2024-02"]


# --- 3. heartbeats ---

async def test_heartbeats_before_upstream_headers_and_between_tokens(chat_factory):
    chat = await chat_factory(sse_heartbeat_interval_ms=50)
    chat.upstream.queue(Reply(headers_delay=0.4, tokens=["a", "b", "c", "d", "e", "f"],
                              delay=0.12))
    async with chat.open() as response:
        assert response.status == 200
        stream = SSEStream(response)
        await stream.until("usage")
        first = await stream.next()
        assert first == {"type": "content", "content": "a"}
        # Headers and the first token came together after 0.4 s: these pings came before.
        before_headers = stream.pings
        assert before_headers >= 3, before_headers
        await stream.rest()
    check_stream(stream)
    assert stream.pings >= before_headers + 3, stream.pings
    assert stream.text() == "abcdef"
    assert stream.types()[-3:] == ["end", "usage", "complete"]


async def test_each_event_and_ping_arrives_whole(chat_factory):
    """One write per event: every network read ends on a block boundary (docs/api.md §5.8)."""
    chat = await chat_factory(sse_heartbeat_interval_ms=50)
    chat.upstream.queue(Reply(headers_delay=0.2, tokens=[f"t{i} " for i in range(12)],
                              delay=0.03))
    reads: list[bytes] = []
    async with chat.open() as response:
        async with asyncio.timeout(10):
            async for piece in response.content.iter_any():
                reads.append(piece)
    for piece in reads:
        assert piece.endswith(b"\n\n"), piece
        assert piece.startswith((b"id: ", b": ping\n\n")), piece
    blocks = [b.partition(b"\n")[2] + b"\n\n" if b.startswith(b"id: ") else b + b"\n\n"
              for b in b"".join(reads).split(b"\n\n")[:-1]]
    pings = [b for b in blocks if b == b": ping\n\n"]
    events = [json.loads(b[6:]) for b in blocks if b != b": ping\n\n"]
    assert len(pings) >= 3
    assert all(b.startswith(b"data: ") for b in blocks if b != b": ping\n\n")
    assert "".join(e["content"] for e in events if e["type"] == "content") == "".join(
        f"t{i} " for i in range(12))
    assert events[-1]["type"] == "complete"


async def test_heartbeats_during_retry_wait(chat_factory):
    chat = await chat_factory(sse_heartbeat_interval_ms=50, provider_retry_wait_ms=400)
    chat.upstream.queue(Reply(status=500), Reply())
    async with chat.open() as response:
        stream = SSEStream(response)
        await stream.until("content")
        assert stream.pings >= 4, stream.pings
        await stream.rest()
    check_stream(stream)
    assert stream.text() == "Hello, world!"


# --- 4. parsing robustness ---

@pytest.mark.parametrize("reply", [
    Reply(split=1), Reply(crlf=True), Reply(no_space=True), Reply(junk=True),
    Reply(crlf=True, no_space=True, split=3), Reply(done=False),
], ids=["split1", "crlf", "no_space", "junk", "crlf_nospace_split3", "eof_without_done"])
async def test_upstream_framing_variants(chat, reply):
    chat.upstream.queue(reply)
    stream = await stream_of(chat)
    assert stream.text() == "Hello, world!"
    assert stream.types()[-3:] == ["end", "usage", "complete"]
    assert stream.types().count("content") == 4
    reply_row = (await message_rows(chat))[1]
    assert reply_row[1:4] == ("assistant", "Hello, world!", "complete")
    assert len(chat.upstream.requests) == 1


def chunk(content: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "delta": {"content": content},
                                    "finish_reason": None}]}).encode()


async def test_comments_fields_blank_lines_and_text_after_done(chat):
    body = (b": this is a comment\n\n"
            b"event: message\nid: 1\nretry: 500\ndata: " + chunk("Hel") + b"\n\n"
            b"\n\n\n"
            b":another comment\n"
            b"data: " + chunk("lo") + b"\n\n"
            b"data: [DONE]\n\n"
            b"data: " + chunk(" IGNORED") + b"\n\n")
    chat.upstream.queue(Reply(raw_body=body))
    stream = await stream_of(chat)
    assert stream.text() == "Hello"
    assert "end" in stream.types() and stream.types()[-1] == "complete"
    assert (await chat.messages())[1]["content"] == "Hello"
    assert len(chat.upstream.requests) == 1


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_is_relayed_and_stored_apart(chat, field):
    chat.upstream.queue(Reply(reasoning=["Let me ", "think."], reasoning_field=field))
    stream = await stream_of(chat)
    reasoning = [e for e in stream.events if e["type"] == "reasoning"]
    assert [e["content"] for e in reasoning] == ["Let me ", "think."]
    assert stream.types().index("reasoning") < stream.types().index("content")
    assert stream.text() == "Hello, world!"
    reply = (await chat.messages())[1]
    assert reply["content"] == "Hello, world!"
    assert reply["reasoning"] == "Let me think."
    assert "think" not in reply["content"]


@pytest.mark.parametrize("reported, stored", [
    ({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
      "prompt_tokens_details": {"cached_tokens": 2}}, (11, 7, 18)),
    ({"prompt_tokens": 11, "completion_tokens": 7}, (11, 7, 18)),
    ({"prompt_eval_count": 12, "eval_count": 5}, (12, 5, 17)),
    ({"input_tokens": 9, "output_tokens": 3}, (9, 3, 12)),
], ids=["openai", "openai_no_total", "ollama", "anthropic"])
async def test_provider_usage_forwarded_as_received_and_stored(chat, reported, stored):
    chat.upstream.queue(Reply(usage=reported))
    stream = await stream_of(chat)
    events = usages(stream)
    assert len(events) == 3, events
    assert events[1] == reported  # as received, between the content and `end`
    types = stream.types()
    usage_positions = [i for i, t in enumerate(types) if t == "usage"]
    assert usage_positions[1] < types.index("end") < usage_positions[2]
    prompt, completion, total = stored
    assert events[2] == {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": total, "context_limit": 4000,
                         "context_remaining": 4000 - prompt}
    reply = (await chat.messages())[1]
    assert reply["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": total}
    assert (await usage_rows(chat))[0][3:6] == stored


# --- 5. retries and the fallback ---

async def test_429_with_retry_after_zero_retries_once(chat_factory):
    chat = await chat_factory(provider_rate_limit_wait_ms=3000)
    chat.upstream.queue(Reply(status=429, retry_after="0"), Reply())
    stream = await stream_of(chat)
    assert stream.text() == "Hello, world!"
    assert stream.types().count("content") == 4
    assert stream.types()[-3:] == ["end", "usage", "complete"]
    first, second = chat.upstream.requests
    assert first.stream and second.stream and second.body == first.body
    assert second.started - first.started < 1.5  # Retry-After: 0, not the 3 s default
    assert (await message_rows(chat))[1][2:4] == ("Hello, world!", "complete")


async def test_429_without_retry_after_waits_the_rate_limit_wait(chat_factory):
    chat = await chat_factory(provider_rate_limit_wait_ms=300, provider_retry_wait_ms=10)
    chat.upstream.queue(Reply(status=429), Reply())
    stream = await stream_of(chat)
    assert stream.text() == "Hello, world!"
    first, second = chat.upstream.requests
    assert second.stream
    assert second.started - first.started >= 0.28


async def test_500_then_success_retries_after_the_retry_wait(chat_factory):
    chat = await chat_factory(provider_retry_wait_ms=200)
    chat.upstream.queue(Reply(status=500), Reply(tokens=["Second ", "try"]))
    stream = await stream_of(chat)
    assert stream.text() == "Second try"
    assert stream.types()[-3:] == ["end", "usage", "complete"]
    first, second = chat.upstream.requests
    assert second.stream and second.started - first.started >= 0.18
    assert [r[2:4] for r in await message_rows(chat)] == [("Hi there", "complete"),
                                                           ("Second try", "complete")]


@pytest.mark.parametrize("first, second", [(500, 500), (429, 503), (502, 429)])
async def test_second_failure_goes_to_the_non_streaming_fallback(chat, first, second):
    chat.upstream.queue(Reply(status=first, retry_after="0"),
                        Reply(status=second, retry_after="0"),
                        Reply(content="Rescued by the fallback"))
    stream = await stream_of(chat)
    requests = chat.upstream.requests
    assert len(requests) == 3
    assert [r.stream for r in requests] == [True, True, False]
    assert requests[2].body == {**requests[0].body, "stream": False}
    assert stream.text() == "Rescued by the fallback"
    assert "end" not in stream.types()
    assert stream.types()[-2:] == ["usage", "complete"]
    reply = (await chat.messages())[1]
    assert reply["content"] == "Rescued by the fallback" and reply["status"] == "complete"
    assert stream.events[-1] == {"type": "complete", "assistantMessageId": reply["id"]}
    assert reply["usage"] is not None


async def test_fallback_stores_provider_usage_of_the_non_streamed_answer(chat):
    chat.upstream.queue(Reply(status=500), Reply(status=500),
                        Reply(content="Fallback", usage={"prompt_tokens": 21,
                                                         "completion_tokens": 4,
                                                         "total_tokens": 25}))
    stream = await stream_of(chat)
    assert stream.text() == "Fallback"
    assert usages(stream)[-1]["prompt_tokens"] == 21
    assert (await usage_rows(chat))[0][3:6] == (21, 4, 25)


async def test_400_is_final_but_the_fallback_is_tried_once(chat):
    chat.upstream.queue(Reply(status=400), Reply(content="Plain answer"))
    stream = await stream_of(chat)
    assert [r.stream for r in chat.upstream.requests] == [True, False]
    assert stream.text() == "Plain answer"
    assert "end" not in stream.types() and stream.types()[-1] == "complete"
    assert (await message_rows(chat))[1][2:4] == ("Plain answer", "complete")


async def test_400_everywhere_gives_one_error_without_retry(chat):
    chat.upstream.default = Reply(status=400, error_body='{"error":"bad request body"}')
    stream = await stream_of(chat)
    assert [r.stream for r in chat.upstream.requests] == [True, False]
    terminal = stream.events[-1]
    assert terminal["type"] == "error" and terminal["assistantMessageId"] is None
    assert terminal["error"].startswith(FAILED + "400"), terminal
    assert "bad request body" in terminal["error"]


@pytest.mark.parametrize("status", [500, 503])
async def test_every_upstream_path_failing_ends_with_one_error(chat, status):
    chat.upstream.default = Reply(status=status)
    stream = await stream_of(chat)
    assert [r.stream for r in chat.upstream.requests] == [True, True, False]
    assert stream.types().count("error") == 1
    terminal = stream.events[-1]
    assert terminal["type"] == "error" and terminal["assistantMessageId"] is None
    assert terminal["error"].startswith(f"{FAILED}{status}"), terminal
    assert "content" not in stream.types() and "end" not in stream.types()
    await assert_nothing_saved_but_the_user_message(chat)
    rows = await usage_rows(chat)
    prompt = 3 + cost("user", "Hi there")
    assert rows == [(None, "fake-model", "127.0.0.1", prompt, 0, prompt, 4000)]
    assert usages(stream)[-1]["prompt_tokens"] == prompt


async def test_upstream_error_text_is_cut_to_200_chars(chat):
    chat.upstream.default = Reply(status=500, error_body="E" * 5000)
    stream = await stream_of(chat)
    error = stream.events[-1]["error"]
    assert error.startswith(FAILED + "500")
    assert "E" * 50 in error
    assert len(error) <= len(FAILED + "500 ") + 200, len(error)


@pytest.mark.parametrize("error_body", [
    '{"error":"bad key sk-alice-SECRET-0001"}',
    '{"error":"' + "x" * 190 + ' sk-alice-SECRET-0001 is invalid"}',
], ids=["short", "key_across_the_cut"])
async def test_upstream_echo_of_the_key_is_redacted(chat, error_body):
    chat.upstream.default = Reply(status=401, error_body=error_body)
    stream = await stream_of(chat)
    assert [r.stream for r in chat.upstream.requests] == [True, False]  # 401 is final
    error = stream.events[-1]["error"]
    assert stream.events[-1]["type"] == "error"
    assert error.startswith(FAILED + "401"), error
    assert "SECRET" not in error and "sk-alice" not in error, error
    await assert_nothing_saved_but_the_user_message(chat)


async def test_connection_refused_is_an_error_not_a_crash(chat):
    session_id = await second_session(chat, "dead-model", "http://127.0.0.1:1/v1/chat/completions")
    stream = await stream_of(chat, session_id=session_id)
    terminal = stream.events[-1]
    assert terminal["type"] == "error" and terminal["assistantMessageId"] is None
    assert isinstance(terminal["error"], str) and terminal["error"]
    assert KEY not in terminal["error"]
    rows = await message_rows(chat, session_id)
    assert [(r[1], r[2]) for r in rows] == [("user", "Hi there")]
    assert len(await usage_rows(chat, session_id)) == 1
    # The server is fine: a round on the working model still succeeds.
    again = await stream_of(chat, "Still there?")
    assert again.text() == "Hello, world!"
    status, body = await chat.api.call("GET", "/api/health")
    assert status == 200 and body["success"] is True


# --- 6. timeouts ---

async def test_idle_upstream_mid_stream_is_aborted_and_partial_saved(chat_factory):
    chat = await chat_factory(provider_max_idle_ms=200)
    chat.upstream.queue(Reply(stall_after=2))
    started = time.monotonic()
    stream = await stream_of(chat)
    assert time.monotonic() - started < 5  # the stall lasts an hour: the 0.2 s limit ended it
    assert stream.text() == "Hello, "
    terminal = stream.events[-1]
    assert terminal["type"] == "error", stream.events
    lowered = terminal["error"].lower()
    assert any(word in lowered for word in ("nothing", "idle", "silen", "no data", "stall",
                                            "inactiv")), terminal
    (request,) = chat.upstream.requests  # content was relayed: no retry, no fallback
    await asyncio.wait_for(request.disconnected.wait(), 2)
    reply = (await chat.messages())[1]
    assert reply["content"] == "Hello," and reply["status"] == "error"
    assert terminal["assistantMessageId"] == reply["id"]
    assert "end" not in stream.types()


async def test_no_headers_within_the_idle_limit_is_retried(chat_factory):
    chat = await chat_factory(provider_max_idle_ms=200, provider_retry_wait_ms=50)
    chat.upstream.queue(Reply(headers_delay=1.0), Reply(tokens=["after ", "retry"]))
    stream = await stream_of(chat)
    assert stream.text() == "after retry"
    assert stream.events[-1]["type"] == "complete"
    first, second = chat.upstream.requests
    assert second.stream
    assert second.started - first.started >= 0.2  # the idle limit, then the wait
    # aichat hung up on the first before its headers (due after 1 s) ever came.
    await asyncio.wait_for(first.disconnected.wait(), 3)


async def test_total_timeout_bounds_the_round(chat_factory):
    chat = await chat_factory(provider_timeout_ms=500)
    chat.upstream.queue(Reply(tokens=[f"w{i} " for i in range(50)], delay=0.1))
    started = time.monotonic()
    stream = await stream_of(chat)
    assert time.monotonic() - started < 4  # the stream would take 5 s; the budget is 0.5 s
    terminal = stream.events[-1]
    assert terminal["type"] == "error"
    assert terminal["error"] == "AI API request timed out"
    text = stream.text()
    assert text and "".join(f"w{i} " for i in range(50)).startswith(text)
    assert len(text.split()) < 50
    reply = (await chat.messages())[1]
    assert reply["content"] == text.strip() and reply["status"] == "error"
    assert terminal["assistantMessageId"] == reply["id"]
    (request,) = chat.upstream.requests
    await asyncio.wait_for(request.disconnected.wait(), 2)


# --- 7. failure after content ---

async def test_drop_after_content_ends_with_error_and_keeps_the_partial(chat):
    chat.upstream.queue(Reply(drop_after=2))
    stream = await stream_of(chat)
    assert stream.text() == "Hello, "
    terminal = stream.events[-1]
    assert terminal["type"] == "error"
    assert terminal["error"].strip().lower() != "terminated"
    assert len(terminal["error"]) > len("terminated")
    assert "end" not in stream.types()
    assert len(chat.upstream.requests) == 1
    reply = (await chat.messages())[1]
    assert reply["content"] == "Hello," and reply["status"] == "error"
    assert terminal["assistantMessageId"] == reply["id"]
    [usage_row] = await usage_rows(chat)
    assert usage_row[0] == reply["id"]


# --- 8. garbage ---

async def test_garbage_body_goes_to_the_fallback(chat):
    chat.upstream.queue(Reply(raw_body=b"<html>oops</html>"), Reply(content="Sane answer"))
    stream = await stream_of(chat)
    requests = chat.upstream.requests
    assert requests[0].stream and not requests[-1].stream
    assert len(requests) == 2
    assert stream.text() == "Sane answer"
    assert stream.events[-1]["type"] == "complete"
    assert (await message_rows(chat))[1][2:4] == ("Sane answer", "complete")


async def test_only_junk_lines_go_to_the_fallback(chat):
    chat.upstream.queue(Reply(raw_body=b"data: {nope\n\ndata: <html>\n\n"),
                        Reply(content="Sane answer"))
    stream = await stream_of(chat)
    assert [r.stream for r in chat.upstream.requests][-1] is False
    assert stream.text() == "Sane answer"


# --- 9. usage switches (system settings, read fresh for every round) ---

async def test_usage_emit_false_sends_no_usage_but_writes_the_row(chat):
    await set_system(chat, usage_emit=False)
    chat.upstream.queue(Reply(usage={"prompt_tokens": 30, "completion_tokens": 5,
                                     "total_tokens": 35}))
    stream = await stream_of(chat)
    assert "usage" not in stream.types()
    assert stream.types() == ["start", "content", "content", "content", "content", "stop",
                              "end", "complete"]
    reply_id = stream.events[-1]["assistantMessageId"]
    assert await usage_rows(chat) == [(reply_id, "fake-model", "127.0.0.1", 30, 5, 35, 4000)]

    await set_system(chat, usage_emit=True)  # read fresh: the next round emits again
    again = await stream_of(chat, "Again")
    assert again.types().count("usage") == 2


async def test_usage_provider_only_with_provider_usage(chat):
    await set_system(chat, usage_provider_only=True)
    reported = {"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46}
    chat.upstream.queue(Reply(usage=reported))
    stream = await stream_of(chat)
    assert usages(stream) == [reported]
    assert stream.types()[1] == "content"
    assert (await usage_rows(chat))[0][3:6] == (40, 6, 46)


async def test_usage_provider_only_without_provider_usage(chat):
    await set_system(chat, usage_provider_only=True)
    stream = await stream_of(chat)
    assert stream.types()[1] == "content"
    events = usages(stream)
    prompt, completion = 3 + cost("user", "Hi there"), tokens("Hello, world!")
    assert events == [{"prompt_tokens": prompt, "completion_tokens": completion,
                       "total_tokens": prompt + completion, "context_limit": 4000,
                       "context_remaining": 4000 - prompt}]
    assert stream.types()[-2:] == ["usage", "complete"]


# --- 10. long deltas in small events ---

def content_bytes(block: bytes) -> int:
    """Bytes the JSON-encoded content takes in a compact content event."""
    frame = b"data: " + json.dumps({"type": "content", "content": ""},
                                   separators=(",", ":")).encode() + b"\n\n"
    return len(block) - len(frame)


@pytest.mark.parametrize("text", [
    "abcdefghij" * 400,
    "汉字かな" * 500,
    "😀🎉" * 700,
    'quote " backslash \\ newline \n tab \t ' * 120,
    "ctrl \x01\x02\x1f " * 300,
    "\x1b" * 3000,
], ids=["ascii", "cjk", "emoji", "escapes", "control", "control_only"])
@pytest.mark.parametrize("path", ["stream", "fallback"])
async def test_long_deltas_are_split_into_small_events(chat, text, path):
    if path == "stream":
        chat.upstream.queue(Reply(tokens=[text]))
    else:
        chat.upstream.queue(Reply(status=500), Reply(status=500), Reply(content=text))
    stream = await stream_of(chat)
    blocks = [b for b in stream.raw if b.startswith(b'data: {"type":"content"')]
    assert len(blocks) == stream.types().count("content") >= 2
    for block in blocks:
        assert content_bytes(block) <= 1024, content_bytes(block)
    assert stream.text() == text
    assert (await chat.messages())[1]["content"] == text.strip()


# --- 11. validation before anything is stored ---

async def assert_untouched(chat) -> None:
    assert await chat.rows("SELECT COUNT(*) FROM messages") == [(0,)]
    assert await chat.rows("SELECT COUNT(*) FROM usage_metrics") == [(0,)]
    assert chat.upstream.requests == []


async def test_stream_needs_a_token(chat):
    await chat.api.error("POST", "/api/chat/stream", None, 401,
                         json={"sessionId": chat.session_id, "content": "Hi"})
    await chat.api.error("POST", "/api/chat/stream", None, 401,
                         headers={"Authorization": "Bearer not-a-jwt"},
                         json={"sessionId": chat.session_id, "content": "Hi"})
    await chat.api.error("POST", "/api/chat/stream", None, 401, json={"content": ""})
    await assert_untouched(chat)


async def test_unknown_or_foreign_session_is_404(chat):
    await chat.api.error("POST", "/api/chat/stream", chat.user, 404, "Chat session not found",
                         json={"sessionId": 999999, "content": "Hi"})
    bob = await chat.api.register("bob")
    model = await chat.api.ok("POST", "/api/models", bob, json={
        "name": "bob-model", "apiUrl": chat.upstream.url, "apiKey": "sk-bob"})
    bob_session = await chat.api.ok("POST", "/api/sessions", bob,
                                    json={"modelConfigId": model["id"]})
    await chat.api.error("POST", "/api/chat/stream", chat.user, 404, "Chat session not found",
                         json={"sessionId": bob_session["id"], "content": "Hi"})
    await chat.api.error("POST", "/api/chat/stream", bob, 404, "Chat session not found",
                         json={"sessionId": chat.session_id, "content": "Hi"})
    await assert_untouched(chat)


DROP = object()


@pytest.mark.parametrize("body, field", [
    ({"content": DROP}, "content"),
    ({"content": None}, "content"),
    ({"content": ""}, "content"),
    ({"content": "   \n\t "}, "content"),
    ({"content": "x" * 10001}, "content"),
    ({"content": 42}, "content"),
    ({"content": ["Hi"]}, "content"),
    ({"sessionId": None}, "sessionId"),
    ({"sessionId": DROP}, "sessionId"),
    ({"sessionId": "SID"}, "sessionId"),
    ({"sessionId": 1.0}, "sessionId"),
    ({"sessionId": 1.5}, "sessionId"),
    ({"sessionId": True}, "sessionId"),
    ({"sessionId": 0}, "sessionId"),
    ({"sessionId": -1}, "sessionId"),
    ({"sessionId": 999999, "content": ""}, "content"),  # 400 before 404
])
async def test_invalid_body_names_the_field(chat, body, field):
    payload = {"sessionId": chat.session_id, "content": "Hi", **body}
    payload = {k: v for k, v in payload.items() if v is not DROP}
    if payload.get("sessionId") == "SID":
        payload["sessionId"] = str(chat.session_id)
    await chat.api.error("POST", "/api/chat/stream", chat.user, 400, field, json=payload)
    await assert_untouched(chat)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"', b"null"])
async def test_malformed_json_is_400(chat, raw):
    await chat.api.error("POST", "/api/chat/stream", chat.user, 400, "Invalid JSON body",
                         data=raw, headers={"Content-Type": "application/json"})
    await assert_untouched(chat)


async def test_images_for_a_text_only_model_are_refused(chat):
    session_id = await second_session(chat, "text-only", chat.upstream.url, images=False)
    await chat.api.error("POST", "/api/chat/stream", chat.user, 400,
                         "This model does not accept images",
                         json={"sessionId": session_id, "content": "Look",
                               "images": [{"data": "iVBORw0KGgo=", "mime": "image/png"}]})
    await assert_untouched(chat)


async def test_content_of_exactly_10000_chars_is_accepted(chat):
    stream = await stream_of(chat, "y" * 10000)
    assert stream.events[-1]["type"] == "complete"
    sent = chat.upstream.requests[0].body["messages"][-1]["content"]
    assert sent == [{"type": "text", "text": "y" * 10000}]
