"""Fixtures: the real app on a temporary data folder, driven over real HTTP."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import pytest

from aichat.app import create_app
from aichat.settings.config import Config

from .helpers import Api

pytest_plugins = ["tests.secret_watch", "tests.pg_fixtures"]


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    """Test defaults: cheap bcrypt, heuristic tokens (fast start), no CORS surprises."""
    base = dict(database_path=str(tmp_path / "data" / "app.db"), bcrypt_rounds=4,
                tokenizer_mode="heuristic", heartbeat_floor_ms=10,
                provider_retry_wait_ms=50, provider_rate_limit_wait_ms=100,
                upstream_url_policy="any")  # the fake upstream lives on 127.0.0.1
    base.update(overrides)
    return Config(**base)


# Modules whose tests run on both stores: everything the HTTP API stores and reads back.
BOTH_BACKENDS = {"test_auth", "test_users", "test_models", "test_sessions", "test_ownership",
                 "test_settings", "test_chat_stream", "test_chat_control", "test_chat_usage",
                 "test_chat_outcome", "test_chat_slots", "test_chat_context", "test_v1",
                 "test_cluster", "test_prices",
                 "test_usage_summary", "test_quotas", "test_quota_enforcement", "test_resume",
                 "test_live_history", "test_audit", "test_search", "test_portability"}
PG_SECRETS = dict(jwt_secret="test-jwt-secret-" + "j" * 32,
                  encryption_key="test-encryption-key-" + "k" * 32)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        both = (metafunc.module.__name__.rpartition(".")[2] in BOTH_BACKENDS
                and metafunc.definition.get_closest_marker("sqlite_only") is None)
        backends = ["sqlite", "postgresql"] if both else ["sqlite"]
        if metafunc.definition.get_closest_marker("postgresql_only") is not None:
            backends = ["postgresql"]
        metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The store a test's app runs on: SQLite, and PostgreSQL for the BOTH_BACKENDS modules."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """A fresh PostgreSQL database's URL for a PostgreSQL run; None on SQLite."""
    if backend != "postgresql":
        return None
    return request.getfixturevalue("pg_app_url")


@pytest.fixture
def config_factory(tmp_path: Path, database_url: str | None) -> Callable[..., Config]:
    if database_url is None:
        return lambda **overrides: make_config(tmp_path, **overrides)
    # With PostgreSQL every instance must share the secrets: they are set, never generated.
    return lambda **overrides: make_config(
        tmp_path, **{"database_path": database_url, **PG_SECRETS, **overrides})


@pytest.fixture
def start(config_factory, aiohttp_client) -> Callable[..., Any]:
    """Start an app with config overrides and return an `Api` for it."""
    async def _start(resolver: Any = None, **overrides: Any) -> Api:
        config = config_factory(**overrides)
        client = await aiohttp_client(create_app(config, resolver=resolver))
        return Api(client, config)
    return _start


@pytest.fixture
async def api(start) -> Api:
    """Multi-user app with an admin (`admin`) already registered."""
    api = await start(app_mode="multi")
    await api.register("admin", "adminpass1")
    return api


@pytest.fixture
def replace_config() -> Callable[..., Config]:
    return dataclasses.replace


# --- chat: a fake upstream and a user with a model and a session pointing at it ---

@pytest.fixture
async def upstream(aiohttp_server):
    from .fake_upstream import API_PATH, FakeUpstream

    fake = FakeUpstream()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url(API_PATH))
    fake.server = server
    return fake


@pytest.fixture
def chat_factory(start, upstream):
    """Start an app (config overrides) with user `alice`, her model and a session."""
    from .helpers import Chat

    async def _make(**overrides: Any) -> Chat:
        api = await start(app_mode="multi", **overrides)
        await api.register("admin", "adminpass1")
        alice = await api.register("alice")
        model = await api.ok("POST", "/api/models", alice, json={
            "name": "fake-model", "apiUrl": upstream.url, "apiKey": "sk-alice-SECRET-0001",
            "supportsImages": True})
        session = await api.ok("POST", "/api/sessions", alice,
                               json={"modelConfigId": model["id"], "title": "Test"})
        return Chat(api, upstream, alice, model, session["id"])
    return _make


@pytest.fixture
async def chat(chat_factory):
    return await chat_factory()
