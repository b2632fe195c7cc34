"""/api/users: admin-only listing, reading, role changes and deletion."""

from __future__ import annotations

import pytest

ROUTES = [("GET", "/api/users", None), ("GET", "/api/users/1", None),
          ("PUT", "/api/users/1/role", {"role": "USER"}), ("DELETE", "/api/users/1", None)]


@pytest.mark.parametrize("method, path, body", ROUTES)
async def test_users_routes_need_a_token_and_an_admin(api, method, path, body):
    bob = await api.register("bob")
    await api.error(method, path, None, 401, "Missing or invalid authorization header", json=body)
    await api.error(method, path, bob, 403, "Admin access required", json=body)


async def test_list_users_newest_first_with_counts_and_paging(api):
    for name in ("bob", "carol", "dave"):
        await api.register(name)
    data = await api.ok("GET", "/api/users", "admin", params={"limit": "2"})
    assert [u["username"] for u in data["users"]] == ["dave", "carol"]
    assert data["pagination"] == {"page": 1, "limit": 2, "total": 4, "totalPages": 2}
    first = data["users"][0]
    assert set(first) == {"id", "username", "role", "createdAt", "_count"}
    assert first["_count"] == {"chatSessions": 0, "modelConfigs": 0}
    page2 = await api.ok("GET", "/api/users", "admin", params={"limit": "2", "page": "2"})
    assert [u["username"] for u in page2["users"]] == ["bob", "admin"]


async def test_search_is_a_case_insensitive_substring_with_literal_wildcards(api):
    await api.register("Bobby")
    await api.register("rob_x")
    await api.register("robAx")
    names = lambda d: sorted(u["username"] for u in d["users"])  # noqa: E731
    assert names(await api.ok("GET", "/api/users", "admin", params={"search": "BOB"})) == ["Bobby"]
    assert names(await api.ok("GET", "/api/users", "admin", params={"search": "b_"})) == ["rob_x"]
    assert names(await api.ok("GET", "/api/users", "admin", params={"search": "%"})) == []


@pytest.mark.parametrize("params, field", [
    ({"page": "0"}, "page"), ({"page": "-1"}, "page"), ({"page": "x"}, "page"),
    ({"page": "1.5"}, "page"), ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"),
    ({"limit": " 5"}, "limit"), ({"page": "1_0"}, "page"), ({"page": "9" * 40}, "page"),
])
async def test_list_users_bad_paging_is_400(api, params, field):
    await api.error("GET", "/api/users", "admin", 400, field, params=params)


async def test_get_user(api):
    bob = await api.register("bob")
    data = await api.ok("GET", f"/api/users/{bob.id}", "admin")
    assert data["username"] == "bob" and data["_count"]["chatSessions"] == 0
    await api.error("GET", "/api/users/9999", "admin", 404, "User not found")
    await api.error("GET", "/api/users/abc", "admin", 400, "Invalid user ID")
    await api.error("GET", "/api/users/-1", "admin", 400, "Invalid user ID")
    await api.error("GET", "/api/users/" + "9" * 25, "admin", 404, "User not found")


async def test_role_change(api):
    bob = await api.register("bob")
    data = await api.ok("PUT", f"/api/users/{bob.id}/role", "admin", json={"role": "ADMIN"})
    assert data["role"] == "ADMIN" and data["id"] == bob.id and "createdAt" in data
    # Setting a USER to USER is fine even with a single admin (previous bug).
    carol = await api.register("carol")
    await api.ok("PUT", f"/api/users/{carol.id}/role", "admin", json={"role": "USER"})


@pytest.mark.parametrize("body", [{}, {"role": "admin"}, {"role": "ROOT"}, {"role": 1}])
async def test_role_change_bad_input(api, body):
    bob = await api.register("bob")
    await api.error("PUT", f"/api/users/{bob.id}/role", "admin", 400, "role", json=body)
    assert (await api.ok("GET", f"/api/users/{bob.id}", "admin"))["role"] == "USER"


async def test_role_change_rules(api):
    admin = api.users["admin"]
    await api.error("PUT", f"/api/users/{admin.id}/role", "admin", 400,
                    "Cannot modify your own role", json={"role": "USER"})
    await api.error("PUT", "/api/users/9999/role", "admin", 404, "User not found",
                    json={"role": "USER"})
    await api.error("PUT", "/api/users/x/role", "admin", 400, "Invalid user ID",
                    json={"role": "USER"})


async def test_last_admin_cannot_be_demoted_or_deleted(api):
    bob = await api.register("bob")
    await api.ok("PUT", f"/api/users/{bob.id}/role", "admin", json={"role": "ADMIN"})
    admin = api.users["admin"]
    # bob demotes admin; now bob is the last admin and admin is a USER.
    await api.ok("PUT", f"/api/users/{admin.id}/role", bob, json={"role": "USER"})
    await api.error("PUT", f"/api/users/{bob.id}/role", bob, 400, "Cannot modify your own role",
                    json={"role": "USER"})
    await api.error("DELETE", f"/api/users/{bob.id}", bob, 400, "own")


async def test_delete_user_removes_everything_they_own(api):
    bob = await api.register("bob")
    await api.ok("PUT", "/api/settings/personal", bob, json={"theme": "dark"})
    await api.ok("DELETE", f"/api/users/{bob.id}", "admin")
    await api.error("GET", f"/api/users/{bob.id}", "admin", 404, "User not found")
    await api.error("DELETE", f"/api/users/{bob.id}", "admin", 404, "User not found")
    assert await api.rows("SELECT COUNT(*) FROM user_settings") == [(0,)]


async def test_delete_rules(api):
    admin = api.users["admin"]
    await api.error("DELETE", f"/api/users/{admin.id}", "admin", 400, "Cannot delete your own")
    await api.error("DELETE", "/api/users/0", "admin", 404, "User not found")
    await api.error("DELETE", "/api/users/1x", "admin", 400, "Invalid user ID")


async def _writers_waiting(db) -> int:
    """How many transactions are queued behind the one the test holds."""
    if db.dialect == "sqlite":
        return len(db._write_lock._waiters or ())
    # PostgreSQL: every transaction first takes one advisory lock (store/postgres.py), so the
    # waiting ones are that lock's ungranted requests in this test's database.
    from aichat.store.postgres import LOCKS, WRITES
    return await db.value(
        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = ? AND objid = ? AND objsubid = 2", (LOCKS, WRITES))


async def _with_writes_held(api, *calls):
    """Run `calls` concurrently while the test holds a transaction (which every write waits
    for, on either store), so every request has passed its checks outside the transaction
    before any of them may write."""
    import asyncio

    db = api.db
    async with db.transaction():
        tasks = [asyncio.ensure_future(call) for call in calls]
        for _ in range(500):
            if await _writers_waiting(db) == len(calls):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the requests never reached the write lock")
    return await asyncio.gather(*tasks)


async def test_two_admins_deleting_each_other_at_once_leave_one_admin(api):
    bob = await api.register("bob")
    await api.ok("PUT", f"/api/users/{bob.id}/role", "admin", json={"role": "ADMIN"})
    admin = api.users["admin"]
    first, second = await _with_writes_held(
        api, api.call("DELETE", f"/api/users/{bob.id}", "admin"),
        api.call("DELETE", f"/api/users/{admin.id}", bob))
    statuses = sorted([first[0], second[0]])
    assert statuses == [200, 403], (first, second)
    assert await api.rows("SELECT role FROM users") == [("ADMIN",)]


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(api):
    bob = await api.register("bob")
    await api.ok("PUT", f"/api/users/{bob.id}/role", "admin", json={"role": "ADMIN"})
    admin = api.users["admin"]
    results = await _with_writes_held(
        api, api.call("PUT", f"/api/users/{bob.id}/role", "admin", json={"role": "USER"}),
        api.call("PUT", f"/api/users/{admin.id}/role", bob, json={"role": "USER"}))
    assert sorted(r[0] for r in results) == [200, 403], results
    assert await api.rows("SELECT COUNT(*) FROM users WHERE role = 'ADMIN'") == [(1,)]
