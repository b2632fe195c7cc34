"""/api/sessions and /api/chat/sessions/:id/messages: a user's chats and their messages."""

from __future__ import annotations

import functools
import re

import pytest

from aichat.http.appkeys import db_key
from aichat.store import messages as messages_store

URL = "https://api.example.com/v1/chat/completions"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SUMMARY_FIELDS = {"id", "userId", "modelConfigId", "title", "createdAt", "modelConfig", "_count"}
MESSAGE_FIELDS = {"id", "sessionId", "role", "content", "createdAt", "status", "reasoning",
                  "usage"}
SESSION_NOT_FOUND = "Chat session not found"
MODEL_NOT_FOUND = "Model configuration not found"


async def create_model(api, user, name: str = "gpt-4o", images: bool = False) -> dict:
    return await api.ok("POST", "/api/models", user, json={
        "name": name, "apiUrl": URL, "apiKey": "sk-x", "supportsImages": images})


async def create_system_model(api, name: str = "sys", images: bool = False) -> dict:
    return await api.ok("POST", "/api/models/system", "admin", json={
        "name": name, "apiUrl": URL, "apiKey": "sk-x", "supportsImages": images})


async def create_session(api, user, model_id: int, title: str | None = None) -> dict:
    body: dict = {"modelConfigId": model_id}
    if title is not None:
        body["title"] = title
    return await api.ok("POST", "/api/sessions", user, json=body)


async def seed(api, session_id: int, *turns: tuple) -> list[int]:
    """Insert messages through the store: each turn is (role, content[, status[, reasoning]])."""
    db = api.client.app[db_key]
    ids = []
    async with db.transaction() as tx:
        for role, content, *rest in turns:
            kwargs = {}
            if rest:
                kwargs["status"] = rest[0]
            if len(rest) > 1:
                kwargs["reasoning"] = rest[1]
            ids.append(await tx.call(functools.partial(messages_store.add, **kwargs),
                                   session_id, role, content))
    return ids


async def add_usage(api, session_id: int, message_id: int | None, prompt: int = 10,
                    completion: int = 5, total: int = 15, model: str = "gpt-4o") -> int:
    db = api.client.app[db_key]
    async with db.transaction() as tx:
        return await tx.insert(
            "INSERT INTO usage_metrics (session_id, message_id, model, prompt_tokens,"
            " completion_tokens, total_tokens) VALUES (?,?,?,?,?,?)",
            (session_id, message_id, model, prompt, completion, total))


async def query(api, sql: str, params: tuple = ()) -> list[tuple]:
    return await api.rows(sql, params)


async def execute(api, sql: str, params: tuple = ()) -> None:
    await api.execute(sql, params)


async def sessions_table(api) -> list[tuple]:
    return await query(api, "SELECT * FROM chat_sessions ORDER BY id")


def assert_summary(session: dict, *, user_id: int, model: dict, title: str,
                   messages: int = 0) -> None:
    assert set(session) == SUMMARY_FIELDS, session
    assert type(session["id"]) is int and session["id"] > 0
    assert session["userId"] == user_id
    assert session["modelConfigId"] == model["id"]
    assert session["title"] == title
    assert TIMESTAMP.match(session["createdAt"]), session["createdAt"]
    assert session["modelConfig"] == {"id": model["id"], "name": model["name"],
                                      "supportsImages": model["supportsImages"]}
    assert session["_count"] == {"messages": messages}


def assert_message(message: dict, *, session_id: int, role: str, content: str,
                   status: str = "complete", reasoning=None, usage=None) -> None:
    assert set(message) == MESSAGE_FIELDS, message
    assert type(message["id"]) is int
    assert message["sessionId"] == session_id
    assert message["role"] == role and message["content"] == content
    assert message["status"] == status and message["reasoning"] == reasoning
    assert message["usage"] == usage
    assert TIMESTAMP.match(message["createdAt"]), message["createdAt"]


# --- access ---

ROUTES = [
    ("GET", "/api/sessions", None), ("POST", "/api/sessions", {"modelConfigId": 1}),
    ("GET", "/api/sessions/1", None), ("PUT", "/api/sessions/1", {"title": "x"}),
    ("DELETE", "/api/sessions/1", None), ("DELETE", "/api/sessions/1/messages", None),
    ("GET", "/api/chat/sessions/1/messages", None),
]


@pytest.mark.parametrize("method, path, body", ROUTES)
async def test_session_routes_need_a_token(api, method, path, body):
    model = await create_model(api, "admin")
    session = await create_session(api, "admin", model["id"])
    await seed(api, session["id"], ("user", "hi"))
    before = await sessions_table(api), await query(api, "SELECT * FROM messages ORDER BY id")
    await api.error(method, path, None, 401, "Missing or invalid authorization header", json=body)
    await api.error(method, path, None, 401, "Invalid or expired token", json=body,
                    headers={"Authorization": "Bearer x.y.z"})
    assert (await sessions_table(api),
            await query(api, "SELECT * FROM messages ORDER BY id")) == before


# --- create ---

async def test_create_session_with_own_model_defaults_the_title(api):
    bob = await api.register("bob")
    model = await create_model(api, bob)
    session = await create_session(api, bob, model["id"])
    assert_summary(session, user_id=bob.id, model=model, title="New Chat")
    titled = await create_session(api, bob, model["id"], "新的对话")
    assert_summary(titled, user_id=bob.id, model=model, title="新的对话")
    longest = await create_session(api, bob, model["id"], "t" * 200)
    assert longest["title"] == "t" * 200
    assert await query(api, "SELECT user_id, model_config_id, title FROM chat_sessions"
                            " ORDER BY id") == [
        (bob.id, model["id"], "New Chat"), (bob.id, model["id"], "新的对话"),
        (bob.id, model["id"], "t" * 200)]


async def test_create_session_with_a_system_model(api):
    bob = await api.register("bob")
    system = await create_system_model(api, "vision", images=True)
    session = await create_session(api, bob, system["id"], "Pictures")
    assert_summary(session, user_id=bob.id, model=system, title="Pictures")
    assert session["modelConfig"]["supportsImages"] is True


async def test_create_session_ignores_unknown_keys_and_a_forged_owner(api):
    bob = await api.register("bob")
    carol = await api.register("carol")
    model = await create_model(api, bob)
    session = await api.ok("POST", "/api/sessions", bob, json={
        "modelConfigId": model["id"], "userId": carol.id, "id": 555, "whatever": [1]})
    assert session["userId"] == bob.id and session["id"] != 555
    assert (await api.ok("GET", "/api/sessions", carol))["sessions"] == []


@pytest.mark.parametrize("value", ["1", "abc", 1.0, 1.5, True, False, 0, -1, -5, None,
                                   [1], {"id": 1}, ""])
async def test_model_config_id_must_be_a_positive_json_integer(api, value):
    bob = await api.register("bob")
    model = await create_model(api, bob)
    assert model["id"] == 1  # so "1", 1.0 and True would name a real model if accepted
    body = {"title": "x"} if value is None else {"modelConfigId": value, "title": "x"}
    await api.error("POST", "/api/sessions", bob, 400, "modelConfigId", json=body)
    assert await sessions_table(api) == []


async def test_create_session_needs_a_visible_model(api):
    bob = await api.register("bob")
    carol = await api.register("carol")
    carols = await create_model(api, carol)
    for model_id in (carols["id"], 9999, 2**70):
        await api.error("POST", "/api/sessions", bob, 404, MODEL_NOT_FOUND,
                        json={"modelConfigId": model_id})
    # An admin cannot use another user's personal model either.
    await api.error("POST", "/api/sessions", "admin", 404, MODEL_NOT_FOUND,
                    json={"modelConfigId": carols["id"]})
    assert await sessions_table(api) == []


@pytest.mark.parametrize("title", ["", "   ", "\n\t", "x" * 201, 5, ["t"], True, {"t": 1}])
async def test_create_session_title_rules(api, title):
    bob = await api.register("bob")
    model = await create_model(api, bob)
    await api.error("POST", "/api/sessions", bob, 400, "title",
                    json={"modelConfigId": model["id"], "title": title})
    # Validation comes before existence (docs/api.md §1, check order).
    await api.error("POST", "/api/sessions", bob, 400, "title",
                    json={"modelConfigId": 9999, "title": title})
    assert await sessions_table(api) == []


@pytest.mark.parametrize("raw", [b"{oops", b"", b"[]", b"null", b"7", b'"s"',
                                 b'{"modelConfigId": NaN}', b'{"modelConfigId": Infinity}'])
async def test_create_session_malformed_json(api, raw):
    bob = await api.register("bob")
    await create_model(api, bob)
    await api.error("POST", "/api/sessions", bob, 400, "Invalid JSON body", data=raw,
                    headers={"Content-Type": "application/json"})
    assert await sessions_table(api) == []


# --- list ---

async def test_list_sessions_newest_first_with_default_paging(api):
    bob = await api.register("bob")
    carol = await api.register("carol")
    model = await create_model(api, bob)
    created = [await create_session(api, bob, model["id"], f"chat {i}") for i in range(21)]
    await create_session(api, carol, (await create_model(api, carol))["id"], "carol's")
    data = await api.ok("GET", "/api/sessions", bob)
    assert set(data) == {"sessions", "pagination"}
    assert data["pagination"] == {"page": 1, "limit": 20, "total": 21, "totalPages": 2}
    assert [s["title"] for s in data["sessions"]] == [f"chat {i}" for i in range(20, 0, -1)]
    assert data["sessions"][0] == created[-1]
    for s in data["sessions"]:
        assert_summary(s, user_id=bob.id, model=model, title=s["title"])
    page2 = await api.ok("GET", "/api/sessions", bob, params={"page": "2"})
    assert [s["title"] for s in page2["sessions"]] == ["chat 0"]
    assert page2["pagination"] == {"page": 2, "limit": 20, "total": 21, "totalPages": 2}
    page3 = await api.ok("GET", "/api/sessions", bob, params={"page": "3"})
    assert page3["sessions"] == [] and page3["pagination"]["total"] == 21
    big = await api.ok("GET", "/api/sessions", bob, params={"limit": "100"})
    assert len(big["sessions"]) == 21
    assert big["pagination"] == {"page": 1, "limit": 100, "total": 21, "totalPages": 1}
    small = await api.ok("GET", "/api/sessions", bob, params={"limit": "5", "page": "2"})
    assert [s["title"] for s in small["sessions"]] == [f"chat {i}" for i in range(15, 10, -1)]
    assert small["pagination"] == {"page": 2, "limit": 5, "total": 21, "totalPages": 5}


async def test_list_sessions_empty(api):
    bob = await api.register("bob")
    data = await api.ok("GET", "/api/sessions", bob)
    assert data == {"sessions": [], "pagination": {"page": 1, "limit": 20, "total": 0,
                                                   "totalPages": 0}}


async def test_list_sessions_orders_by_creation_time_and_counts_messages(api):
    bob = await api.register("bob")
    model = await create_model(api, bob)
    old = await create_session(api, bob, model["id"], "old")
    new = await create_session(api, bob, model["id"], "new")
    await seed(api, old["id"], ("user", "a"), ("assistant", "b"), ("user", "c"))
    await execute(api, "UPDATE chat_sessions SET created_at = '2001-01-01T00:00:00.000Z'"
                       " WHERE id = ?", (new["id"],))
    sessions = (await api.ok("GET", "/api/sessions", bob))["sessions"]
    assert [s["title"] for s in sessions] == ["old", "new"]
    assert [s["_count"]["messages"] for s in sessions] == [3, 0]
    assert sessions[1]["createdAt"] == "2001-01-01T00:00:00.000Z"


@pytest.mark.parametrize("params, field", [
    ({"page": "0"}, "page"), ({"page": "-1"}, "page"), ({"page": "x"}, "page"),
    ({"page": "1.5"}, "page"), ({"page": ""}, "page"), ({"page": "+1"}, "page"),
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "abc"}, "limit"),
    ({"limit": " 5"}, "limit"), ({"limit": "-20"}, "limit"), ({"limit": "2e1"}, "limit"),
    ({"page": "9" * 40}, "page"),
])
async def test_list_sessions_bad_paging_is_400(api, params, field):
    bob = await api.register("bob")
    await api.error("GET", "/api/sessions", bob, 400, field, params=params)


# --- read one ---

async def test_get_session_with_messages_oldest_first(api):
    bob = await api.register("bob")
    model = await create_model(api, bob, "m", images=True)
    session = await create_session(api, bob, model["id"], "talk")
    ids = await seed(api, session["id"], ("user", "hello"),
                     ("assistant", "partial", "stopped", "thinking..."),
                     ("user", "again"), ("assistant", "oops", "error"))
    await add_usage(api, session["id"], ids[1], 11, 7, 18)
    data = await api.ok("GET", f"/api/sessions/{session['id']}", bob)
    assert set(data) == SUMMARY_FIELDS | {"messages"}
    assert_summary({k: v for k, v in data.items() if k != "messages"}, user_id=bob.id,
                   model=model, title="talk", messages=4)
    assert [m["id"] for m in data["messages"]] == ids
    sid = session["id"]
    assert_message(data["messages"][0], session_id=sid, role="user", content="hello")
    assert_message(data["messages"][1], session_id=sid, role="assistant", content="partial",
                   status="stopped", reasoning="thinking...",
                   usage={"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
    assert_message(data["messages"][2], session_id=sid, role="user", content="again")
    assert_message(data["messages"][3], session_id=sid, role="assistant", content="oops",
                   status="error")


async def test_get_session_errors(api):
    bob = await api.register("bob")
    carol = await api.register("carol")
    theirs = await create_session(api, carol, (await create_model(api, carol))["id"])
    await api.error("GET", f"/api/sessions/{theirs['id']}", bob, 404, SESSION_NOT_FOUND)
    await api.error("GET", "/api/sessions/9999", bob, 404, SESSION_NOT_FOUND)
    await api.error("GET", "/api/sessions/0", bob, 404, SESSION_NOT_FOUND)
    await api.error("GET", "/api/sessions/" + "9" * 25, bob, 404, SESSION_NOT_FOUND)
    for bad in ("abc", "-1", "1.5", "1x", "%201"):
        await api.error("GET", f"/api/sessions/{bad}", bob, 400, "Invalid session ID")


# --- rename ---

async def test_rename_session(api):
    bob = await api.register("bob")
    model = await create_model(api, bob)
    session = await create_session(api, bob, model["id"])
    await seed(api, session["id"], ("user", "hi"))
    renamed = await api.ok("PUT", f"/api/sessions/{session['id']}", bob,
                           json={"title": "Renamed", "modelConfigId": 9999, "userId": 1})
    assert renamed == {**session, "title": "Renamed", "_count": {"messages": 1}}
    data = await api.ok("GET", f"/api/sessions/{session['id']}", bob)
    assert data["title"] == "Renamed" and data["modelConfigId"] == model["id"]
    longest = await api.ok("PUT", f"/api/sessions/{session['id']}", bob, json={"title": "z" * 200})
    assert longest["title"] == "z" * 200


@pytest.mark.parametrize("body", [{}, {"title": None}, {"title": ""}, {"title": "  "},
                                  {"title": "x" * 201}, {"title": 5}, {"title": ["a"]},
                                  {"title": False}])
async def test_rename_session_validation(api, body):
    bob = await api.register("bob")
    model = await create_model(api, bob)
    session = await create_session(api, bob, model["id"], "Keep")
    await api.error("PUT", f"/api/sessions/{session['id']}", bob, 400, "title", json=body)
    await api.error("PUT", "/api/sessions/9999", bob, 400, "title", json=body)
    assert await query(api, "SELECT title FROM chat_sessions") == [("Keep",)]


async def test_rename_session_errors(api):
    bob = await api.register("bob")
    model = await create_model(api, bob)
    session = await create_session(api, bob, model["id"], "Keep")
    await api.error("PUT", f"/api/sessions/{session['id']}", bob, 400, "Invalid JSON body",
                    data=b"{title", headers={"Content-Type": "application/json"})
    await api.error("PUT", f"/api/sessions/{session['id']}", bob, 400, "Invalid JSON body",
                    data=b'["title"]', headers={"Content-Type": "application/json"})
    await api.error("PUT", "/api/sessions/9999", bob, 404, SESSION_NOT_FOUND, json={"title": "x"})
    await api.error("PUT", "/api/sessions/x1", bob, 400, "Invalid session ID", json={"title": "x"})
    assert await query(api, "SELECT title FROM chat_sessions") == [("Keep",)]


# --- delete ---

async def test_delete_session_removes_its_messages_and_usage(api):
    bob = await api.register("bob")
    model = await create_model(api, bob)
    gone = await create_session(api, bob, model["id"], "gone")
    kept = await create_session(api, bob, model["id"], "kept")
    gone_ids = await seed(api, gone["id"], ("user", "q"), ("assistant", "a"))
    kept_ids = await seed(api, kept["id"], ("user", "q2"), ("assistant", "a2"))
    await add_usage(api, gone["id"], gone_ids[1])
    await add_usage(api, gone["id"], None)
    await add_usage(api, kept["id"], kept_ids[1])
    assert await api.ok("DELETE", f"/api/sessions/{gone['id']}", bob) is None
    await api.error("GET", f"/api/sessions/{gone['id']}", bob, 404, SESSION_NOT_FOUND)
    await api.error("DELETE", f"/api/sessions/{gone['id']}", bob, 404, SESSION_NOT_FOUND)
    await api.error("GET", f"/api/chat/sessions/{gone['id']}/messages", bob, 404,
                    SESSION_NOT_FOUND)
    assert await query(api, "SELECT id FROM chat_sessions") == [(kept["id"],)]
    assert await query(api, "SELECT id FROM messages ORDER BY id") == [(i,) for i in kept_ids]
    assert await query(api, "SELECT session_id, message_id FROM usage_metrics") == [
        (kept["id"], kept_ids[1])]
    assert [s["id"] for s in (await api.ok("GET", "/api/sessions", bob))["sessions"]] == [
        kept["id"]]


async def test_delete_session_errors(api):
    bob = await api.register("bob")
    await api.error("DELETE", "/api/sessions/9999", bob, 404, SESSION_NOT_FOUND)
    await api.error("DELETE", "/api/sessions/abc", bob, 400, "Invalid session ID")
    await api.error("DELETE", "/api/sessions/9999/messages", bob, 404, SESSION_NOT_FOUND)
    await api.error("DELETE", "/api/sessions/-3/messages", bob, 400, "Invalid session ID")


async def test_clear_messages_keeps_usage_rows_unlinked(api):
    bob = await api.register("bob")
    model = await create_model(api, bob)
    session = await create_session(api, bob, model["id"], "chat")
    other = await create_session(api, bob, model["id"], "other")
    ids = await seed(api, session["id"], ("user", "q"), ("assistant", "a"), ("user", "q2"),
                     ("assistant", "a2"))
    other_ids = await seed(api, other["id"], ("user", "x"), ("assistant", "y"))
    u1 = await add_usage(api, session["id"], ids[1], 1, 2, 3)
    u2 = await add_usage(api, session["id"], ids[3], 4, 5, 9)
    u3 = await add_usage(api, other["id"], other_ids[1])
    assert await api.ok("DELETE", f"/api/sessions/{session['id']}/messages", bob) is None
    data = await api.ok("GET", f"/api/sessions/{session['id']}", bob)
    assert data["messages"] == [] and data["_count"] == {"messages": 0}
    assert data["title"] == "chat"
    listed = await api.ok("GET", f"/api/chat/sessions/{session['id']}/messages", bob)
    assert listed["messages"] == [] and listed["pagination"]["total"] == 0
    assert await query(api, "SELECT id, session_id, message_id, prompt_tokens, total_tokens"
                            " FROM usage_metrics ORDER BY id") == [
        (u1, session["id"], None, 1, 3), (u2, session["id"], None, 4, 9),
        (u3, other["id"], other_ids[1], 10, 15)]
    assert await query(api, "SELECT id FROM messages ORDER BY id") == [(i,) for i in other_ids]
    # Clearing an empty session is fine; the session can still be used and deleted.
    assert await api.ok("DELETE", f"/api/sessions/{session['id']}/messages", bob) is None
    await seed(api, session["id"], ("user", "fresh"))
    fresh = await api.ok("GET", f"/api/chat/sessions/{session['id']}/messages", bob)
    assert [m["content"] for m in fresh["messages"]] == ["fresh"]
    await api.ok("DELETE", f"/api/sessions/{session['id']}", bob)
    assert await query(api, "SELECT session_id FROM usage_metrics") == [(other["id"],)]


# --- messages ---

async def test_list_messages_shape_and_order(api):
    bob = await api.register("bob")
    model = await create_model(api, bob)
    session = await create_session(api, bob, model["id"])
    sid = session["id"]
    empty = await api.ok("GET", f"/api/chat/sessions/{sid}/messages", bob)
    assert empty == {"messages": [], "pagination": {"page": 1, "limit": 1000, "total": 0,
                                                    "totalPages": 0}}
    ids = await seed(api, sid, ("user", "q1"), ("assistant", "a1", "complete", "why"),
                     ("user", "q2"), ("assistant", "a2", "stopped"))
    await add_usage(api, sid, ids[1], 100, 20, 120)
    await add_usage(api, sid, None, 1, 1, 2)  # an unlinked row changes no message
    data = await api.ok("GET", f"/api/chat/sessions/{sid}/messages", bob)
    assert set(data) == {"messages", "pagination"}
    assert data["pagination"] == {"page": 1, "limit": 1000, "total": 4, "totalPages": 1}
    got = data["messages"]
    assert [m["id"] for m in got] == ids
    assert_message(got[0], session_id=sid, role="user", content="q1")
    assert_message(got[1], session_id=sid, role="assistant", content="a1", reasoning="why",
                   usage={"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120})
    assert_message(got[2], session_id=sid, role="user", content="q2")
    assert_message(got[3], session_id=sid, role="assistant", content="a2", status="stopped")
    # The session view carries the same messages.
    assert (await api.ok("GET", f"/api/sessions/{sid}", bob))["messages"] == got


async def test_list_messages_orders_by_creation_time(api):
    bob = await api.register("bob")
    model = await create_model(api, bob)
    session = await create_session(api, bob, model["id"])
    ids = await seed(api, session["id"], ("user", "later"), ("user", "earlier"))
    await execute(api, "UPDATE messages SET created_at = '2000-01-01T00:00:00.000Z'"
                       " WHERE id = ?", (ids[1],))
    data = await api.ok("GET", f"/api/chat/sessions/{session['id']}/messages", bob)
    assert [m["content"] for m in data["messages"]] == ["earlier", "later"]
    one = await api.ok("GET", f"/api/sessions/{session['id']}", bob)
    assert [m["content"] for m in one["messages"]] == ["earlier", "later"]


async def test_list_messages_default_and_max_limit_is_1000(api):
    bob = await api.register("bob")
    model = await create_model(api, bob)
    session = await create_session(api, bob, model["id"])
    sid = session["id"]
    ids = await seed(api, sid, *[("user" if i % 2 == 0 else "assistant", f"m{i}")
                                 for i in range(1005)])
    data = await api.ok("GET", f"/api/chat/sessions/{sid}/messages", bob)
    assert len(data["messages"]) == 1000
    assert [m["id"] for m in data["messages"]] == ids[:1000]
    assert data["pagination"] == {"page": 1, "limit": 1000, "total": 1005, "totalPages": 2}
    page2 = await api.ok("GET", f"/api/chat/sessions/{sid}/messages", bob, params={"page": "2"})
    assert [m["content"] for m in page2["messages"]] == [f"m{i}" for i in range(1000, 1005)]
    full = await api.ok("GET", f"/api/chat/sessions/{sid}/messages", bob,
                        params={"limit": "1000"})
    assert len(full["messages"]) == 1000
    small = await api.ok("GET", f"/api/chat/sessions/{sid}/messages", bob,
                         params={"limit": "10", "page": "3"})
    assert [m["content"] for m in small["messages"]] == [f"m{i}" for i in range(20, 30)]
    assert small["pagination"] == {"page": 3, "limit": 10, "total": 1005, "totalPages": 101}
    summary = await api.ok("GET", "/api/sessions", bob)
    assert summary["sessions"][0]["_count"] == {"messages": 1005}


@pytest.mark.parametrize("params, field", [
    ({"limit": "1001"}, "limit"), ({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"),
    ({"limit": "-1"}, "limit"), ({"page": "0"}, "page"), ({"page": "a"}, "page"),
    ({"page": "1.0"}, "page"),
])
async def test_list_messages_bad_paging_is_400(api, params, field):
    bob = await api.register("bob")
    model = await create_model(api, bob)
    session = await create_session(api, bob, model["id"])
    await api.error("GET", f"/api/chat/sessions/{session['id']}/messages", bob, 400, field,
                    params=params)


async def test_list_messages_errors(api):
    bob = await api.register("bob")
    await api.error("GET", "/api/chat/sessions/9999/messages", bob, 404, SESSION_NOT_FOUND)
    await api.error("GET", "/api/chat/sessions/abc/messages", bob, 400, "Invalid session ID")
