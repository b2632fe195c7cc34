"""Typed keys for what the app and each request carry."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver
from typing import TYPE_CHECKING

from aichat.settings.config import Config
from aichat.security.crypto import KeyCipher
from aichat.security.passwords import PasswordHasher
from aichat.security.jwt_tokens import TokenService
from aichat.store.db import Database
from aichat.store.users import User
from aichat.timeutil import Clock

if TYPE_CHECKING:  # these modules import the keys themselves
    from aichat.chat.registry import Registry
    from aichat.chat.tokenizer import Tokenizer
    from aichat.metrics.catalog import Metrics
    from aichat.security.ratelimit import FailureLimiter

config_key = web.AppKey("config", Config)
db_key = web.AppKey("db", Database)
http_key = web.AppKey("http", aiohttp.ClientSession)
tokens_key = web.AppKey("tokens", TokenService)
cipher_key = web.AppKey("cipher", KeyCipher)
hasher_key = web.AppKey("hasher", PasswordHasher)
registry_key: web.AppKey[Registry] = web.AppKey("registry")
tokenizer_key: web.AppKey[Tokenizer] = web.AppKey("tokenizer")
resolver_key = web.AppKey("resolver", AbstractResolver)
limiter_key: web.AppKey[FailureLimiter] = web.AppKey("limiter")
trusted_proxies_key = web.AppKey("trusted_proxies", list)
clock_key = web.AppKey("clock", Clock)
metrics_key: web.AppKey[Metrics] = web.AppKey("metrics")
user_key = web.RequestKey("user", User)
