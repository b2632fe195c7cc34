"""What one reply, one upstream line or one request may make the server hold."""

from __future__ import annotations

from .fake_upstream import Reply



async def test_a_reply_past_max_reply_chars_ends_with_an_error_keeping_what_was_relayed(chat):
    await chat.api.ok("PUT", "/api/settings/system", "admin", json={"max_reply_chars": 10_000})
    chat.upstream.queue(Reply(huge=5_000_000))
    reader = await chat.stream("flood me")
    assert len(reader.text()) == 10_000  # exactly the cap reached the client
    final = reader.events[-1]
    assert final["type"] == "error" and final["error"] == "The reply exceeded 10000 characters"
    assert final["assistantMessageId"] is not None
    kept = await chat.rows("SELECT status, length(content) FROM messages WHERE role = 'assistant'")
    assert kept == [("error", 10_000)]
    usage = await chat.rows("SELECT completion_tokens, status FROM usage_metrics")
    assert usage == [(2500, "error")]  # the heuristic count of what was kept
    # The provider was hung up on, not read to the end of its 5 MB.
    assert chat.upstream.requests[0].disconnected.is_set()
    assert len(chat.upstream.requests) == 1  # no retry, no fallback


async def test_the_reply_cap_is_an_admin_setting_with_a_range(chat):
    for value in (999, 16 * 1024 * 1024 + 1, "big"):
        await chat.api.error("PUT", "/api/settings/system", "admin", 400, "max_reply_chars",
                             json={"max_reply_chars": value})
    settings = await chat.api.ok("GET", "/api/settings/system", chat.user)
    assert settings["max_reply_chars"] == 1024 * 1024


async def test_a_stream_line_without_end_is_cut_at_the_line_cap(chat_factory):
    chat = await chat_factory(max_upstream_line_bytes=4096)
    # The cut stream is garbage, so the non-streamed fallback runs: make that fail too.
    chat.upstream.queue(Reply(no_newline=10_000_000), Reply(status=500))
    reader = await chat.stream("no newline")
    final = reader.events[-1]
    assert final["type"] == "error"
    assert final["error"] == "AI API sent a line longer than 4096 bytes"
    assert chat.upstream.requests[0].disconnected.is_set()


async def test_v1_requests_have_caps_on_messages_and_text(chat_factory):
    chat = await chat_factory(v1_max_messages=3, v1_max_message_chars=100,
                              v1_max_total_chars=150)
    key = (await chat.api.ok("POST", "/api/keys", chat.user, json={"name": "k"}))["key"]
    headers = {"Authorization": f"Bearer {key}"}

    async def refused(messages, fragment):
        async with chat.api.client.post("/v1/chat/completions", headers=headers, json={
                "model": "fake-model", "messages": messages}) as r:
            body = await r.json()
            assert r.status == 400 and fragment in body["error"]["message"], body

    say = [{"role": "user", "content": "hi"}]
    await refused(say * 4, "messages may hold at most 3 items")
    await refused([{"role": "user", "content": "x" * 101}], "messages[0].content must be at "
                  "most 100 characters")
    await refused([{"role": "user", "content": [{"type": "text", "text": "x" * 101}]}],
                  "at most 100 characters")
    await refused([{"role": "user", "content": "x" * 80}] * 2, "at most 150 characters")
    assert chat.upstream.requests == []
    async with chat.api.client.post("/v1/chat/completions", headers=headers, json={
            "model": "fake-model", "messages": say * 3}) as r:
        assert r.status == 200


async def test_personal_model_configs_are_capped_per_user(chat):
    api = chat.api
    await api.ok("PUT", "/api/settings/system", "admin", json={"max_models_per_user": 2})
    body = {"apiUrl": chat.upstream.url, "apiKey": "sk-x"}
    await api.ok("POST", "/api/models", chat.user, json={"name": "second", **body})
    await api.error("POST", "/api/models", chat.user, 400,
                    "At most 2 model configurations per user",
                    json={"name": "third", **body})
    assert await chat.rows("SELECT COUNT(*) FROM model_configs WHERE user_id = ?",
                     (chat.user.id,)) == [(2,)]
    # System models are the admins' own and not counted against anyone.
    await api.ok("POST", "/api/models/system", "admin", json={"name": "shared", **body})


