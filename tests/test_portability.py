"""Export and import (docs/api.md §12): the JSON document and the Markdown zip, streamed and
never holding a key; the admin's export of a user, audited; imports of our export and of
ChatGPT's conversations.json, checked whole before one transaction writes them (a bad file
leaves nothing), within `max_import_bytes`; and the round trip export -> import -> export."""

from __future__ import annotations

import copy
import io
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aichat.portability import document
from aichat.store import portability as store
from aichat.timeutil import iso

from .fake_upstream import Reply
from .helpers import Api, User

FIXTURE = Path(__file__).parent / "fixtures" / "chatgpt_conversations.json"
SECRET = "sk-alice-SECRET-0001"  # the chat fixture's model key
URL_SECRET = "sk-in-url-SECRET-0002"
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
NO_SKIPS = {"systemMessages": 0, "toolMessages": 0, "hiddenMessages": 0, "otherRoles": 0,
            "nonTextMessages": 0, "nonTextParts": 0, "emptyMessages": 0, "otherBranches": 0,
            "emptyConversations": 0}


async def download(api: Api, user: User | None, path: str = "/api/export",
                   **params: str) -> tuple[int, Any, bytes]:
    headers = user.headers if user is not None else {}
    async with api.client.get(path, headers=headers, params=params) as response:
        return response.status, response.headers, await response.read()


async def export(api: Api, user: User, path: str = "/api/export") -> dict[str, Any]:
    status, headers, body = await download(api, user, path)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["Content-Disposition"].startswith('attachment; filename="aichat-export-')
    assert headers["Content-Disposition"].endswith('.json"')
    return json.loads(body)


async def import_(api: Api, user: User, payload: Any) -> dict[str, Any]:
    return await api.ok("POST", "/api/import", user, json=payload)


async def counts(api: Api) -> tuple[int, int]:
    sessions = await api.db.value("SELECT COUNT(*) FROM chat_sessions")
    messages = await api.db.value("SELECT COUNT(*) FROM messages")
    return sessions, messages


async def add_model(api: Api, user: User | str, name: str, url: str = "http://127.0.0.1:9/v1",
                    path: str = "/api/models") -> dict[str, Any]:
    return await api.ok("POST", path, user, json={"name": name, "apiUrl": url,
                                                  "apiKey": f"sk-{name}-key"})


def without_usage(sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Usage is exported for information and not imported (docs/api.md §12)."""
    sessions = copy.deepcopy(sessions)
    for session in sessions:
        for message in session["messages"]:
            message["usage"] = None
    return sessions


@pytest.fixture
async def history(chat):
    """Alice (the chat fixture) with two sessions: one exchange with reasoning and usage, one
    with a reply still being generated; a personal theme; a second model whose URL carries a
    key; and bob, whose chats must not appear in her export."""
    api, alice = chat.api, chat.user
    chat.upstream.queue(Reply(tokens=["Hello", ", ", "world!"], reasoning=["Let me ", "think."],
                              usage=USAGE))
    await chat.stream("Hi there")
    await api.ok("PUT", f"/api/sessions/{chat.session_id}", alice,
                 json={"title": "First / ../chat"})
    second = await api.ok("POST", "/api/sessions", alice,
                          json={"modelConfigId": chat.model["id"], "title": "第二个 chat"})
    async with api.db.transaction() as tx:
        await tx.execute("INSERT INTO messages (session_id, role, content) VALUES (?, ?, ?)",
                         (second["id"], "user", "Still thinking?"))
        await tx.execute("INSERT INTO messages (session_id, role, content, status)"
                         " VALUES (?, ?, ?, ?)", (second["id"], "assistant", "", "streaming"))
    await api.ok("PUT", "/api/settings/personal", alice, json={"theme": "dark"})
    await api.ok("POST", "/api/models", alice, json={
        "name": "keyed-url", "apiUrl": f"https://me:pw@llm.example.com/v1/chat?key={URL_SECRET}",
        "apiKey": "sk-another-SECRET", "inputPricePerMTok": 2.5})
    bob = await api.register("bob")
    bob_model = await add_model(api, bob, "bob-model")
    await api.ok("POST", "/api/sessions", bob,
                 json={"modelConfigId": bob_model["id"], "title": "Bob's secret chat"})
    return chat


# --- access and input ---

async def test_every_route_needs_a_token(api):
    for method, path in (("GET", "/api/export"), ("POST", "/api/import"),
                         ("GET", "/api/users/1/export")):
        await api.error(method, path, None, 401, "Missing or invalid authorization header")


async def test_a_bad_format_names_format(api):
    admin = api.users["admin"]
    await api.error("GET", "/api/export", admin, 400, "format", params={"format": "pdf"})
    await api.error("GET", f"/api/users/{admin.id}/export", admin, 400, "format",
                    params={"format": "JSON"})
    status, _, body = await download(api, admin, format="")  # empty: the default
    assert status == 200 and json.loads(body)["format"] == "aichat-export"


# --- the JSON document ---

async def test_export_holds_the_callers_data_and_no_key(history):
    api, alice = history.api, history.user
    status, headers, raw = await download(api, alice)
    assert status == 200
    for secret in (SECRET, URL_SECRET, "sk-another-SECRET", "pw@", "Bob's secret chat"):
        assert secret.encode() not in raw
    document = json.loads(raw)
    assert document["format"] == "aichat-export" and document["version"] == 1
    assert document["exportedAt"].endswith("Z")
    assert document["user"] == {"username": "alice"}
    assert document["models"] == [
        {"name": "fake-model", "apiUrl": history.upstream.url, "supportsImages": True,
         "inputPricePerMTok": None, "outputPricePerMTok": None},
        {"name": "keyed-url", "apiUrl": "https://llm.example.com/v1/chat",
         "supportsImages": False, "inputPricePerMTok": 2.5, "outputPricePerMTok": None}]
    assert document["settings"] == {"context_token_limit": None, "theme": "dark"}
    first, second = document["sessions"]
    assert (first["title"], first["model"]) == ("First / ../chat", "fake-model")
    user, reply = first["messages"]
    assert {k: user[k] for k in ("role", "content", "reasoning", "status", "usage")} == {
        "role": "user", "content": "Hi there", "reasoning": None, "status": "complete",
        "usage": None}
    assert {k: reply[k] for k in ("role", "content", "reasoning", "status", "usage")} == {
        "role": "assistant", "content": "Hello, world!", "reasoning": "Let me think.",
        "status": "complete", "usage": USAGE}
    assert sorted(reply) == ["content", "createdAt", "reasoning", "role", "status", "usage"]
    assert user["createdAt"] <= reply["createdAt"] and reply["createdAt"].endswith("Z")
    # The reply being generated is not exported; the user message before it is.
    assert second["title"] == "第二个 chat"
    assert [m["content"] for m in second["messages"]] == ["Still thinking?"]


async def test_export_reads_in_pages(history, monkeypatch):
    """Pages of 1 session and 2 message rows, text groups of 10 characters: the same
    document as one read."""
    api, alice = history.api, history.user
    whole = await export(api, alice)
    monkeypatch.setattr(store, "SESSION_PAGE", 1)
    monkeypatch.setattr(store, "MESSAGE_PAGE", 2)
    monkeypatch.setattr(store, "TEXT_BUDGET", 10)
    paged = await export(api, alice)
    assert paged["sessions"] == whole["sessions"]


async def test_a_failure_part_way_cuts_the_transfer_short(history, monkeypatch):
    """Once the headers are out, a fault can only end the body early: the client must see an
    incomplete transfer, not a document that parses."""
    api, alice = history.api, history.user
    monkeypatch.setattr(document, "FLUSH_BYTES", 1)  # every message goes out at once
    reads = store.messages

    async def failing(db, session_id):
        async for message in reads(db, session_id):
            yield message
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(store, "messages", failing)
    async with api.client.get("/api/export", headers=alice.headers) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    monkeypatch.setattr(store, "messages", reads)
    assert (await export(api, alice))["sessions"]  # the server carries on


# --- the Markdown zip ---

async def test_markdown_zip_has_one_safe_file_per_session(history):
    api, alice = history.api, history.user
    status, headers, raw = await download(api, alice, format="markdown")
    assert status == 200
    assert headers["Content-Type"] == "application/zip"
    assert headers["Content-Disposition"].endswith('.zip"')
    assert SECRET.encode() not in raw
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names == ["0001-First-chat.md", "0002-第二个-chat.md"]
        first = archive.read(names[0]).decode()
        second = archive.read(names[1]).decode()
    assert first.startswith("# First / ../chat\n")
    assert "## User · " in first and "Hi there" in first
    assert "## Assistant · " in first and "Hello, world!" in first
    assert "Let me think." in first and "15 total" in first
    assert "Still thinking?" in second and "## Assistant" not in second


async def test_markdown_zip_of_no_sessions_is_an_empty_archive(api):
    status, _, raw = await download(api, api.users["admin"], format="markdown")
    assert status == 200
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        assert archive.namelist() == []


# --- the admin's export of a user ---

async def test_admin_export_is_admin_only_audited_and_the_same_document(history):
    api, alice = history.api, history.user
    admin, bob = api.users["admin"], api.users["bob"]
    await api.error("GET", f"/api/users/{alice.id}/export", bob, 403, "Admin access required")
    await api.error("GET", "/api/users/999999/export", admin, 404, "User not found")
    await api.error("GET", "/api/users/abc/export", admin, 400, "Invalid user ID")
    before = await api.db.value("SELECT COUNT(*) FROM audit_log WHERE action = 'user_export'")
    assert before == 0  # the refusals above recorded nothing

    by_admin = await export(api, admin, f"/api/users/{alice.id}/export")
    own = await export(api, alice)
    by_admin.pop("exportedAt"), own.pop("exportedAt")
    assert by_admin == own
    status, _, raw = await download(api, admin, f"/api/users/{alice.id}/export",
                                    format="markdown")
    assert status == 200 and zipfile.ZipFile(io.BytesIO(raw)).namelist()

    events = (await api.ok("GET", "/api/admin/audit", admin,
                           params={"action": "user_export"}))["events"]
    assert [(e["actorUserId"], e["target"], e["detail"]) for e in events] == [
        (admin.id, f"user:{alice.id}", {"username": "alice", "format": "markdown"}),
        (admin.id, f"user:{alice.id}", {"username": "alice", "format": "json"})]


# --- import ---

async def test_round_trip_gives_the_same_sessions(history):
    api, alice = history.api, history.user
    first = await export(api, alice)
    carol = await api.register("carol")
    await add_model(api, carol, "fake-model")
    report = await import_(api, carol, first)
    assert report == {"format": "aichat-export", "sessions": 2, "messages": 3,
                      "skipped": NO_SKIPS}
    again = await export(api, carol)
    assert again["sessions"] == without_usage(first["sessions"])
    # A second import adds sessions; it never replaces any.
    await import_(api, carol, first)
    assert len((await export(api, carol))["sessions"]) == 4
    # Neither the models (no keys) nor the settings are imported.
    assert [m["name"] for m in again["models"]] == ["fake-model"]
    assert again["settings"] == {"context_token_limit": None, "theme": None}


async def test_import_keeps_titles_times_and_order(api, monkeypatch):
    admin = api.users["admin"]
    await add_model(api, admin, "m")
    same = "2024-02-29T23:59:59.999Z"
    sessions: list[dict[str, Any]] = [
        {"title": f"chat {i}", "createdAt": same, "model": "m", "messages": [
            {"role": "user", "content": f"question {i}", "createdAt": same},
            {"role": "assistant", "content": f"answer {i}", "reasoning": "why",
             "status": "stopped", "createdAt": "2024-03-01T00:00:00+01:00"}]}
        for i in range(3)]
    sessions.append({"title": "  ", "createdAt": None, "model": None, "messages": []})
    sessions.append({"title": "x" * 300, "createdAt": "2001-01-01T00:00:00Z", "model": None,
                     "messages": [{"role": "user", "content": "nul\x00here"}]})
    await import_(api, admin, {"format": "aichat-export", "version": 1, "sessions": sessions})
    exported = (await export(api, admin))["sessions"]
    assert [s["title"] for s in exported] == [
        "x" * 199 + "\u2026", "chat 0", "chat 1", "chat 2", "Imported chat"]
    assert exported[1]["messages"] == [
        {"role": "user", "content": "question 0", "reasoning": None, "status": "complete",
         "createdAt": same, "usage": None},
        {"role": "assistant", "content": "answer 0", "reasoning": "why", "status": "stopped",
         # 23:00Z is earlier than the question: times never go back
         "createdAt": same, "usage": None}]
    assert exported[0]["createdAt"] == "2001-01-01T00:00:00.000Z"
    assert exported[0]["messages"][0]["content"] == "nul\ufffdhere"
    assert exported[0]["messages"][0]["createdAt"] == "2001-01-01T00:00:00.000Z"
    # Paged one row at a time, ties in time and all: the same.
    monkeypatch.setattr(store, "SESSION_PAGE", 1)
    monkeypatch.setattr(store, "MESSAGE_PAGE", 1)
    assert (await export(api, admin))["sessions"] == exported


def moment(seconds: float) -> str:
    return iso(datetime.fromtimestamp(seconds, UTC))


async def test_chatgpt_import_takes_the_current_branch(api):
    admin = api.users["admin"]
    await add_model(api, admin, "gpt-4o")
    await add_model(api, admin, "other")
    conversations = json.loads(FIXTURE.read_text(encoding="utf-8"))
    report = await import_(api, admin, conversations)
    assert report == {"format": "chatgpt", "sessions": 2, "messages": 6, "skipped": {
        **NO_SKIPS, "systemMessages": 2, "toolMessages": 2, "hiddenMessages": 1,
        "nonTextMessages": 1, "nonTextParts": 1, "emptyMessages": 1, "otherBranches": 2,
        "emptyConversations": 1}}
    first, second = (await export(api, admin))["sessions"]
    start = conversations[0]["create_time"]
    assert first["title"] == "列表推导式 and an edited question"
    assert first["createdAt"] == moment(start)
    assert first["model"] == "gpt-4o"  # the conversation's model, which admin has
    assert [(m["role"], m["content"]) for m in first["messages"]] == [
        ("user", "如何在 Python 中使用列表推导式？"),
        ("assistant", conversations[0]["mapping"]["bbb20001-a1"]["message"]["content"]["parts"][0]),
        ("user", "这张图里的代码有什么问题？"),  # the edited question, without its image
        ("assistant", "代码没有问题：输出是 `[0, 1, 2]`。")]
    assert [m["createdAt"] for m in first["messages"]] == [
        moment(start - 0.123456 + 10.5), moment(start - 0.123456 + 12.25),
        moment(start - 0.123456 + 120), moment(start - 0.123456 + 123.5)]
    assert all(m["status"] == "complete" and m["reasoning"] is None for m in first["messages"])
    assert second["title"] == "Weekend plans"
    assert second["model"] == "gpt-4o"  # o3 is no model of admin's: the oldest own one
    assert [(m["role"], m["content"]) for m in second["messages"]] == [
        ("user", "Any ideas for a rainy Saturday?"), ("assistant", "A museum, then a film.")]
    # No create_time: the previous message's.
    assert second["messages"][1]["createdAt"] == second["messages"][0]["createdAt"]


async def test_chatgpt_without_current_node_takes_the_newest_leaf(api):
    admin = api.users["admin"]
    await add_model(api, admin, "m")
    conversation = json.loads(FIXTURE.read_text(encoding="utf-8"))[0]
    del conversation["current_node"]
    conversation["mapping"]["ccc30002-a2-old"]["message"]["create_time"] += 10_000
    report = await import_(api, admin, [conversation])
    assert report["messages"] == 4 and report["skipped"]["otherBranches"] == 4
    contents = [m["content"] for m in (await export(api, admin))["sessions"][0]["messages"]]
    assert contents[2:] == ["And dict comprehensions?", "Use {k: v for k, v in pairs}."]


async def test_imported_sessions_get_a_model_the_user_can_use(api):
    admin = api.users["admin"]
    shared = await add_model(api, "admin", "shared", path="/api/models/system")
    dave = await api.register("dave")
    document = {"format": "aichat-export", "version": 1, "sessions": [
        {"title": t, "createdAt": None, "model": m, "messages": []}
        for t, m in (("a", "shared"), ("b", "missing"), ("c", None))]}
    # No model of dave's own: the system one for every session.
    await import_(api, dave, document)
    rows = await api.rows("SELECT title, model_config_id FROM chat_sessions"
                          " WHERE user_id = ? ORDER BY id", (dave.id,))
    assert rows == [("a", shared["id"]), ("b", shared["id"]), ("c", shared["id"])]
    mine = await add_model(api, dave, "mine")
    later = await add_model(api, dave, "later")
    await import_(api, dave, document)
    rows = await api.rows("SELECT model_config_id FROM chat_sessions WHERE user_id = ?"
                          " ORDER BY id", (dave.id,))
    assert [r[0] for r in rows[3:]] == [shared["id"], mine["id"], mine["id"]]
    assert later["id"] not in [r[0] for r in rows]
    # A user with no model at all, and no system one: nothing to attach the chats to.
    await api.execute("DELETE FROM chat_sessions")
    await api.execute("DELETE FROM model_configs")
    before = await counts(api)
    await api.error("POST", "/api/import", admin, 400, "needs a model", json=document)
    assert await counts(api) == before
    # An empty file needs none.
    assert (await import_(api, admin, []))["sessions"] == 0


def _valid_export() -> dict[str, Any]:
    return {"format": "aichat-export", "version": 1, "sessions": [
        {"title": f"s{i}", "createdAt": "2025-01-01T00:00:00.000Z", "model": None,
         "messages": [{"role": "user" if j % 2 == 0 else "assistant", "content": f"m{j}",
                       "createdAt": "2025-01-01T00:00:01.000Z"} for j in range(6)]}
        for i in range(3)]}


def _deep(path: list[Any], value: Any, base: Any = None) -> Any:
    body = copy.deepcopy(base if base is not None else _valid_export())
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


def _chatgpt() -> list[Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _cycle() -> list[Any]:
    conversations = _chatgpt()
    conversations[0]["mapping"]["client-created-root"]["parent"] = "ddd40004-a2"
    return conversations


MIB = 1024 * 1024  # max_reply_chars by default: an imported message's cap

BAD_FILES: list[tuple[Any, str]] = [
    (b'{"format": "aichat-export", "sessions": [', "Invalid JSON body"),
    (b"[1, 2", "Invalid JSON body"),
    (b"NaN", "Invalid JSON body"),
    (b'"a string"', "neither an aichat export"),
    ({"sessions": []}, "neither an aichat export"),
    ({"format": "other", "version": 1, "sessions": []}, 'format must be "aichat-export"'),
    ({"format": "aichat-export", "version": 2, "sessions": []}, "version must be 1"),
    ({"format": "aichat-export", "version": 1, "sessions": {}}, "sessions must be a list"),
    (_deep(["sessions", 2, "messages", 5, "role"], "system"),
     "sessions[2].messages[5].role must be user or assistant"),
    (_deep(["sessions", 2, "messages", 4, "content"], "x" * (MIB + 1)),
     f"sessions[2].messages[4].content must be at most {MIB} characters"),
    (_deep(["sessions", 2, "messages", 4, "content"], "   "),
     "sessions[2].messages[4].content must not be blank"),
    (_deep(["sessions", 1, "messages", 3, "status"], "streaming"),
     "sessions[1].messages[3].status must be one of"),
    (_deep(["sessions", 1, "messages", 3, "createdAt"], "yesterday"),
     "sessions[1].messages[3].createdAt must be an ISO date-time"),
    (_deep(["sessions", 2, "model"], 7), "sessions[2].model must be a string"),
    ([1], "conversations[0] must be an object"),
    (_deep([2, "mapping", "f0000001-sys", "parent"], "nowhere", _chatgpt()),
     'conversations[2].mapping["f0000001-sys"].parent must name a node'),
    (_deep([1, "mapping", "e0000004-empty", "message", "content", "parts"], "x", _chatgpt()),
     'conversations[1].mapping["e0000004-empty"].message.content.parts must be a list'),
    (_deep([0, "mapping", "ccc30001-u2-old", "message", "author"], None, _chatgpt()),
     'mapping["ccc30001-u2-old"].message.author must be an object'),  # off the branch too
    (_deep([1, "current_node"], "gone", _chatgpt()),
     "conversations[1].current_node must name a node of mapping"),
    (_deep([1, "create_time"], "2024", _chatgpt()), "conversations[1].create_time must be"),
    (_cycle(), "conversations[0].mapping must be a tree"),
]


async def test_a_bad_file_changes_nothing(api):
    admin = api.users["admin"]
    await add_model(api, admin, "m")
    await import_(api, admin, _valid_export())
    before = await counts(api)
    assert before == (3, 18)
    for body, message in BAD_FILES:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        await api.error("POST", "/api/import", admin, 400, message, data=raw,
                        headers={"Content-Type": "application/json"})
        assert await counts(api) == before, message


async def test_reply_length_follows_max_reply_chars(api):
    admin = api.users["admin"]
    await add_model(api, admin, "m")
    await api.ok("PUT", "/api/settings/system", admin, json={"max_reply_chars": 1000})
    body = _deep(["sessions", 0, "messages", 1], {
        "role": "assistant", "content": "a" * 600, "reasoning": "r" * 401})
    await api.error("POST", "/api/import", admin, 400,
                    "sessions[0].messages[1] content and reasoning must be at most 1000",
                    json=body)
    body["sessions"][0]["messages"][1]["reasoning"] = "r" * 400
    assert (await import_(api, admin, body))["messages"] == 18


async def test_import_beyond_max_import_bytes_is_413(start):
    api = await start(app_mode="multi", max_import_bytes=1024)
    admin = await api.register("admin", "adminpass1")
    big = json.dumps(_valid_export() | {"padding": "x" * 1024}).encode()
    await api.error("POST", "/api/import", admin, 413, "Request body too large", data=big,
                    headers={"Content-Type": "application/json"})

    async def chunked():  # no Content-Length: refused once the read passes the cap
        for start_at in range(0, len(big), 100):
            yield big[start_at:start_at + 100]

    await api.error("POST", "/api/import", admin, 413, "Request body too large",
                    data=chunked(), headers={"Content-Type": "application/json"})
    assert await counts(api) == (0, 0)
