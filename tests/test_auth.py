"""/api/auth: registration rules per mode, login, me, password change."""

from __future__ import annotations

import jwt
import pytest

from .helpers import assert_error


async def user_count(api) -> int:
    return await api.db.value("SELECT COUNT(*) FROM users")


async def test_first_user_becomes_admin_in_single_mode_then_registration_closes(start):
    api = await start(app_mode="single")
    first = await api.register("owner", "ownerpass1")
    assert first.role == "ADMIN"
    await api.error("POST", "/api/auth/register", None, 403,
                    "Registration is disabled in single user mode",
                    json={"username": "second", "password": "password1"})
    assert await user_count(api) == 1


async def test_multi_mode_registers_users_and_respects_the_setting(start):
    api = await start(app_mode="multi")
    admin = await api.register("admin", "adminpass1")
    bob = await api.register("bob")
    assert (admin.role, bob.role) == ("ADMIN", "USER")
    await api.ok("PUT", "/api/settings/system", admin, json={"registration_enabled": False})
    await api.error("POST", "/api/auth/register", None, 403, "Registration is currently disabled",
                    json={"username": "carol", "password": "password1"})
    await api.ok("PUT", "/api/settings/system", admin, json={"registration_enabled": True})
    await api.register("carol")


async def test_register_response_shape_and_token_claims(start):
    api = await start(app_mode="multi")
    status, body = await api.call("POST", "/api/auth/register",
                                  json={"username": "alice_1", "password": "password1"})
    assert status == 200 and body["success"] is True
    data = body["data"]
    assert set(data) == {"user", "token"}
    assert data["user"] == {"id": data["user"]["id"], "username": "alice_1", "role": "ADMIN"}
    claims = jwt.decode(data["token"], options={"verify_signature": False})
    assert claims["userId"] == data["user"]["id"] and isinstance(claims["userId"], int)
    assert claims["username"] == "alice_1" and claims["role"] == "ADMIN"
    assert claims["exp"] - claims["iat"] == 86400


async def test_duplicate_username_is_409_and_case_sensitive(api):
    await api.register("bob")
    await api.error("POST", "/api/auth/register", None, 409, "Username already exists",
                    json={"username": "bob", "password": "password1"})
    await api.register("Bob")


@pytest.mark.parametrize("body, message", [
    ({"password": "password1"}, "Username must be 3-20"),
    ({"username": "ab", "password": "password1"}, "Username must be 3-20"),
    ({"username": "a" * 21, "password": "password1"}, "Username must be 3-20"),
    ({"username": "bad name", "password": "password1"}, "Username must be 3-20"),
    ({"username": "émile", "password": "password1"}, "Username must be 3-20"),
    ({"username": 12345, "password": "password1"}, "Username must be 3-20"),
    ({"username": "carol"}, "Password must be at least 8"),
    ({"username": "carol", "password": "short1"}, "Password must be at least 8"),
    ({"username": "carol", "password": "onlyletters"}, "Password must be at least 8"),
    ({"username": "carol", "password": "12345678"}, "Password must be at least 8"),
    ({"username": "carol", "password": "a1" * 37}, "Password must be at least 8"),
    ({"username": "carol", "password": ["password1"]}, "Password must be at least 8"),
])
async def test_register_validation(api, body, message):
    await api.error("POST", "/api/auth/register", None, 400, message, json=body)
    assert await user_count(api) == 1


async def test_password_limit_counts_utf8_bytes(api):
    # 24 three-byte characters = 72 bytes: allowed; one more ASCII byte is not.
    await api.register("wide", "a1" + "界" * 23 + "b")
    await api.error("POST", "/api/auth/register", None, 400, "Password",
                    json={"username": "wider", "password": "a1" + "界" * 23 + "bc"})


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,2]", b'"text"', b"null", b"\xff\xfe", b"NaN"])
async def test_malformed_json_is_400(api, raw):
    await api.error("POST", "/api/auth/register", None, 400, "Invalid JSON body", data=raw)
    await api.error("POST", "/api/auth/login", None, 400, "Invalid JSON body", data=raw)


async def test_login(api):
    await api.register("bob", "password1")
    user = await api.login("bob", "password1")
    assert user.role == "USER"
    me = await api.ok("GET", "/api/auth/me", user)
    assert me["username"] == "bob" and me["createdAt"].endswith("Z")


@pytest.mark.parametrize("username, password", [
    ("bob", "wrongpass1"), ("nobody", "password1"), ("bob", "p1" * 40), ("bob", ""),
])
async def test_login_failures_are_401_with_one_message(api, username, password):
    await api.register("bob", "password1")
    await api.error("POST", "/api/auth/login", None, 401, "Invalid username or password",
                    json={"username": username, "password": password})


@pytest.mark.parametrize("body", [{}, {"username": "bob"}, {"password": "x"},
                                  {"username": 1, "password": "password1"}])
async def test_login_bad_input_is_400_naming_the_field(api, body):
    error = await api.error("POST", "/api/auth/login", None, 400, json=body)
    assert "username" in error or "password" in error


@pytest.mark.parametrize("header, message", [
    (None, "Missing or invalid authorization header"),
    ("Token abc", "Missing or invalid authorization header"),
    ("Bearer", "Missing or invalid authorization header"),
    ("Bearer ", "Missing or invalid authorization header"),
    ("Bearer not.a.jwt", "Invalid or expired token"),
])
async def test_me_requires_a_valid_bearer_token(api, header, message):
    headers = {"Authorization": header} if header is not None else None
    await api.error("GET", "/api/auth/me", None, 401, message, headers=headers)


async def test_expired_and_foreign_tokens_are_rejected(api):
    admin = api.users["admin"]
    claims = jwt.decode(admin.token, options={"verify_signature": False})
    expired = jwt.encode({**claims, "iat": claims["iat"] - 90000, "exp": claims["iat"] - 3600},
                         _secret(api), algorithm="HS256")
    forged = jwt.encode(claims, "another-secret-that-is-long-enough-for-hs256", algorithm="HS256")
    none_alg = jwt.encode(claims, None, algorithm="none")
    for token in (expired, forged, none_alg):
        await api.error("GET", "/api/auth/me", None, 401, "Invalid or expired token",
                        headers={"Authorization": f"Bearer {token}"})


def _secret(api) -> str:
    """The signing secret: set in the config (always, with PostgreSQL) or generated beside
    the SQLite file."""
    if api.config.jwt_secret:
        return api.config.jwt_secret
    from aichat.app import JWT_SECRET_FILE
    return (api.config.data_dir / JWT_SECRET_FILE).read_text().strip()


async def test_password_change_invalidates_older_tokens(api):
    bob = await api.register("bob", "password1")
    await api.ok("PUT", "/api/auth/password", bob,
                 json={"currentPassword": "password1", "newPassword": "password2"})
    await api.error("GET", "/api/auth/me", bob, 401, "Invalid or expired token")
    await api.error("POST", "/api/auth/login", None, 401, json={"username": "bob",
                                                                "password": "password1"})
    fresh = await api.login("bob", "password2")
    await api.ok("GET", "/api/auth/me", fresh)


async def test_password_change_revokes_the_callers_api_keys(api):
    """A stolen token could have minted keys that never expire: they must not survive."""
    bob = await api.register("bob", "password1")
    carol = await api.register("carol", "password1")
    keys = [(await api.ok("POST", "/api/keys", bob, json={"name": f"k{i}"}))["key"]
            for i in range(2)]
    kept = (await api.ok("POST", "/api/keys", carol, json={"name": "carol's"}))["key"]
    status, body = await api.call("PUT", "/api/auth/password", bob,
                                  json={"currentPassword": "password1",
                                        "newPassword": "password2"})
    assert status == 200 and body["data"] is None
    assert "2 API keys revoked" in body["message"]
    for key in keys:
        async with api.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 401
    async with api.client.get("/v1/models", headers={"Authorization": f"Bearer {kept}"}) as r:
        assert r.status == 200


async def test_password_change_rules(api):
    bob = await api.register("bob", "password1")
    await api.error("PUT", "/api/auth/password", None, 401,
                    json={"currentPassword": "password1", "newPassword": "password2"})
    await api.error("PUT", "/api/auth/password", bob, 400, "Current password is incorrect",
                    json={"currentPassword": "nope12345", "newPassword": "password2"})
    await api.error("PUT", "/api/auth/password", bob, 400, "newPassword",
                    json={"currentPassword": "password1", "newPassword": "short"})
    await api.error("PUT", "/api/auth/password", bob, 400, "currentPassword",
                    json={"newPassword": "password2"})
    await api.error("PUT", "/api/auth/password", bob, 400, "Invalid JSON body", data=b"[")
    # Nothing changed: the old password still works and the token is still valid.
    await api.ok("GET", "/api/auth/me", bob)
    await api.login("bob", "password1")


async def test_deleted_user_token_is_401_user_not_found(api):
    bob = await api.register("bob")
    await api.ok("DELETE", f"/api/users/{bob.id}", "admin")
    await api.error("GET", "/api/auth/me", bob, 401, "User not found")


async def test_role_comes_from_the_database_not_the_token(api):
    bob = await api.register("bob")
    await api.error("GET", "/api/users", bob, 403)
    await api.ok("PUT", f"/api/users/{bob.id}/role", "admin", json={"role": "ADMIN"})
    await api.ok("GET", "/api/users", bob)  # same token, new role
    await api.ok("PUT", f"/api/users/{bob.id}/role", "admin", json={"role": "USER"})
    await api.error("GET", "/api/users", bob, 403, "Admin access required")


async def test_concurrent_first_registrations_make_exactly_one_admin(start):
    import asyncio
    api = await start(app_mode="multi")
    results = await asyncio.gather(*(
        api.call("POST", "/api/auth/register", json={"username": f"user{i}",
                                                     "password": "password1"})
        for i in range(5)))
    roles = [body["data"]["user"]["role"] for status, body in results if status == 200]
    assert len(roles) == 5 and roles.count("ADMIN") == 1


async def test_error_shape_helper_rejects_a_success_body():
    with pytest.raises(AssertionError):
        assert_error(200, {"success": True, "data": {}}, 200)


async def test_a_username_with_a_nul_character_is_just_unknown(api):
    # PostgreSQL refuses NUL in text: the lookup must not reach it (a 500 before this fix).
    await api.error("POST", "/api/auth/login", None, 401, "Invalid username or password",
                    json={"username": "ad\x00min", "password": "adminpass1"})
