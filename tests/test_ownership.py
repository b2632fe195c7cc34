"""Ownership: every route that takes an id answers 404 for someone else's data, and 401 without
a token, and leaves the owner's data exactly as it was."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aichat.http.appkeys import db_key
from aichat.store import messages as messages_store

URL = "https://api.example.com/v1/chat/completions"
MODEL_NOT_FOUND = "Model configuration not found"
SESSION_NOT_FOUND = "Chat session not found"
TABLES = ("users", "model_configs", "chat_sessions", "messages", "usage_metrics")


@dataclass
class World:
    model: int  # alice's personal model
    session: int  # alice's session, using it
    system: int  # a system model made by the admin


async def build(api) -> World:
    alice = await api.register("alice")
    await api.register("bob")
    model = await api.ok("POST", "/api/models", alice, json={
        "name": "alice-model", "apiUrl": URL, "apiKey": "sk-alice", "supportsImages": True})
    session = await api.ok("POST", "/api/sessions", alice,
                           json={"modelConfigId": model["id"], "title": "alice's chat"})
    system = await api.ok("POST", "/api/models/system", "admin", json={
        "name": "system-model", "apiUrl": URL, "apiKey": "sk-system"})
    db = api.client.app[db_key]
    async with db.transaction() as tx:
        await tx.call(messages_store.add, session["id"], "user", "alice's secret")
        reply = await tx.call(messages_store.add, session["id"], "assistant", "the reply")
        await tx.insert(
            "INSERT INTO usage_metrics (session_id, message_id, model, prompt_tokens,"
            " completion_tokens, total_tokens) VALUES (?,?,?,?,?,?)",
            (session["id"], reply, "alice-model", 3, 4, 7))
    return World(model["id"], session["id"], system["id"])


async def dump(api) -> dict[str, list[tuple]]:
    return {t: await api.rows(f"SELECT * FROM {t} ORDER BY 1") for t in TABLES}


async def owner_view(api, w: World) -> tuple:
    return (await api.ok("GET", "/api/models", "alice"),
            await api.ok("GET", f"/api/models/{w.model}", "alice"),
            await api.ok("GET", "/api/sessions", "alice"),
            await api.ok("GET", f"/api/sessions/{w.session}", "alice"),
            await api.ok("GET", f"/api/chat/sessions/{w.session}/messages", "alice"))


def model_update(w: World) -> dict:
    return {"name": "stolen", "apiUrl": "https://evil.example/v1", "apiKey": "sk-evil",
            "supportsImages": False}


# (method, path template, body factory, expected message). Every route taking one of A's ids.
ROUTES = [
    ("GET", "/api/models/{model}", None, MODEL_NOT_FOUND),
    ("PUT", "/api/models/{model}", model_update, MODEL_NOT_FOUND),
    ("PUT", "/api/models/{model}", lambda w: {"name": "stolen"}, MODEL_NOT_FOUND),
    ("DELETE", "/api/models/{model}", None, MODEL_NOT_FOUND),
    ("GET", "/api/sessions/{session}", None, SESSION_NOT_FOUND),
    ("PUT", "/api/sessions/{session}", lambda w: {"title": "stolen"}, SESSION_NOT_FOUND),
    ("DELETE", "/api/sessions/{session}", None, SESSION_NOT_FOUND),
    ("DELETE", "/api/sessions/{session}/messages", None, SESSION_NOT_FOUND),
    ("GET", "/api/chat/sessions/{session}/messages", None, SESSION_NOT_FOUND),
    ("POST", "/api/sessions", lambda w: {"modelConfigId": w.model, "title": "t"},
     MODEL_NOT_FOUND),
]
# Admin-only routes given A's personal model, and personal routes given a system model.
CROSS_ROUTES = [
    ("admin", "PUT", "/api/models/system/{model}", model_update, MODEL_NOT_FOUND),
    ("admin", "DELETE", "/api/models/system/{model}", None, MODEL_NOT_FOUND),
    ("bob", "PUT", "/api/models/{system}", model_update, MODEL_NOT_FOUND),
    ("bob", "DELETE", "/api/models/{system}", None, MODEL_NOT_FOUND),
    ("alice", "PUT", "/api/models/{system}", model_update, MODEL_NOT_FOUND),
    ("alice", "DELETE", "/api/models/{system}", None, MODEL_NOT_FOUND),
    ("admin", "PUT", "/api/models/{system}", model_update, MODEL_NOT_FOUND),
    ("admin", "DELETE", "/api/models/{system}", None, MODEL_NOT_FOUND),
]


def ids(route: tuple) -> str:
    return f"{route[0]} {route[1]}" + ("" if route[2] is None else " (body)")


def fill(path: str, w: World) -> str:
    return path.format(model=w.model, session=w.session, system=w.system)


@pytest.mark.parametrize("actor", ["bob", "admin"])
@pytest.mark.parametrize("method, path, body, message", ROUTES, ids=[ids(r) for r in ROUTES])
async def test_another_user_gets_404_and_changes_nothing(api, actor, method, path, body, message):
    w = await build(api)
    before_db, before_view = await dump(api), await owner_view(api, w)
    payload = None if body is None else body(w)
    status, answer = await api.call(method, fill(path, w), actor, json=payload)
    assert status == 404, (status, answer)
    assert answer == {"success": False, "error": message, "data": None}
    # Not even the wording tells an existing id from a missing one.
    nobody = World(999999, 999999, 999999)
    missing = None if body is None else body(nobody)
    assert await api.call(method, fill(path, nobody), actor, json=missing) == (status, answer)
    assert await dump(api) == before_db
    assert await owner_view(api, w) == before_view


@pytest.mark.parametrize("actor, method, path, body, message", CROSS_ROUTES,
                         ids=[f"{r[0]} {r[1]} {r[2]}" for r in CROSS_ROUTES])
async def test_models_change_only_through_their_own_routes(api, actor, method, path, body,
                                                          message):
    w = await build(api)
    before_db, before_view = await dump(api), await owner_view(api, w)
    system_before = await api.ok("GET", f"/api/models/{w.system}", "bob")
    payload = None if body is None else body(w)
    await api.error(method, fill(path, w), actor, 404, message, json=payload)
    assert await dump(api) == before_db
    assert await owner_view(api, w) == before_view
    assert await api.ok("GET", f"/api/models/{w.system}", "bob") == system_before


async def test_the_owner_still_can_do_everything_afterwards(api):
    w = await build(api)
    for method, path, body, _ in ROUTES:
        await api.call(method, fill(path, w), "bob", json=None if body is None else body(w))
    view = await api.ok("GET", f"/api/sessions/{w.session}", "alice")
    assert view["title"] == "alice's chat" and view["_count"] == {"messages": 2}
    assert [m["content"] for m in view["messages"]] == ["alice's secret", "the reply"]
    assert view["messages"][1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4,
                                            "total_tokens": 7}
    renamed = await api.ok("PUT", f"/api/sessions/{w.session}", "alice", json={"title": "mine"})
    assert renamed["title"] == "mine"
    await api.ok("DELETE", f"/api/sessions/{w.session}/messages", "alice")
    await api.ok("DELETE", f"/api/sessions/{w.session}", "alice")
    await api.ok("DELETE", f"/api/models/{w.model}", "alice")
    after = await dump(api)
    assert after["chat_sessions"] == [] and len(after["model_configs"]) == 1


@pytest.mark.parametrize("method, path, body, message", ROUTES, ids=[ids(r) for r in ROUTES])
async def test_every_route_needs_a_token(api, method, path, body, message):
    w = await build(api)
    before = await dump(api)
    payload = None if body is None else body(w)
    await api.error(method, fill(path, w), None, 401, "Missing or invalid authorization header",
                    json=payload)
    await api.error(method, fill(path, w), None, 401, "Missing or invalid authorization header",
                    json=payload, headers={"Authorization": "Token abc"})
    await api.error(method, fill(path, w), None, 401, "Invalid or expired token",
                    json=payload, headers={"Authorization": "Bearer abc.def.ghi"})
    assert await dump(api) == before
