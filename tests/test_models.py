"""/api/models: personal models (owner only), system models (admins write) and key secrecy."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

import pytest

from aichat.http.appkeys import cipher_key, db_key
from aichat.security.crypto import DecryptError
from aichat.store.models import upstream

URL = "https://api.example.com/v1/chat/completions"
KEY = "sk-test-PLAINTEXT-123456"
KEY2 = "sk-test-PLAINTEXT-SECOND-987654"
MODEL_FIELDS = {"id", "userId", "name", "apiUrl", "apiKey", "supportsImages", "createdAt",
                "inputPricePerMTok", "outputPricePerMTok"}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
NOT_FOUND = "Model configuration not found"
URL_RULE = "Invalid API URL format"


def model_body(name: str = "gpt-4o", **overrides) -> dict:
    return {"name": name, "apiUrl": URL, "apiKey": KEY, **overrides}


async def create(api, user, name: str = "gpt-4o", **overrides) -> dict:
    return await api.ok("POST", "/api/models", user, json=model_body(name, **overrides))


async def create_system(api, name: str = "sys-model", **overrides) -> dict:
    return await api.ok("POST", "/api/models/system", "admin", json=model_body(name, **overrides))


async def new_session(api, user, model_id: int) -> dict:
    return await api.ok("POST", "/api/sessions", user, json={"modelConfigId": model_id})


async def query(api, sql: str, params: tuple = ()) -> list[tuple]:
    return await api.rows(sql, params)


async def models_table(api) -> list[tuple]:
    return await query(api, "SELECT * FROM model_configs ORDER BY id")


async def stored_key(api, model_id: int) -> str:
    return (await query(api, "SELECT api_key FROM model_configs WHERE id = ?", (model_id,)))[0][0]


def assert_model(model: dict, *, user_id, name: str, api_url: str = URL,
                 images: bool = False) -> None:
    assert set(model) == MODEL_FIELDS, model
    assert type(model["id"]) is int and model["id"] > 0
    assert model["userId"] == user_id
    assert model["name"] == name and model["apiUrl"] == api_url
    assert model["apiKey"] == ""
    assert model["supportsImages"] is images
    assert TIMESTAMP.match(model["createdAt"]), model["createdAt"]


# --- access ---

ROUTES = [
    ("GET", "/api/models", None), ("POST", "/api/models", model_body()),
    ("GET", "/api/models/1", None), ("PUT", "/api/models/1", {"name": "x"}),
    ("DELETE", "/api/models/1", None), ("GET", "/api/models/system/list", None),
    ("POST", "/api/models/system", model_body()), ("PUT", "/api/models/system/1", {"name": "x"}),
    ("DELETE", "/api/models/system/1", None),
]
SYSTEM_ROUTES = [r for r in ROUTES if "/system" in r[1]]


@pytest.mark.parametrize("method, path, body", ROUTES)
async def test_model_routes_need_a_token(api, method, path, body):
    await create_system(api)
    before = await models_table(api)
    await api.error(method, path, None, 401, "Missing or invalid authorization header", json=body)
    await api.error(method, path, None, 401, "Invalid or expired token", json=body,
                    headers={"Authorization": "Bearer not-a-jwt"})
    assert await models_table(api) == before


@pytest.mark.parametrize("method, path, body", SYSTEM_ROUTES)
async def test_system_routes_are_admin_only(api, method, path, body):
    bob = await api.register("bob")
    await create_system(api)
    before = await models_table(api)
    await api.error(method, path, bob, 403, "Admin access required", json=body)
    # 403 comes before validation (docs/api.md §1, check order).
    bad_path = path.replace("/1", "/abc")
    await api.error(method, bad_path, bob, 403, "Admin access required", json={"name": ""})
    assert await models_table(api) == before


# --- personal models: create, read, list ---

async def test_create_personal_model_returns_the_model_without_its_key(api):
    bob = await api.register("bob")
    status, body = await api.call("POST", "/api/models", bob, json=model_body())
    assert status == 200 and body["success"] is True
    model = body["data"]
    assert_model(model, user_id=bob.id, name="gpt-4o")
    assert KEY not in json.dumps(body)
    assert await api.ok("GET", f"/api/models/{model['id']}", bob) == model
    images = await create(api, bob, "vision", supportsImages=True)
    assert_model(images, user_id=bob.id, name="vision", images=True)
    plain = await create(api, bob, "plain", supportsImages=False)
    assert plain["supportsImages"] is False
    assert await query(api, "SELECT user_id, name, api_url, supports_images"
                            " FROM model_configs ORDER BY id") == [
        (bob.id, "gpt-4o", URL, 0), (bob.id, "vision", URL, 1), (bob.id, "plain", URL, 0)]


async def test_create_ignores_unknown_keys_and_a_forged_owner(api):
    bob = await api.register("bob")
    carol = await api.register("carol")
    model = await create(api, bob, userId=None, id=777, user_id=carol.id, extra={"a": 1})
    assert model["userId"] == bob.id and model["id"] != 777
    assert await query(api, "SELECT user_id FROM model_configs") == [(bob.id,)]


async def test_boundary_values_are_accepted(api):
    bob = await api.register("bob")
    long_url = "http://example.com:8080/" + "a" * (2048 - len("http://example.com:8080/"))
    assert len(long_url) == 2048
    model = await create(api, bob, "n" * 100, apiUrl=long_url, apiKey="k" * 4096)
    assert_model(model, user_id=bob.id, name="n" * 100, api_url=long_url)
    other = await create(api, bob, "q", apiUrl="https://h.example/v1/chat?x=1&y=2", apiKey="k")
    assert other["apiUrl"] == "https://h.example/v1/chat?x=1&y=2"
    local = await create(api, bob, "local", apiUrl="http://127.0.0.1:11434/v1/chat/completions")
    assert local["apiUrl"] == "http://127.0.0.1:11434/v1/chat/completions"


async def test_list_splits_personal_and_system_newest_first(api):
    bob = await api.register("bob")
    carol = await api.register("carol")
    m1 = await create(api, bob, "m1")
    s1 = await create_system(api, "s1")
    m2 = await create(api, bob, "m2", supportsImages=True)
    s2 = await create_system(api, "s2")
    c1 = await create(api, carol, "c1")
    a1 = await create(api, "admin", "a1")
    data = await api.ok("GET", "/api/models", bob)
    assert set(data) == {"personal", "system"}
    assert data["personal"] == [m2, m1]
    assert data["system"] == [s2, s1]
    for model in data["personal"] + data["system"]:
        assert set(model) == MODEL_FIELDS and model["apiKey"] == ""
    assert all(m["userId"] is None for m in data["system"])
    carol_view = await api.ok("GET", "/api/models", carol)
    assert carol_view == {"personal": [c1], "system": [s2, s1]}
    admin_view = await api.ok("GET", "/api/models", "admin")
    assert admin_view == {"personal": [a1], "system": [s2, s1]}
    dave = await api.register("dave")
    assert await api.ok("GET", "/api/models", dave) == {"personal": [], "system": [s2, s1]}


async def test_list_orders_by_creation_time_not_by_id(api):
    bob = await api.register("bob")
    first = await create(api, bob, "first")
    second = await create(api, bob, "second")
    await api.execute("UPDATE model_configs SET created_at = '2999-01-01T00:00:00.000Z'"
                      " WHERE id = ?", (first["id"],))
    names = [m["name"] for m in (await api.ok("GET", "/api/models", bob))["personal"]]
    assert names == ["first", "second"]
    assert second["id"] > first["id"]


async def test_get_one_model(api):
    bob = await api.register("bob")
    carol = await api.register("carol")
    mine = await create(api, bob)
    system = await create_system(api)
    theirs = await create(api, carol, "carols")
    assert await api.ok("GET", f"/api/models/{mine['id']}", bob) == mine
    got = await api.ok("GET", f"/api/models/{system['id']}", bob)
    assert got == system and got["userId"] is None
    await api.error("GET", f"/api/models/{theirs['id']}", bob, 404, NOT_FOUND)
    await api.error("GET", f"/api/models/{mine['id']}", "admin", 404, NOT_FOUND)
    await api.error("GET", "/api/models/9999", bob, 404, NOT_FOUND)
    await api.error("GET", "/api/models/0", bob, 404, NOT_FOUND)
    await api.error("GET", "/api/models/" + "9" * 25, bob, 404, NOT_FOUND)


@pytest.mark.parametrize("bad_id", ["abc", "-1", "1.5", "1e3", "0x10", "%201", "1a"])
async def test_bad_path_ids_are_400(api, bad_id):
    bob = await api.register("bob")
    await create(api, bob)
    await create_system(api)
    before = await models_table(api)
    await api.error("GET", f"/api/models/{bad_id}", bob, 400, "Invalid model ID")
    await api.error("PUT", f"/api/models/{bad_id}", bob, 400, "Invalid model ID",
                    json={"name": "renamed"})
    await api.error("DELETE", f"/api/models/{bad_id}", bob, 400, "Invalid model ID")
    await api.error("PUT", f"/api/models/system/{bad_id}", "admin", 400, "Invalid model ID",
                    json={"name": "renamed"})
    await api.error("DELETE", f"/api/models/system/{bad_id}", "admin", 400, "Invalid model ID")
    assert await models_table(api) == before


# --- validation ---

BAD_FIELDS = [
    ({"name": None}, "name"), ({"apiUrl": None}, "apiUrl"), ({"apiKey": None}, "apiKey"),
    ({"name": 5}, "name"), ({"name": ["gpt"]}, "name"), ({"name": True}, "name"),
    ({"name": ""}, "name"), ({"name": "   "}, "name"), ({"name": "\t\n"}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"apiKey": 123}, "apiKey"), ({"apiKey": ""}, "apiKey"), ({"apiKey": "k" * 4097}, "apiKey"),
    ({"apiKey": {"v": KEY}}, "apiKey"),
    ({"supportsImages": "true"}, "supportsImages"), ({"supportsImages": 1}, "supportsImages"),
    ({"supportsImages": 0}, "supportsImages"), ({"supportsImages": "yes"}, "supportsImages"),
]
BAD_URLS = [
    "", "ftp://example.com/v1", "/v1/chat/completions", "v1/chat/completions",
    "api.example.com/v1/chat/completions", "http://", "https://", "http:/example.com/v1",
    "https://exa mple.com/v1", "https://example.com/v1 ", " https://example.com/v1",
    "https://example.com/v1\n", "javascript:alert(1)", "file:///etc/passwd",
    "mailto:a@example.com", "https://example.com/" + "a" * 2029,  # 2049 characters
]
BAD_URL_TYPES = [5, ["https://example.com"], {"url": URL}, True]


def assert_url_error(error: str) -> None:
    # The only wording docs/api.md gives for apiUrl; naming the field is fine too.
    assert error == URL_RULE or "apiurl" in error.lower(), error


def without(body: dict, change: dict) -> dict:
    """Apply `change`; a None value removes the key (a missing field)."""
    out = dict(body)
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("change, field", BAD_FIELDS)
async def test_create_validation_names_the_field_and_writes_nothing(api, change, field):
    bob = await api.register("bob")
    await create(api, bob, "existing")
    before = await models_table(api)
    body = without(model_body("new-model"), change)
    await api.error("POST", "/api/models", bob, 400, field, json=body)
    await api.error("POST", "/api/models/system", "admin", 400, field, json=body)
    assert await models_table(api) == before


@pytest.mark.parametrize("bad_url", BAD_URLS + BAD_URL_TYPES)
async def test_create_rejects_bad_api_urls(api, bad_url):
    bob = await api.register("bob")
    before = await models_table(api)
    assert_url_error(await api.error("POST", "/api/models", bob, 400,
                                     json=model_body(apiUrl=bad_url)))
    assert_url_error(await api.error("POST", "/api/models/system", "admin", 400,
                                     json=model_body(apiUrl=bad_url)))
    assert await models_table(api) == before


@pytest.mark.parametrize("change, field", [c for c in BAD_FIELDS if None not in c[0].values()])
async def test_update_validation_names_the_field_and_changes_nothing(api, change, field):
    bob = await api.register("bob")
    model = await create(api, bob)
    system = await create_system(api)
    before = await models_table(api)
    await api.error("PUT", f"/api/models/{model['id']}", bob, 400, field, json=change)
    await api.error("PUT", f"/api/models/{model['id']}", bob, 400, field,
                    json={"name": "renamed", "supportsImages": True, **change})
    await api.error("PUT", f"/api/models/system/{system['id']}", "admin", 400, field,
                    json={"name": "renamed", **change})
    # Validation comes before existence (docs/api.md §1, check order).
    await api.error("PUT", "/api/models/9999", bob, 400, field, json=change)
    assert await models_table(api) == before


@pytest.mark.parametrize("bad_url", BAD_URLS + BAD_URL_TYPES)
async def test_update_rejects_bad_api_urls(api, bad_url):
    bob = await api.register("bob")
    model = await create(api, bob)
    system = await create_system(api)
    before = await models_table(api)
    assert_url_error(await api.error("PUT", f"/api/models/{model['id']}", bob, 400,
                                     json={"apiUrl": bad_url, "name": "renamed"}))
    assert_url_error(await api.error("PUT", f"/api/models/system/{system['id']}", "admin", 400,
                                     json={"apiUrl": bad_url}))
    assert await models_table(api) == before


MALFORMED = [b"{bad json", b"", b"[]", b"[1, 2]", b"null", b'"text"', b"42", b"true",
             b'{"name": "x", "apiUrl": "' + URL.encode() + b'", "apiKey": "k", "n": NaN}',
             b'{"name": "x",}', b"\xff\xfe{}"]


@pytest.mark.parametrize("raw", MALFORMED)
async def test_malformed_json_is_400_invalid_json_body(api, raw):
    bob = await api.register("bob")
    model = await create(api, bob)
    system = await create_system(api)
    before = await models_table(api)
    headers = {"Content-Type": "application/json"}
    for user, method, path in [(bob, "POST", "/api/models"),
                               (bob, "PUT", f"/api/models/{model['id']}"),
                               ("admin", "POST", "/api/models/system"),
                               ("admin", "PUT", f"/api/models/system/{system['id']}")]:
        await api.error(method, path, user, 400, "Invalid JSON body", data=raw, headers=headers)
    assert await models_table(api) == before


# --- names ---

async def test_duplicate_names(api):
    bob = await api.register("bob")
    carol = await api.register("carol")
    await create(api, bob, "gpt-4o")
    before = await models_table(api)
    await api.error("POST", "/api/models", bob, 409, "Model name already exists",
                    json=model_body("gpt-4o", apiKey="other"))
    assert await models_table(api) == before
    # Another user may use the same name; so may a system model and the admin's own models.
    carols = await create(api, carol, "gpt-4o")
    system = await create_system(api, "gpt-4o")
    admins = await create(api, "admin", "gpt-4o")
    assert carols["userId"] == carol.id and system["userId"] is None
    assert admins["userId"] == api.users["admin"].id
    # A personal model may share a system model's name the other way round too.
    await create_system(api, "shared")
    await create(api, bob, "shared")
    before = await models_table(api)
    await api.error("POST", "/api/models/system", "admin", 409,
                    "System model name already exists", json=model_body("gpt-4o"))
    assert await models_table(api) == before
    data = await api.ok("GET", "/api/models", bob)
    assert [m["name"] for m in data["personal"]] == ["shared", "gpt-4o"]
    assert [m["name"] for m in data["system"]] == ["shared", "gpt-4o"]


async def test_rename_clashes(api):
    bob = await api.register("bob")
    one = await create(api, bob, "one")
    two = await create(api, bob, "two")
    await create_system(api, "sys-a")
    sys_b = await create_system(api, "sys-b")
    before = await models_table(api)
    await api.error("PUT", f"/api/models/{two['id']}", bob, 409, "Model name already exists",
                    json={"name": "one", "apiKey": "new-key"})
    await api.error("PUT", f"/api/models/system/{sys_b['id']}", "admin", 409,
                    "System model name already exists", json={"name": "sys-a"})
    assert await models_table(api) == before
    # Keeping one's own name, or taking a system model's name, is no clash.
    same = await api.ok("PUT", f"/api/models/{one['id']}", bob, json={"name": "one"})
    assert same["name"] == "one"
    taken = await api.ok("PUT", f"/api/models/{two['id']}", bob, json={"name": "sys-a"})
    assert taken["name"] == "sys-a"
    sys_same = await api.ok("PUT", f"/api/models/system/{sys_b['id']}", "admin",
                            json={"name": "sys-b"})
    assert sys_same["name"] == "sys-b"
    freed = await api.ok("PUT", f"/api/models/{one['id']}", bob, json={"name": "two"})
    assert freed["name"] == "two"


# --- update ---

async def test_update_is_partial_and_keeps_the_key_unless_given(api):
    bob = await api.register("bob")
    model = await create(api, bob, "orig", supportsImages=True)
    cipher_before = await stored_key(api, model["id"])

    renamed = await api.ok("PUT", f"/api/models/{model['id']}", bob, json={"name": "renamed"})
    assert renamed == {**model, "name": "renamed"}
    assert await stored_key(api, model["id"]) == cipher_before

    moved = await api.ok("PUT", f"/api/models/{model['id']}", bob,
                         json={"apiUrl": "http://localhost:8080/chat", "supportsImages": False})
    assert moved == {**model, "name": "renamed", "apiUrl": "http://localhost:8080/chat",
                     "supportsImages": False}
    assert await stored_key(api, model["id"]) == cipher_before

    unchanged = await api.ok("PUT", f"/api/models/{model['id']}", bob, json={})
    assert unchanged == moved
    assert await stored_key(api, model["id"]) == cipher_before
    db, cipher = api.client.app[db_key], api.client.app[cipher_key]
    assert (await upstream(db, cipher, model["id"]))["api_key"] == KEY

    rekeyed = await api.ok("PUT", f"/api/models/{model['id']}", bob, json={"apiKey": KEY2})
    assert rekeyed == moved and rekeyed["apiKey"] == ""
    cipher_after = await stored_key(api, model["id"])
    assert cipher_after != cipher_before and cipher_after.startswith("v1:")
    assert (await upstream(db, cipher, model["id"]))["api_key"] == KEY2
    assert await api.ok("GET", f"/api/models/{model['id']}", bob) == rekeyed


async def test_update_system_model(api):
    bob = await api.register("bob")
    system = await create_system(api, "sys")
    cipher_before = await stored_key(api, system["id"])
    updated = await api.ok("PUT", f"/api/models/system/{system['id']}", "admin",
                           json={"name": "sys2", "supportsImages": True})
    assert updated == {**system, "name": "sys2", "supportsImages": True}
    assert await stored_key(api, system["id"]) == cipher_before
    assert await api.ok("GET", f"/api/models/{system['id']}", bob) == updated
    await api.ok("PUT", f"/api/models/system/{system['id']}", "admin", json={"apiKey": KEY2})
    assert await stored_key(api, system["id"]) != cipher_before


async def test_unknown_ids_are_404(api):
    bob = await api.register("bob")
    for method, body in (("PUT", {"name": "x"}), ("DELETE", None)):
        await api.error(method, "/api/models/9999", bob, 404, NOT_FOUND, json=body)
        await api.error(method, "/api/models/system/9999", "admin", 404, NOT_FOUND, json=body)
        await api.error(method, "/api/models/" + "9" * 25, bob, 404, NOT_FOUND, json=body)


async def test_another_users_model_is_not_found(api):
    bob = await api.register("bob")
    carol = await api.register("carol")
    theirs = await create(api, carol, "carols")
    before = await models_table(api)
    for user in (bob, "admin"):
        await api.error("GET", f"/api/models/{theirs['id']}", user, 404, NOT_FOUND)
        await api.error("PUT", f"/api/models/{theirs['id']}", user, 404, NOT_FOUND,
                        json={"name": "stolen", "apiKey": "attacker-key"})
        await api.error("DELETE", f"/api/models/{theirs['id']}", user, 404, NOT_FOUND)
    assert await models_table(api) == before


async def test_system_models_change_only_through_the_system_routes(api):
    bob = await api.register("bob")
    system = await create_system(api)
    personal = await create(api, bob)
    before = await models_table(api)
    for user in (bob, "admin"):
        await api.error("PUT", f"/api/models/{system['id']}", user, 404, NOT_FOUND,
                        json={"name": "hijacked"})
        await api.error("DELETE", f"/api/models/{system['id']}", user, 404, NOT_FOUND)
    # ...and the system routes do not reach personal models.
    await api.error("PUT", f"/api/models/system/{personal['id']}", "admin", 404, NOT_FOUND,
                    json={"name": "hijacked"})
    await api.error("DELETE", f"/api/models/system/{personal['id']}", "admin", 404, NOT_FOUND)
    assert await models_table(api) == before


# --- delete ---

async def test_delete_personal_model(api):
    bob = await api.register("bob")
    keep = await create(api, bob, "keep")
    gone = await create(api, bob, "gone")
    assert await api.ok("DELETE", f"/api/models/{gone['id']}", bob) is None
    await api.error("GET", f"/api/models/{gone['id']}", bob, 404, NOT_FOUND)
    await api.error("DELETE", f"/api/models/{gone['id']}", bob, 404, NOT_FOUND)
    assert (await api.ok("GET", "/api/models", bob))["personal"] == [keep]
    assert await query(api, "SELECT id FROM model_configs") == [(keep["id"],)]
    # The name is free again.
    await create(api, bob, "gone")


async def test_a_model_in_use_cannot_be_deleted(api):
    bob = await api.register("bob")
    model = await create(api, bob)
    first = await new_session(api, bob, model["id"])
    before = await models_table(api)
    await api.error("DELETE", f"/api/models/{model['id']}", bob, 400,
                    "Cannot delete model: 1 chat sessions are using this model")
    second = await new_session(api, bob, model["id"])
    await api.error("DELETE", f"/api/models/{model['id']}", bob, 400,
                    "Cannot delete model: 2 chat sessions are using this model")
    assert await models_table(api) == before
    assert await api.ok("GET", f"/api/models/{model['id']}", bob) == model
    for session in (first, second):
        await api.ok("DELETE", f"/api/sessions/{session['id']}", bob)
    await api.ok("DELETE", f"/api/models/{model['id']}", bob)
    assert await models_table(api) == []


async def test_delete_system_model(api):
    bob = await api.register("bob")
    carol = await api.register("carol")
    used = await create_system(api, "used")
    unused = await create_system(api, "unused")
    await new_session(api, bob, used["id"])
    await new_session(api, carol, used["id"])
    before = await models_table(api)
    await api.error("DELETE", f"/api/models/system/{used['id']}", "admin", 400,
                    "Cannot delete model: 2 chat sessions are using this model")
    assert await models_table(api) == before
    assert await api.ok("DELETE", f"/api/models/system/{unused['id']}", "admin") is None
    await api.error("DELETE", f"/api/models/system/{unused['id']}", "admin", 404, NOT_FOUND)
    assert (await api.ok("GET", "/api/models", bob))["system"] == [used]


async def test_system_list_has_session_counts(api):
    bob = await api.register("bob")
    carol = await api.register("carol")
    assert await api.ok("GET", "/api/models/system/list", "admin") == []
    s1 = await create_system(api, "s1")
    s2 = await create_system(api, "s2", supportsImages=True)
    s3 = await create_system(api, "s3")
    personal = await create(api, bob, "mine")
    await new_session(api, bob, s1["id"])
    await new_session(api, carol, s1["id"])
    await new_session(api, carol, s1["id"])
    await new_session(api, bob, s2["id"])
    await new_session(api, bob, personal["id"])
    data = await api.ok("GET", "/api/models/system/list", "admin")
    assert isinstance(data, list)
    assert data == [{**s3, "_count": {"chatSessions": 0}},
                    {**s2, "_count": {"chatSessions": 1}},
                    {**s1, "_count": {"chatSessions": 3}}]


# --- key secrecy ---

async def raw_database_bytes(api) -> bytes:
    """Everything the store holds. SQLite: the database file and its WAL, byte for byte.
    PostgreSQL (no file of its own to read): every row of every table, as text."""
    if api.db.dialect == "sqlite":
        db_path = Path(api.config.database_path)
        files = [db_path, Path(f"{db_path}-wal")]
        assert db_path.exists()
        return b"".join(p.read_bytes() for p in files if p.exists())
    tables = [t for (t,) in await api.rows(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        " ORDER BY table_name")]
    assert "model_configs" in tables
    rows = [row for t in tables for (row,) in await api.rows(f"SELECT t::text FROM {t} t")]
    return "\n".join(rows).encode()


async def test_keys_are_stored_encrypted_never_in_plaintext(api):
    bob = await api.register("bob")
    first = await create(api, bob, "first")
    twin = await create(api, bob, "twin")  # same key: a fresh nonce gives another ciphertext
    system = await create_system(api, "sys", apiKey=KEY2)
    updated_key = "sk-test-PLAINTEXT-UPDATED-555555"
    await api.ok("PUT", f"/api/models/{first['id']}", bob, json={"apiKey": updated_key})
    raw = await raw_database_bytes(api)
    for secret in (KEY, KEY2, updated_key):
        assert secret.encode() not in raw, secret
        assert secret.encode("utf-16-le") not in raw, secret
        assert secret.encode("utf-16-be") not in raw, secret
    stored = {mid: await stored_key(api, mid) for mid in (first["id"], twin["id"], system["id"])}
    for value in stored.values():
        assert value.startswith("v1:"), value
        blob = base64.b64decode(value[3:], validate=True)
        assert len(blob) >= 12 + 16 + len(KEY)
        assert value.encode() in raw  # what was searched does hold the stored keys
    assert stored[first["id"]] != stored[twin["id"]]
    twin_again = await create(api, bob, "twin-again")
    assert await stored_key(api, twin_again["id"]) != stored[twin["id"]]
    assert KEY.encode() not in await raw_database_bytes(api)
    db, cipher = api.client.app[db_key], api.client.app[cipher_key]
    assert (await upstream(db, cipher, first["id"]))["api_key"] == updated_key
    assert (await upstream(db, cipher, twin["id"]))["api_key"] == KEY
    assert (await upstream(db, cipher, system["id"]))["api_key"] == KEY2


async def test_keys_never_reach_logs_or_responses(api, caplog):
    caplog.set_level(logging.DEBUG)
    bob = await api.register("bob")
    bodies: list[str] = []

    async def call(method, path, user, body=None):
        status, resp = await api.call(method, path, user, json=body)
        bodies.append(json.dumps(resp))
        return status, resp

    _, created = await call("POST", "/api/models", bob, model_body("m"))
    mid = created["data"]["id"]
    _, sys_created = await call("POST", "/api/models/system", "admin", model_body("s"))
    sid = sys_created["data"]["id"]
    await call("PUT", f"/api/models/{mid}", bob, {"apiKey": KEY2, "name": "m2"})
    await call("PUT", f"/api/models/system/{sid}", "admin", {"apiKey": KEY2})
    await call("GET", "/api/models", bob)
    await call("GET", f"/api/models/{mid}", bob)
    await call("GET", f"/api/models/{sid}", bob)
    await call("GET", "/api/models/system/list", "admin")
    # Failures must not echo the key either.
    status, _ = await call("POST", "/api/models", bob, model_body("m2", apiKey=KEY))
    assert status == 409
    status, _ = await call("POST", "/api/models", bob, model_body("bad", apiUrl="ftp://x"))
    assert status == 400
    status, _ = await call("POST", "/api/models", bob, model_body("big", apiKey=KEY * 200))
    assert status == 400
    status, _ = await call("PUT", "/api/models/9999", bob, {"apiKey": KEY})
    assert status == 404
    assert len(bodies) == 12
    for text in bodies:
        assert KEY not in text and KEY2 not in text, text
    for record in caplog.records:
        rendered = record.getMessage() + (record.exc_text or "") + repr(record.__dict__)
        assert KEY not in rendered and KEY2 not in rendered, rendered
    assert KEY not in caplog.text and KEY2 not in caplog.text


async def test_a_ciphertext_copied_to_another_row_does_not_decrypt(api):
    bob = await api.register("bob")
    a = await create(api, bob, "a", apiKey=KEY)
    b = await create(api, bob, "b", apiKey=KEY2)
    db, cipher = api.client.app[db_key], api.client.app[cipher_key]
    assert (await upstream(db, cipher, b["id"]))["api_key"] == KEY2
    await api.execute("UPDATE model_configs SET api_key ="
                      " (SELECT api_key FROM model_configs WHERE id = ?) WHERE id = ?",
                      (a["id"], b["id"]))
    assert await stored_key(api, a["id"]) == await stored_key(api, b["id"])
    with pytest.raises(DecryptError):
        await upstream(db, cipher, b["id"])
    row = await upstream(db, cipher, a["id"])
    assert row["api_key"] == KEY and row["id"] == a["id"]
    # The API keeps working for the broken row: it never needs the key.
    assert await api.ok("GET", f"/api/models/{b['id']}", bob) == b


async def test_created_at_is_utc_with_milliseconds(api):
    bob = await api.register("bob")
    model = await create(api, bob)
    system = await create_system(api)
    for m in (model, system):
        assert TIMESTAMP.match(m["createdAt"])
    data = await api.ok("GET", "/api/models", bob)
    for m in data["personal"] + data["system"]:
        assert TIMESTAMP.match(m["createdAt"])
