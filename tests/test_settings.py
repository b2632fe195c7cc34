"""/api/settings: system settings (read by all, written by admins), personal settings, service."""

from __future__ import annotations

import pytest

SYSTEM_KEYS = {"registration_enabled", "app_mode", "max_context_tokens", "brand_text",
               "sse_heartbeat_interval_ms", "provider_max_idle_ms", "provider_timeout_ms",
               "usage_emit", "usage_provider_only"}


async def test_every_user_reads_system_settings_typed(api):
    bob = await api.register("bob")
    data = await api.ok("GET", "/api/settings/system", bob)
    assert SYSTEM_KEYS <= set(data)
    assert data["registration_enabled"] is True and data["app_mode"] == "multi"
    assert data["brand_text"] == "AIChat" and data["max_context_tokens"] == 4000
    assert data["sse_heartbeat_interval_ms"] == 15000 and data["usage_emit"] is True
    await api.error("GET", "/api/settings/system", None, 401)


async def test_env_values_are_the_defaults(start):
    api = await start(app_mode="single", sse_heartbeat_interval_ms=2000, usage_emit=False,
                      default_context_token_limit=8000)
    admin = await api.register("admin", "adminpass1")
    data = await api.ok("GET", "/api/settings/system", admin)
    assert data["sse_heartbeat_interval_ms"] == 2000 and data["usage_emit"] is False
    assert data["max_context_tokens"] == 8000 and data["registration_enabled"] is False


async def test_admin_updates_system_settings_partially_ignoring_unknown_keys(api):
    before = await api.ok("GET", "/api/settings/system", "admin")
    data = await api.ok("PUT", "/api/settings/system", "admin",
                        json={**before, "brand_text": "Family AI", "provider_max_idle_ms": 0,
                              "whatever": 1, "app_mode": "single"})
    assert data["brand_text"] == "Family AI" and data["provider_max_idle_ms"] == 0
    assert data["app_mode"] == "multi"  # not a setting: comes from the environment
    again = await api.ok("GET", "/api/settings/system", "admin")
    assert again == data


@pytest.mark.parametrize("body, field", [
    ({"registration_enabled": "true"}, "registration_enabled"),
    ({"registration_enabled": 1}, "registration_enabled"),
    ({"brand_text": ""}, "brand_text"), ({"brand_text": "x" * 41}, "brand_text"),
    ({"brand_text": "   "}, "brand_text"), ({"brand_text": 5}, "brand_text"),
    ({"sse_heartbeat_interval_ms": 999}, "sse_heartbeat_interval_ms"),
    ({"sse_heartbeat_interval_ms": 1000.5}, "sse_heartbeat_interval_ms"),
    ({"provider_max_idle_ms": -1}, "provider_max_idle_ms"),
    ({"provider_timeout_ms": 9999}, "provider_timeout_ms"),
    ({"provider_timeout_ms": True}, "provider_timeout_ms"),
    ({"usage_emit": None, "usage_provider_only": "no"}, "usage_provider_only"),
])
async def test_system_settings_validation_writes_nothing(api, body, field):
    await api.error("PUT", "/api/settings/system", "admin", 400, field,
                    json={"brand_text": "Changed", **body})
    assert (await api.ok("GET", "/api/settings/system", "admin"))["brand_text"] == "AIChat"


async def test_system_settings_put_is_admin_only(api):
    bob = await api.register("bob")
    await api.error("PUT", "/api/settings/system", None, 401, json={})
    await api.error("PUT", "/api/settings/system", bob, 403, "Admin", json={"brand_text": "X"})
    await api.error("PUT", "/api/settings/system", "admin", 400, "Invalid JSON body", data=b"x")


async def test_an_admin_choice_survives_restarts(start, aiohttp_client):
    api = await start(app_mode="multi")
    admin = await api.register("admin", "adminpass1")
    await api.ok("PUT", "/api/settings/system", admin, json={"registration_enabled": False})
    from aichat.app import create_app
    client = await aiohttp_client(create_app(api.config))
    async with client.get("/api/settings/system", headers=admin.headers) as resp:
        assert (await resp.json())["data"]["registration_enabled"] is False


async def test_personal_settings_defaults_update_and_isolation(api):
    bob = await api.register("bob")
    assert await api.ok("GET", "/api/settings/personal", bob) == {
        "context_token_limit": 4000, "theme": "light"}
    data = await api.ok("PUT", "/api/settings/personal", bob, json={"theme": "dark"})
    assert data == {"context_token_limit": 4000, "theme": "dark"}
    data = await api.ok("PUT", "/api/settings/personal", bob, json={"context_token_limit": 8000})
    assert data == {"context_token_limit": 8000, "theme": "dark"}
    # Another user's settings are untouched.
    assert (await api.ok("GET", "/api/settings/personal", "admin"))["theme"] == "light"
    await api.error("GET", "/api/settings/personal", None, 401)
    await api.error("PUT", "/api/settings/personal", None, 401, json={"theme": "dark"})


@pytest.mark.parametrize("body, field", [
    ({"context_token_limit": 999}, "context_token_limit"),
    ({"context_token_limit": 32001}, "context_token_limit"),
    ({"context_token_limit": "4000"}, "context_token_limit"),
    ({"context_token_limit": 4000.0}, "context_token_limit"),
    ({"theme": "blue"}, "theme"), ({"theme": ["dark"]}, "theme"),
])
async def test_personal_settings_validation(api, body, field):
    bob = await api.register("bob")
    await api.error("PUT", "/api/settings/personal", bob, 400, field, json=body)
    assert await api.rows("SELECT COUNT(*) FROM user_settings") == [(0,)]


async def test_health_and_alias_are_public(api):
    for path in ("/api/settings/health", "/api/health"):
        data = await api.ok("GET", path)
        assert data["status"] == "healthy" and data["database"] == "connected"
        assert data["timestamp"].endswith("Z") and data["memory"]["rss"] > 1_000_000


async def test_health_reports_503_when_the_database_is_gone(api):
    from aichat.http.appkeys import db_key
    await api.client.app[db_key].conn.close()
    status, body = await api.call("GET", "/api/health")
    assert status == 503
    assert body["success"] is False and body["error"] == "Service is unhealthy"
    assert body["data"]["status"] == "unhealthy" and body["data"]["timestamp"].endswith("Z")


async def test_app_info_and_index(api):
    info = await api.ok("GET", "/api/settings/app-info")
    assert info["name"] == "aichat" and info["mode"] == "multi"
    assert info["features"] == {"registration": True, "streaming": True, "file_upload": False,
                                "long_term_memory": False}
    for path in ("/", "/api"):
        index = await api.ok("GET", path)
        assert "POST /api/auth/login" in index["routes"] and index["version"] == info["version"]
