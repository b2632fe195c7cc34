"""The audit log (docs/api.md, "Audit log"): every audited action writes exactly one row, with its
actor, target and client address, in the commit of the change it records; no secret reaches a
row; GET /api/admin/audit is admin-only, filtered, paged like the users list and checks its
input; the retention sweep deletes only rows past `audit_retention_days`; the command line's
backup and rotate-key are recorded as `system`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aichat import audit_sweep
from aichat.cli.maintenance import backup, rotate_key
from aichat.http.appkeys import clock_key
from aichat.store import audit
from aichat.timeutil import iso

from .helpers import Api, User

AUDIT = "/api/admin/audit"
HERE = "203.0.113.9"
VIA_PROXY = {"X-Forwarded-For": HERE}  # the test client's peer, 127.0.0.1, is a trusted proxy
SYSTEM_KEY = "sk-system-SECRET-0001"
NEW_SYSTEM_KEY = "sk-system-SECRET-0002"
PERSONAL_KEY = "sk-bob-SECRET-0003"
NEW_KEY = "a-new-encryption-key-for-the-audit-test-0123456789"


async def events(api: Api, **params: str) -> dict[str, Any]:
    return await api.ok("GET", AUDIT, "admin", params=params)


async def last_id(api: Api) -> int:
    return await api.db.value("SELECT COALESCE(MAX(id), 0) FROM audit_log")


async def one_event(api: Api, since: int, **expected: Any) -> dict[str, Any]:
    """The only event after id `since`, as the API lists it, with the `expected` fields."""
    listed = (await events(api, limit="100"))["events"]
    new = [e for e in listed if e["id"] > since]
    assert len(new) == 1, new
    event = new[0]
    assert {k: event[k] for k in expected} == expected, event
    return event


def by(user: User, address: str = HERE) -> dict[str, Any]:
    return {"actorType": "user", "actorUserId": user.id, "actorKeyId": None,
            "actorName": user.username, "address": address}


async def act(api: Api, method: str, path: str, user: User | str | None, **body: Any) -> Any:
    return await api.ok(method, path, user, json=body, headers=VIA_PROXY)


# --- access ---

async def test_the_audit_log_needs_a_token_and_an_admin(api):
    bob = await api.register("bob")
    await api.error("GET", AUDIT, None, 401, "Missing or invalid authorization header")
    await api.error("GET", AUDIT, bob, 403, "Admin access required")
    await api.error("GET", AUDIT, bob, 403, "Admin access required", params={"actor": "x"})


# --- every audited action: one row, who, what, from where ---

async def test_accounts_sign_ins_and_keys_are_recorded(api):
    admin = api.users["admin"]
    first = await one_event(api, 0, action="register", target=f"user:{admin.id}",
                            detail={"username": "admin", "role": "ADMIN"},
                            **by(admin, "127.0.0.1"))  # no X-Forwarded-For: the peer
    assert first["createdAt"].endswith("Z")

    mark = await last_id(api)
    data = await act(api, "POST", "/api/auth/register", None,
                     username="bob", password="bob-password-1")
    bob = User(data["user"]["id"], "bob", "bob-password-1", data["token"], "USER")
    api.users["bob"] = bob
    await one_event(api, mark, action="register", target=f"user:{bob.id}",
                    detail={"username": "bob", "role": "USER"}, **by(bob))

    mark = await last_id(api)
    await act(api, "POST", "/api/auth/login", None, username="bob", password="bob-password-1")
    await one_event(api, mark, action="login", target=f"user:{bob.id}",
                    detail={"username": "bob"}, **by(bob))

    for username, password, reason in (("bob", "wrong-password-9", "wrong_password"),
                                       ("nobody", "any-password-9", "unknown_user")):
        mark = await last_id(api)
        await api.error("POST", "/api/auth/login", None, 401, "Invalid username or password",
                        json={"username": username, "password": password}, headers=VIA_PROXY)
        await one_event(api, mark, action="login_failed", target=username,
                        actorType="anonymous", actorUserId=None, actorName=None,
                        address=HERE, detail={"reason": reason})

    mark = await last_id(api)
    key = await act(api, "POST", "/api/keys", bob, name="laptop", tokensPerMonth=1000)
    await one_event(api, mark, action="api_key_create", target=f"api_key:{key['id']}",
                    detail={"name": "laptop", "expiresAt": None, "tokensPerMonth": 1000},
                    **by(bob))
    mark = await last_id(api)
    await act(api, "DELETE", f"/api/keys/{key['id']}", bob)
    await one_event(api, mark, action="api_key_revoke", target=f"api_key:{key['id']}",
                    detail={"name": "laptop"}, **by(bob))

    await act(api, "POST", "/api/keys", bob, name="desktop")
    mark = await last_id(api)
    await act(api, "PUT", "/api/auth/password", bob, currentPassword="bob-password-1",
              newPassword="bob-password-2")
    await one_event(api, mark, action="password_change", target=f"user:{bob.id}",
                    detail={"username": "bob", "apiKeysRevoked": 1}, **by(bob))
    bob = await api.login("bob", "bob-password-2")

    mark = await last_id(api)
    await act(api, "PUT", f"/api/users/{bob.id}/role", "admin", role="ADMIN")
    await one_event(api, mark, action="role_change", target=f"user:{bob.id}",
                    detail={"username": "bob", "from": "USER", "to": "ADMIN"}, **by(admin))

    carol = await api.register("carol")
    mark = await last_id(api)
    await act(api, "DELETE", f"/api/users/{carol.id}", "admin")
    event = await one_event(api, mark, action="user_delete", target=f"user:{carol.id}",
                            detail={"username": "carol", "role": "USER"}, **by(admin))
    # The trail outlives the account: carol's own events are still there, under her id.
    mine = await events(api, actor=str(carol.id))
    assert [e["action"] for e in mine["events"]] == ["register"]
    assert event["id"] > mine["events"][0]["id"]


async def test_settings_models_and_limits_are_recorded(api):
    admin, bob = api.users["admin"], await api.register("bob")

    mark = await last_id(api)
    await act(api, "PUT", "/api/settings/system", "admin", brand_text="Acme",
              max_models_per_user=7, usage_emit=None, theme="ignored")
    await one_event(api, mark, action="settings_change", target="settings:system",
                    detail={"changes": {"brand_text": {"from": "AIChat", "to": "Acme"},
                                        "max_models_per_user": {"from": 100, "to": 7},
                                        "usage_emit": {"from": True, "to": True}},
                            "cleared": ["usage_emit"]}, **by(admin))
    mark = await last_id(api)
    await act(api, "PUT", "/api/settings/personal", bob, theme="dark")  # personal: not audited
    await act(api, "PUT", "/api/settings/system", "admin", unknown_key=1)  # nothing to change
    assert await last_id(api) == mark

    url = "https://ops:hunter2pass@llm.example.com:8443/v1/chat/completions?key=sk-query-SECRET"
    shown = "https://llm.example.com:8443/v1/chat/completions"
    mark = await last_id(api)
    model = await act(api, "POST", "/api/models/system", "admin", name="house", apiUrl=url,
                      apiKey=SYSTEM_KEY, inputPricePerMTok=2.5)
    await one_event(api, mark, action="model_create", target=f"model:{model['id']}",
                    detail={"name": "house", "apiUrl": shown, "supportsImages": False,
                            "inputPricePerMTok": 2.5, "outputPricePerMTok": None},
                    **by(admin))
    mark = await last_id(api)
    await act(api, "PUT", f"/api/models/system/{model['id']}", "admin", name="home",
              apiKey=NEW_SYSTEM_KEY)
    await one_event(api, mark, action="model_update", target=f"model:{model['id']}",
                    detail={"name": "home", "changes": {"name": {"from": "house", "to": "home"}},
                            "apiKeyReplaced": True}, **by(admin))
    mark = await last_id(api)
    await act(api, "DELETE", f"/api/models/system/{model['id']}", "admin")
    await one_event(api, mark, action="model_delete", target=f"model:{model['id']}",
                    detail={"name": "home"}, **by(admin))

    # Personal models: only a changed upstream URL is recorded, never the key.
    mark = await last_id(api)
    mine = await act(api, "POST", "/api/models", bob, name="mine", apiKey=PERSONAL_KEY,
                     apiUrl="http://10.1.2.3/v1/chat/completions")
    await act(api, "PUT", f"/api/models/{mine['id']}", bob, name="renamed", apiKey="sk-x-0004")
    await act(api, "PUT", f"/api/models/{mine['id']}", bob,
              apiUrl="http://10.1.2.3/v1/chat/completions")  # the same URL: no change
    assert await last_id(api) == mark
    await act(api, "PUT", f"/api/models/{mine['id']}", bob,
              apiUrl="https://u:p@10.9.8.7:8443/openai/v1/chat/completions?api-key=SECRETQ")
    await one_event(api, mark, action="model_url_change", target=f"model:{mine['id']}",
                    detail={"name": "renamed", "from": "http://10.1.2.3/v1/chat/completions",
                            "to": "https://10.9.8.7:8443/openai/v1/chat/completions"},
                    **by(bob))

    mark = await last_id(api)
    await act(api, "PUT", f"/api/users/{bob.id}/limits", "admin", tokensPerDay=5000,
              costPerMonth=2.5)
    await act(api, "PUT", f"/api/users/{bob.id}/limits", "admin")  # nothing named: no row
    await one_event(api, mark, action="limits_change", target=f"user:{bob.id}",
                    detail={"username": "bob", "changes": {
                        "tokensPerDay": {"from": None, "to": 5000},
                        "costPerMonth": {"from": None, "to": 2.5}}}, **by(admin))
    mark = await last_id(api)
    await act(api, "PUT", f"/api/users/{bob.id}/limits", "admin", tokensPerDay=None)
    await one_event(api, mark, action="limits_change", detail={"username": "bob", "changes": {
        "tokensPerDay": {"from": 5000, "to": None}}})

    rows = await api.rows("SELECT detail, target FROM audit_log")
    for secret in (SYSTEM_KEY, NEW_SYSTEM_KEY, PERSONAL_KEY, "sk-x-0004", "hunter2pass",
                   "sk-query-SECRET", "SECRETQ", "u:p@"):
        assert not [r for r in rows if secret in str(r)], secret


async def test_refused_requests_write_nothing(api):
    bob = await api.register("bob")
    mark = await last_id(api)
    admin = api.users["admin"]
    await api.error("PUT", f"/api/users/{admin.id}/role", "admin", 400, json={"role": "USER"})
    await api.error("DELETE", "/api/users/9999", "admin", 404)
    await api.error("PUT", "/api/settings/system", "admin", 400, json={"brand_text": ""})
    await api.error("PUT", f"/api/users/{bob.id}/limits", "admin", 400,
                    json={"tokensPerDay": 0})
    await api.error("DELETE", "/api/keys/1", bob, 404)
    await api.error("POST", "/api/auth/login", None, 400, json={"username": "bob"})
    await api.error("PUT", "/api/auth/password", bob, 400, "Current password is incorrect",
                    json={"currentPassword": "not-it-1", "newPassword": "another-pass-2"})
    assert await last_id(api) == mark


async def test_the_event_and_the_change_commit_together(api, backend):
    """An audit row that cannot be written takes the change down with it."""
    bob = await api.register("bob")
    if backend == "sqlite":
        await api.execute("CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log"
                          " BEGIN SELECT RAISE(ABORT, 'audit refused'); END")
    else:
        await api.execute("CREATE FUNCTION audit_refused() RETURNS trigger LANGUAGE plpgsql"
                          " AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$")
        await api.execute("CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log"
                          " FOR EACH ROW EXECUTE FUNCTION audit_refused()")
    await api.error("PUT", f"/api/users/{bob.id}/role", "admin", 500, json={"role": "ADMIN"})
    await api.error("DELETE", f"/api/users/{bob.id}", "admin", 500)
    await api.error("POST", "/api/keys", bob, 500, json={"name": "k"})
    assert await api.rows("SELECT role FROM users WHERE id = ?", (bob.id,)) == [("USER",)]
    assert await api.ok("GET", "/api/keys", bob) == []


async def test_the_address_honours_trusted_proxies(start):
    api = await start(app_mode="multi", trusted_proxies="10.0.0.0/8")
    await api.ok("POST", "/api/auth/register", headers=VIA_PROXY,
                 json={"username": "admin", "password": "adminpass1"})
    [(address,)] = await api.rows("SELECT address FROM audit_log")
    assert address == "127.0.0.1"  # the peer is no trusted proxy: its header is not believed


async def test_rows_are_bounded(api):
    long_name = "\x1b[31m\x07" + "x" * 5000
    await api.error("POST", "/api/auth/login", None, 401,
                    json={"username": long_name, "password": "whatever-1"},
                    headers={"X-Forwarded-For": "not-an-address-" + "y" * 500})
    [(target, address)] = await api.rows(
        "SELECT target, address FROM audit_log WHERE action = 'login_failed'")
    assert len(target) == audit.TEXT_CHARS and target.startswith("\ufffd[31m\ufffdxxx")
    assert len(address) == audit.ADDRESS_CHARS
    allowlist = ",".join(f"host{i}.example.com" for i in range(100))
    await api.ok("PUT", "/api/settings/system", "admin", json={"upstream_allowlist": allowlist})
    [(detail,)] = await api.rows(
        "SELECT detail FROM audit_log WHERE action = 'settings_change'")
    assert len(detail) <= audit.DETAIL_CHARS
    assert json.loads(detail)["changes"]["upstream_allowlist"]["to"].endswith("\u2026")
    many = {f"key{i}": "v" * 300 for i in range(100)}
    assert len(audit.detail_text(many)) <= audit.DETAIL_CHARS
    assert len(audit.detail_text({"k": ["v" * 300] * 1000})) <= audit.DETAIL_CHARS


# --- the list ---

async def add(api: Api, actor: audit.Actor, action: str, at: str) -> None:
    async with api.db.transaction() as tx:
        await audit.add(tx, actor, action, "database", {})
    await api.execute("UPDATE audit_log SET created_at = ? WHERE id = (SELECT MAX(id)"
                      " FROM audit_log)", (at,))


async def test_filters_and_paging(api):
    admin, bob = api.users["admin"], await api.register("bob")
    await api.login("bob", "password1")
    await add(api, audit.SYSTEM, "backup", "2020-01-02T10:00:00.000Z")
    await add(api, audit.SYSTEM, "rotate_key", "2020-01-03T23:59:59.999Z")
    await add(api, audit.Actor("user", bob.id, 5, "bob", HERE), "api_key_revoke",
              "2020-01-04T00:00:00.000Z")

    everything = await events(api)
    assert everything["pagination"] == {"page": 1, "limit": 10, "total": 6, "totalPages": 1}
    listed = everything["events"]
    assert [e["createdAt"] for e in listed] == sorted((e["createdAt"] for e in listed),
                                                      reverse=True)
    assert set(listed[0]) == {"id", "createdAt", "actorType", "actorUserId", "actorKeyId",
                              "actorName", "address", "action", "target", "detail"}

    def actions(data: dict[str, Any]) -> list[str]:
        return [e["action"] for e in data["events"]]

    assert actions(await events(api, actor="system")) == ["rotate_key", "backup"]
    assert [e["actorType"] for e in (await events(api, actor="system"))["events"]] == \
        ["system", "system"]
    assert actions(await events(api, actor=str(bob.id))) == ["login", "register",
                                                            "api_key_revoke"]
    assert actions(await events(api, actor=str(admin.id))) == ["register"]
    assert actions(await events(api, actor="9" * 30)) == []  # too large to exist: no match
    assert actions(await events(api, action="register")) == ["register", "register"]
    assert actions(await events(api, action="login", actor=str(admin.id))) == []
    assert actions(await events(api, **{"from": "2020-01-03", "to": "2020-01-03"})) == \
        ["rotate_key"]
    assert actions(await events(api, **{"from": "2020-01-02T10:00:00Z",
                                        "to": "2020-01-04T00:59:59.999+01:00"})) == \
        ["rotate_key", "backup"]
    assert actions(await events(api, **{"to": "2020-01-02T10:00:00"})) == ["backup"]
    assert actions(await events(api, **{"from": "2020-01-04"}))[-1] == "api_key_revoke"
    assert actions(await events(api, actor="", action="", **{"from": "", "to": ""})) == \
        actions(everything)

    page2 = await events(api, limit="4", page="2")
    assert page2["pagination"] == {"page": 2, "limit": 4, "total": 6, "totalPages": 2}
    assert page2["events"] == listed[4:]
    assert (await events(api, page="3", limit="4"))["events"] == []


@pytest.mark.parametrize("params, error", [
    ({"actor": "bob"}, "actor must be a user id or system"),
    ({"actor": "0"}, "actor must be a user id or system"),
    ({"actor": "-1"}, "actor must be a user id or system"),
    ({"actor": "SYSTEM"}, "actor must be a user id or system"),
    ({"action": "nope"}, "action must be one of: register, login, login_failed"),
    ({"from": "2026-13-01"}, "from must be an ISO date"),
    ({"from": "yesterday"}, "from must be an ISO date"),
    ({"to": "2026-01-01T25:00:00Z"}, "to must be an ISO date"),
    ({"to": "0001-01-01T00:00:00+01:00"}, "to must be an ISO date"),
    ({"from": "2026-01-02", "to": "2026-01-01"}, "from must not be after to"),
    ({"page": "0"}, "page must be an integer from 1 to 1000000000"),
    ({"limit": "101"}, "limit must be an integer from 1 to 100"),
    ({"limit": "x"}, "limit must be an integer from 1 to 100"),
])
async def test_bad_input_is_400_naming_the_field(api, params, error):
    await api.error("GET", AUDIT, "admin", 400, error, params=params)


# --- retention ---

async def test_the_sweep_deletes_only_rows_past_the_retention(api, monkeypatch):
    app, now = api.client.app, datetime.now(UTC) - timedelta(minutes=1)
    await api.execute("DELETE FROM audit_log")
    for days in (181, 180.5, 179, 1, 0):
        await add(api, audit.SYSTEM, "backup", iso(now - timedelta(days=days)))
    monkeypatch.setattr(audit_sweep, "BATCH_ROWS", 1)  # the batches run to the end
    assert await audit_sweep.sweep(app, now) == 2  # the default: 180 days
    kept = [r[0] for r in await api.rows("SELECT created_at FROM audit_log ORDER BY id")]
    assert kept == [iso(now - timedelta(days=d)) for d in (179, 1, 0)]

    await api.ok("PUT", "/api/settings/system", "admin", json={"audit_retention_days": 2})
    app[clock_key].set(now)  # without a moment, the app's clock
    assert await audit_sweep.sweep(app) == 1
    assert await audit_sweep.sweep(app) == 0
    kept = [r[0] for r in await api.rows("SELECT created_at FROM audit_log ORDER BY id")]
    assert kept[:2] == [iso(now - timedelta(days=d)) for d in (1, 0)]
    assert (await events(api))["events"][0]["action"] == "settings_change"


# --- the command line ---

async def test_backup_and_rotate_key_are_recorded_as_the_system(start, tmp_path, backend):
    api = await start(app_mode="multi")
    await api.register("admin", "adminpass1")
    await api.ok("POST", "/api/models/system", "admin",
                 json={"name": "house", "apiUrl": "https://llm.example.com/v1",
                       "apiKey": SYSTEM_KEY})
    target = tmp_path / "copy.db"
    await asyncio.to_thread(backup, api.config, str(target))
    [event] = (await events(api, actor="system"))["events"]
    assert event == {**event, "actorType": "system", "actorUserId": None, "actorName": None,
                     "address": None, "action": "backup", "target": "database",
                     "detail": {"path": str(target)}}

    await api.client.close()  # rotate-key wants the server stopped
    given = NEW_KEY if backend == "postgresql" else None  # PostgreSQL: the operator's key
    new_key = await asyncio.to_thread(rotate_key, api.config, given)
    api2 = await start(app_mode="multi",
                       **({"encryption_key": new_key} if backend == "postgresql" else {}))
    api2.users.update(api.users)
    listed = (await events(api2, actor="system"))["events"]
    assert [e["action"] for e in listed] == ["rotate_key", "backup"]
    assert listed[0]["target"] == "encryption_key" and listed[0]["address"] is None
    assert listed[0]["detail"] == {
        "keysReencrypted": 1, "keySource": "environment" if backend == "postgresql" else "file"}
    rows = str(await api2.rows("SELECT * FROM audit_log"))
    assert new_key not in rows and SYSTEM_KEY not in rows


# --- the suite's secret watch reads the audit table ---

async def test_the_secret_watch_reads_the_audit_table(api, secret_watch):
    bob = await api.register("bob", "bob-password-1")
    await api.ok("PUT", "/api/auth/password", bob,
                 json={"currentPassword": "bob-password-1", "newPassword": "bob-password-2"})
    key = (await api.ok("POST", "/api/keys", await api.login("bob", "bob-password-2"),
                        json={"name": "k"}))["key"]
    await secret_watch.read_audit(api.client.app)
    assert secret_watch.audit_leaks() == []
    for leaked in ("bob-password-1", key, api.users["bob"].token):
        async with api.db.transaction() as tx:
            await audit.add(tx, audit.SYSTEM, "backup", "database", {"oops": leaked})
        await secret_watch.read_audit(api.client.app)
        assert secret_watch.audit_leaks(), leaked
        secret_watch.audit.clear()
        await api.execute("DELETE FROM audit_log WHERE action = 'backup'")
    [(stored,)] = await api.rows("SELECT hashed_password FROM users WHERE id = ?", (bob.id,))
    async with api.db.transaction() as tx:
        await audit.add(tx, audit.SYSTEM, "backup", stored[:20], {})  # even part of a hash
    await secret_watch.read_audit(api.client.app)
    assert any("bcrypt" in leak for leak in secret_watch.audit_leaks())
    secret_watch.audit.clear()
    await api.execute("DELETE FROM audit_log WHERE action = 'backup'")
    # The planted rows' INSERTs are in the store's debug log, parameters and all: not a leak.
    secret_watch.logs[:] = [r for r in secret_watch.logs if "oops" not in r]
