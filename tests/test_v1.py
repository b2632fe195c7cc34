"""The OpenAI-compatible surface with personal API keys, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import logging
import os

import openai
import pytest

from aichat.http.appkeys import registry_key

from .fake_upstream import Reply

USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


async def new_key(chat, user=None, **body) -> dict:
    return await chat.api.ok("POST", "/api/keys", user or chat.user,
                             json={"name": "laptop", **body})


@pytest.fixture
async def sdk(chat):
    """An AsyncOpenAI client on alice's personal key."""
    key = await new_key(chat)
    client = openai.AsyncOpenAI(base_url=str(chat.api.client.make_url("/v1")),
                                api_key=key["key"], max_retries=0)
    client.aichat_key = key
    yield client
    await client.close()


async def test_models_lists_what_the_caller_may_use(chat, sdk):
    await chat.api.ok("POST", "/api/models/system", "admin", json={
        "name": "shared", "apiUrl": chat.upstream.url, "apiKey": "sk-sys"})
    await chat.api.ok("POST", "/api/models/system", "admin", json={
        "name": "fake-model", "apiUrl": chat.upstream.url, "apiKey": "sk-sys"})
    bob = await chat.api.register("bob")
    await chat.api.ok("POST", "/api/models", bob, json={
        "name": "bobs-own", "apiUrl": chat.upstream.url, "apiKey": "sk-bob"})
    page = await sdk.models.list()
    owners = {m.id: m.owned_by for m in page.data}
    # Alice's personal fake-model shadows the system one of that name; bob's is invisible.
    assert owners == {"fake-model": "user", "shared": "system"}


async def test_a_non_streaming_call(chat, sdk):
    chat.upstream.queue(Reply(content="Bonjour.", usage=USAGE))
    reply = await sdk.chat.completions.create(
        model="fake-model", messages=[{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Say hello"}],
        temperature=0.2, max_tokens=50)
    assert reply.choices[0].message.content == "Bonjour."
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (12, 15)
    sent = chat.upstream.requests[0]
    assert sent.body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent.body["temperature"] == 0.2 and sent.body["max_tokens"] == 50
    assert sent.body["stream"] is False and sent.headers["Authorization"] == \
        "Bearer sk-alice-SECRET-0001"
    # Accounted per request, no chat session or message created.
    assert await chat.rows("SELECT model, status, prompt_tokens, total_tokens, api_key_id, user_id,"
                           " session_id, context_limit FROM usage_metrics") == [
        ("fake-model", "complete", 12, 15, sdk.aichat_key["id"], chat.user.id, None, None)]
    assert await chat.rows("SELECT id FROM messages") == []


async def test_a_streaming_call_read_chunk_by_chunk_with_usage(chat, sdk):
    chat.upstream.queue(Reply(tokens=["One", ", two", ", three"], reasoning=["hmm"],
                              usage=USAGE))
    stream = await sdk.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "count"}], stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "One, two, three"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes.count("stop") == 1 and finishes[-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 15
    assert len({c.id for c in chunks}) == 1
    assert chat.upstream.requests[0].body["stream_options"] == {"include_usage": True}


async def test_no_usage_chunk_unless_asked_and_estimates_are_recorded(chat, sdk):
    chat.upstream.queue(Reply(tokens=["plain"]))
    stream = await sdk.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.usage is None for c in chunks)
    assert await chat.rows("SELECT completion_tokens, estimated FROM usage_metrics") == [(2, 1)]


async def test_unknown_model_is_404_in_openai_format(chat, sdk):
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.chat.completions.create(model="no-such-model",
                                          messages=[{"role": "user", "content": "hi"}])
    error = caught.value.body
    assert error["code"] == "model_not_found" and "no-such-model" in error["message"]
    assert caught.value.status_code == 404


async def test_another_users_personal_model_is_not_usable(chat, sdk):
    bob = await chat.api.register("bob")
    await chat.api.ok("POST", "/api/models", bob, json={
        "name": "bobs-own", "apiUrl": chat.upstream.url, "apiKey": "sk-bob"})
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model="bobs-own",
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.upstream.requests == []


async def test_revoked_expired_and_orphaned_keys_stop_working(chat, sdk):
    key = sdk.aichat_key
    await sdk.models.list()
    await chat.api.ok("DELETE", f"/api/keys/{key['id']}", chat.user)
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk.models.list()
    assert caught.value.status_code == 401 and caught.value.body["type"] == \
        "authentication_error"
    # Expiry, checked on every use.
    soon = await new_key(chat, expiresInDays=1)
    await chat.api.execute("UPDATE api_keys SET expires_at = '2000-01-01T00:00:00.000Z'")
    expired = openai.AsyncOpenAI(base_url=str(chat.api.client.make_url("/v1")),
                                 api_key=soon["key"], max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await expired.models.list()
    await expired.close()
    # The user deleted: their keys die with them.
    bob = await chat.api.register("bob")
    bobs = await new_key(chat, bob)
    await chat.api.ok("DELETE", f"/api/users/{bob.id}", "admin")
    gone = openai.AsyncOpenAI(base_url=str(chat.api.client.make_url("/v1")),
                              api_key=bobs["key"], max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await gone.models.list()
    await gone.close()


async def test_a_jwt_works_on_v1_but_a_key_does_not_work_on_the_api(chat, sdk):
    jwt_client = openai.AsyncOpenAI(base_url=str(chat.api.client.make_url("/v1")),
                                    api_key=chat.user.token, max_retries=0)
    assert [m.id for m in (await jwt_client.models.list()).data] == ["fake-model"]
    await jwt_client.close()
    key = sdk.aichat_key["key"]
    await chat.api.error("GET", "/api/keys", None, 401, "Invalid or expired token",
                         headers={"Authorization": f"Bearer {key}"})


async def test_v1_errors_use_openai_shapes(chat, sdk):
    async with chat.api.client.get("/v1/models") as r:
        body = await r.json()
        assert r.status == 401 and body["error"]["type"] == "authentication_error"
        assert set(body["error"]) == {"message", "type", "param", "code"}
    headers = {"Authorization": f"Bearer {sdk.aichat_key['key']}"}
    for payload, field in (({"messages": [{"role": "user", "content": "x"}]}, "model"),
                           ({"model": "fake-model"}, "messages"),
                           ({"model": "fake-model", "messages": [{"role": "robot"}]}, "role"),
                           ({"model": "fake-model", "n": 2,
                             "messages": [{"role": "user", "content": "x"}]}, "n")):
        async with chat.api.client.post("/v1/chat/completions", json=payload,
                                        headers=headers) as r:
            body = await r.json()
            assert r.status == 400 and field in body["error"]["message"]
            assert body["error"]["type"] == "invalid_request_error"
    async with chat.api.client.post("/v1/chat/completions", data=b"{", headers=headers) as r:
        assert r.status == 400 and "Invalid JSON body" in (await r.json())["error"]["message"]


async def test_upstream_failure_and_disconnect(chat, sdk):
    chat.upstream.queue(Reply(status=503), Reply(status=503))
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk.chat.completions.create(model="fake-model",
                                          messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    # A streaming client that hangs up stops the upstream call; the usage is still recorded.
    chat.upstream.queue(Reply(tokens=[f"w{i} " for i in range(200)], delay=0.02))
    headers = {"Authorization": f"Bearer {sdk.aichat_key['key']}"}
    async with chat.api.client.post("/v1/chat/completions", headers=headers, json={
            "model": "fake-model", "stream": True,
            "messages": [{"role": "user", "content": "long"}]}) as r:
        block = await r.content.readuntil(b"\n\n")
        assert b"chat.completion.chunk" in block
        r.close()
    await asyncio.wait_for(chat.upstream.requests[-1].disconnected.wait(), 2)
    for round_ in chat.api.client.app[registry_key].rounds():
        await round_.wait_done(5)
    statuses = [row[0] for row in await chat.rows("SELECT status FROM usage_metrics ORDER BY id")]
    assert statuses == ["error", "stopped"]


# --- /api/keys -----------------------------------------------------------------------------

async def test_keys_are_shown_once_and_stored_as_hashes(chat, backend):
    created = await new_key(chat, expiresInDays=30)
    assert created["key"].startswith("aic_") and len(created["key"]) >= 4 + 43
    assert created["prefix"] == created["key"][:12] and created["expiresAt"].endswith("Z")
    listed = await chat.api.ok("GET", "/api/keys", chat.user)
    assert listed == [{k: v for k, v in created.items() if k != "key"}]
    # The stored row (either store) holds the prefix and a hash, never the key itself.
    [row] = await chat.api.db.all("SELECT * FROM api_keys")
    assert row["prefix"] == created["prefix"] and row["key_hash"]
    assert not any(created["key"] in str(value) for value in row.values()), row
    if backend == "sqlite":  # and the file at rest, write-ahead log included
        files = (chat.api.config.database_path, chat.api.config.database_path + "-wal")
        raw = b"".join(open(p, "rb").read()  # noqa: ASYNC230 - a test reading the file at rest
                       for p in files if os.path.exists(p))
        assert created["key"].encode() not in raw


@pytest.mark.parametrize("method, path", [("GET", "/api/keys"), ("POST", "/api/keys"),
                                          ("DELETE", "/api/keys/1"),
                                          ("GET", "/api/keys/usage")])
async def test_keys_routes_need_a_token(chat, method, path):
    await chat.api.error(method, path, None, 401, json={"name": "x"})


async def test_another_users_key_is_404(chat):
    key = await new_key(chat)
    bob = await chat.api.register("bob")
    await chat.api.error("DELETE", f"/api/keys/{key['id']}", bob, 404, "API key not found")
    assert await chat.api.ok("GET", "/api/keys", bob) == []
    await chat.api.error("DELETE", "/api/keys/99999", chat.user, 404, "API key not found")
    assert len(await chat.api.ok("GET", "/api/keys", chat.user)) == 1


@pytest.mark.parametrize("body, field", [
    ({}, "name"), ({"name": ""}, "name"), ({"name": "x" * 101}, "name"), ({"name": 5}, "name"),
    ({"name": "k", "expiresInDays": 0}, "expiresInDays"),
    ({"name": "k", "expiresInDays": 3651}, "expiresInDays"),
    ({"name": "k", "expiresInDays": "7"}, "expiresInDays"),
])
async def test_key_creation_is_validated(chat, body, field):
    await chat.api.error("POST", "/api/keys", chat.user, 400, field, json=body)
    assert await chat.api.ok("GET", "/api/keys", chat.user) == []
    await chat.api.error("DELETE", "/api/keys/abc", chat.user, 400, "Invalid API key ID")


async def test_v1_usage_per_day_and_model(chat, sdk):
    chat.upstream.queue(Reply(content="a", usage=USAGE), Reply(content="b", usage=USAGE))
    for _ in range(2):
        await sdk.chat.completions.create(model="fake-model",
                                          messages=[{"role": "user", "content": "hi"}])
    data = await chat.api.ok("GET", "/api/keys/usage", chat.user)
    [(day,)] = await chat.api.rows("SELECT DISTINCT substr(created_at, 1, 10) FROM usage_metrics")
    # The model has no prices: the requests' cost is null.
    assert data["rows"] == [{"date": day, "model": "fake-model", "requests": 2,
                             "prompt_tokens": 24, "completion_tokens": 6, "total_tokens": 30,
                             "cost": None}]
    await chat.api.error("GET", "/api/keys/usage", chat.user, 400, "Invalid date range",
                         params={"from": "2025-02-01", "to": "2025-01-01"})


async def test_personal_keys_never_reach_the_logs(chat, caplog):
    caplog.set_level(logging.DEBUG)
    key = (await new_key(chat))["key"]
    client = openai.AsyncOpenAI(base_url=str(chat.api.client.make_url("/v1")), api_key=key,
                                max_retries=0)
    chat.upstream.queue(Reply(content="ok"))
    await client.chat.completions.create(model="fake-model",
                                         messages=[{"role": "user", "content": "hi"}])
    await client.models.list()
    await client.close()
    listed = await chat.api.ok("GET", "/api/keys", chat.user)
    await chat.api.ok("DELETE", f"/api/keys/{listed[0]['id']}", chat.user)
    assert caplog.records and not any(key in r.getMessage() or key in (r.exc_text or "")
                                      for r in caplog.records)
    assert key not in str(listed)
