"""Quotas (docs/api.md §9): where the caller stands, and an admin's view and overrides of a
user's limits."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aichat.chat import quota, service
from aichat.chat.quota import Limits
from aichat.handlers.audit import record
from aichat.http.access import admin_only
from aichat.http.appkeys import config_key, db_key, user_key
from aichat.http.bodies import USER_LIMITS
from aichat.http.errors import not_found, ok
from aichat.http.validate import path_id, read_json
from aichat.settings.system import StreamSettings
from aichat.store import prices, quotas, users
from aichat.store.users import User

routes = web.RouteTableDef()

# The API's names of a user's limits and their users columns.
COLUMNS = dict(zip(USER_LIMITS.fields, quotas.LIMIT_COLUMNS, strict=True))


def _names(limits: Limits) -> dict[str, Any]:
    return {"requestsPerMinute": limits.requests_per_minute,
            "tokensPerDay": limits.tokens_per_day, "tokensPerMonth": limits.tokens_per_month,
            "costPerMonth": prices.from_nanos(limits.cost_per_month_nanos),
            "maxConcurrentStreams": limits.max_streams}


def _own(user: User) -> dict[str, Any]:
    """The user's own limits by their API names (None: the default)."""
    own = {name: getattr(user, column) for name, column in COLUMNS.items()}
    own["costPerMonth"] = prices.from_micros(own["costPerMonth"])
    return own


def _view(user: User, settings: StreamSettings) -> dict[str, Any]:
    """The user's own limits (null: the default), the defaults, and what is in force."""
    own = _own(user)
    defaults = _names(Limits.of(User(0, "", "USER", 0, ""), settings))
    return {**own, "defaults": defaults, "effective": _names(Limits.of(user, settings))}


async def _user(request: web.Request) -> User:
    user = await users.get(request.app[db_key], path_id(request, "id", "user"))
    if user is None:
        raise not_found("User")
    return user


@routes.get("/api/quota")
async def my_quota(request: web.Request) -> web.Response:
    return await _quota(request, request[user_key])


@routes.get("/api/users/{id}/quota")
@admin_only
async def user_quota(request: web.Request) -> web.Response:
    return await _quota(request, await _user(request))


async def _quota(request: web.Request, user: User) -> web.Response:
    settings = await service.stream_settings(request.app)
    return ok(await quota.report(request.app, user, Limits.of(user, settings),
                                 settings.currency))


@routes.get("/api/users/{id}/limits")
@admin_only
async def get_limits(request: web.Request) -> web.Response:
    user = await _user(request)
    return ok(_view(user, await service.stream_settings(request.app)))


@routes.put("/api/users/{id}/limits")
@admin_only
async def set_limits(request: web.Request) -> web.Response:
    db = request.app[db_key]
    user_id = path_id(request, "id", "user")
    body = await read_json(request, request.app[config_key].max_json_body)
    values = {COLUMNS[name]: value for name, value in USER_LIMITS.parse(body).items()
              if value is not None}
    values.update({COLUMNS[name]: None for name in USER_LIMITS.nulls(body)})
    if "cost_per_month_micros" in values and values["cost_per_month_micros"] is not None:
        values["cost_per_month_micros"] = prices.to_micros(values["cost_per_month_micros"])
    async with db.transaction() as tx:
        before = await users.get(tx, user_id)
        if before is None or not await quotas.set_overrides(tx, user_id, values):
            raise not_found("User")
        user = await users.get(tx, user_id)
        assert user is not None
        if values:
            old, new = _own(before), _own(user)
            changes = {name: {"from": old[name], "to": new[name]}
                       for name, column in COLUMNS.items() if column in values}
            await record(tx, request, "limits_change", f"user:{user_id}",
                         {"username": user.username, "changes": changes})
    return ok(_view(user, await service.stream_settings(request.app)),
              "Limits updated")
