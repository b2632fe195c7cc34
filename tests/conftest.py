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


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., Config]:
    return lambda **overrides: make_config(tmp_path, **overrides)


@pytest.fixture
def start(aiohttp_client, config_factory) -> Callable[..., Any]:
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
