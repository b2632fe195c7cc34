"""The app factory: the one place the pieces are wired together."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, AsyncIterator, cast

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from aichat.upstream import netpolicy
from aichat.security.accounts import valid_password, valid_username
from aichat.chat.checkpointer import Checkpointer
from aichat.chat.registry import Registry
from aichat.chat.tokenizer import heuristic
from aichat.chat.tokenizer import Tokenizer
from aichat.settings.config import Config, ConfigError
from aichat.http.cors import setup_cors
from aichat.http.errors import ApiError
from aichat.handlers import auth as auth_handlers
from aichat.handlers import chat, api_keys as keys, meta, models, openapi, quotas as quota_handlers
from aichat.handlers import follow, sessions, usage, users
from aichat.handlers import audit as audit_handlers
from aichat.audit_sweep import audit_sweep_ctx
from aichat.handlers import metrics as metrics_handlers
from aichat.handlers import portability, search
from aichat.handlers import settings as settings_handlers
from aichat.http.appkeys import (cipher_key, clock_key, config_key, db_key, hasher_key,
                                 http_key, limiter_key, metrics_key, registry_key, resolver_key,
                                 tokenizer_key, tokens_key, trusted_proxies_key)
from aichat.http import requestid
from aichat.http.middlewares import auth_middleware, error_middleware, observe_middleware
from aichat.metrics.catalog import Metrics
from aichat.security.ratelimit import FailureLimiter, SharedFailureLimiter, parse_networks
from aichat.security import secrets_file
from aichat.security.crypto import KeyCipher
from aichat.security.passwords import PasswordHasher
from aichat.security.jwt_tokens import TokenService
from aichat.store import checkpoints, messages, quotas
from aichat.timeutil import Clock
from aichat.v1 import create_v1_app
from aichat.store import db as database
from aichat.store import users as users_store

if TYPE_CHECKING:
    from aichat.store.postgres import Database as PostgresDatabase

log = logging.getLogger(__name__)

JWT_SECRET_FILE = "jwt_secret"
ENCRYPTION_KEY_FILE = "encryption_key"


def create_app(config: Config, resolver: AbstractResolver | None = None) -> web.Application:
    """`resolver` replaces DNS resolution for upstream calls (tests script DNS answers)."""
    app = web.Application(middlewares=[observe_middleware, error_middleware, auth_middleware],
                          client_max_size=config.max_chat_body)
    app[config_key] = config
    if resolver is not None:
        app[resolver_key] = resolver
    app[hasher_key] = PasswordHasher(config.bcrypt_rounds)
    app[registry_key] = Registry()
    if config.metrics_enabled:
        app[metrics_key] = Metrics("postgresql" if config.is_postgres else "sqlite",
                                   app[registry_key])
    app.on_response_prepare.append(requestid.add_header)
    app[clock_key] = Clock()
    app[limiter_key] = FailureLimiter(address_limit=config.login_address_limit,
                                      pair_limit=config.login_account_limit)
    app[trusted_proxies_key] = parse_networks(config.trusted_proxies)
    app[tokenizer_key] = Tokenizer(config.tokenizer_mode)
    app.cleanup_ctx.extend([secrets_ctx, db_ctx, cluster_ctx, http_ctx, checkpoint_ctx])
    app.cleanup_ctx.append(audit_sweep_ctx)
    app.on_shutdown.append(stop_rounds)
    for module in (auth_handlers, users, models, sessions, chat, follow, usage, keys,
                   settings_handlers, quota_handlers, audit_handlers, search, portability,
                   meta, openapi, metrics_handlers):
        app.router.add_routes(module.routes)
    setup_cors(app, config)
    app.add_subapp("/v1", create_v1_app())  # after CORS: SDK clients are not browsers
    return app


async def secrets_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[config_key]
    if config.is_postgres and not (config.jwt_secret and config.encryption_key):
        # A generated secret would live in one instance's data folder: tokens and stored API
        # keys from one instance would mean nothing to the next.
        raise ConfigError("with PostgreSQL, set JWT_SECRET and ENCRYPTION_KEY (the same on "
                          "every instance): they are never generated for a shared database")
    app[tokens_key] = TokenService(
        secrets_file.load_or_create(config.data_dir, JWT_SECRET_FILE, config.jwt_secret))
    app[cipher_key] = KeyCipher(
        secrets_file.load_or_create(config.data_dir, ENCRYPTION_KEY_FILE, config.encryption_key))
    yield


async def db_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[config_key]
    db = await database.connect(config)
    log.info("database: %s", config.database_label)
    try:
        if db.dialect == "sqlite":  # PostgreSQL: the cluster recovers what dead instances left
            recovered = await db.run(checkpoints.recover, heuristic)
            if recovered:
                log.warning("recovered %d round(s) cut off by an unclean stop; their partial "
                            "replies are kept as 'interrupted'", len(recovered))
            await db.run(messages.drop_streaming, False)  # died before any checkpoint
            await db.run(quotas.clear_holds)  # this process was the only one holding
        await bootstrap_admin(app, db, config)
        if metrics_key in app:
            db.on_write = app[metrics_key].wrote
        app[db_key] = db
        yield
    finally:
        await db.close()


async def cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    """With PostgreSQL, this instance joins the others sharing the database."""
    db = app[db_key]
    if db.dialect != "postgresql":
        yield
        return
    from aichat.chat.cluster import Cluster
    cluster = Cluster(cast("PostgresDatabase", db), heuristic)
    await cluster.start(app[registry_key])
    app[registry_key].cluster = cluster
    config = app[config_key]
    app[limiter_key] = SharedFailureLimiter(db, address_limit=config.login_address_limit,
                                            pair_limit=config.login_account_limit)
    try:
        yield
    finally:
        app[registry_key].cluster = None
        await cluster.close()


async def http_ctx(app: web.Application) -> AsyncIterator[None]:
    # One pool for every upstream call. No total timeout here: each round sets its own budget.
    if resolver_key not in app:
        app[resolver_key] = DefaultResolver()  # needs the running loop, so made here
    # Every new connection's address passes the upstream URL policy (upstream/netpolicy.py) first.
    connector = aiohttp.TCPConnector(limit=1000, limit_per_host=0, ttl_dns_cache=300,
                                     resolver=app[resolver_key],
                                     socket_factory=netpolicy.guarded_socket)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(None),
                                     auto_decompress=True, trust_env=False) as session:
        app[http_key] = session
        yield


async def checkpoint_ctx(app: web.Application) -> AsyncIterator[None]:
    checkpointer = Checkpointer(app[db_key], app[registry_key],
                                app[config_key].checkpoint_interval_ms / 1000)
    checkpointer.start()
    yield
    await checkpointer.stop()


async def stop_rounds(app: web.Application) -> None:
    # on_shutdown runs before aiohttp waits for open handlers: ending the rounds lets their
    # streams finish (partials saved) instead of holding shutdown for its whole timeout.
    await app[registry_key].cancel_all()


async def bootstrap_admin(app: web.Application, db: database.Database, config: Config) -> None:
    """Create DEFAULT_ADMIN_USERNAME as ADMIN when both variables are set and no user exists."""
    username, password = config.default_admin_username, config.default_admin_password
    if not username and not password:
        return
    if await users_store.count(db) > 0:
        return
    if not (username and password):
        raise ConfigError("DEFAULT_ADMIN_USERNAME and DEFAULT_ADMIN_PASSWORD must be set together")
    try:
        valid_username(username)
    except ApiError as e:
        raise ConfigError(f"DEFAULT_ADMIN_USERNAME: {e}") from None
    try:
        valid_password(password)
    except ApiError as e:
        raise ConfigError(f"DEFAULT_ADMIN_PASSWORD: {e}") from None
    hashed = await app[hasher_key].hash(password)
    async with db.transaction() as tx:
        if await users_store.count(tx) == 0:
            await users_store.create(tx, username, hashed, "ADMIN")
            log.info("created the first admin %r from DEFAULT_ADMIN_USERNAME", username)
