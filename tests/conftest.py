"""Fixtures: the real app on a temporary data folder, driven over real HTTP."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import pytest

from aichat.app import create_app
from aichat.config import Config

from .helpers import Api


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    """Test defaults: cheap bcrypt, heuristic tokens (fast start), no CORS surprises."""
    base = dict(database_path=str(tmp_path / "data" / "app.db"), bcrypt_rounds=4,
                tokenizer_mode="heuristic", heartbeat_floor_ms=10,
                provider_retry_wait_ms=50, provider_rate_limit_wait_ms=100)
    base.update(overrides)
    return Config(**base)


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., Config]:
    return lambda **overrides: make_config(tmp_path, **overrides)


@pytest.fixture
def start(aiohttp_client, config_factory) -> Callable[..., Any]:
    """Start an app with config overrides and return an `Api` for it."""
    async def _start(**overrides: Any) -> Api:
        config = config_factory(**overrides)
        client = await aiohttp_client(create_app(config))
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
