"""/api/models: personal model configs (owner only) and system ones (admins write, all read)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aichat.handlers.audit import record, url_shown
from aichat.http.access import admin_only
from aichat.http.errors import ApiError, not_found, ok
from aichat.upstream import netpolicy
from aichat.settings import system as settings
from aichat.http.appkeys import cipher_key, config_key, db_key, resolver_key, user_key
from aichat.store import models
from aichat.store.db import Transaction, found
from aichat.http.bodies import MODEL_CREATE, MODEL_UPDATE, PRICES
from aichat.http.validate import path_id, read_json

routes = web.RouteTableDef()

NOT_FOUND = "Model configuration"


def model_fields(body: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """The fields present in `body`, checked by the create or the update declaration; in an
    update, a price sent as null is kept (as None: remove it)."""
    declared = MODEL_UPDATE if partial else MODEL_CREATE
    fields = {k: v for k, v in declared.parse(body).items() if v is not None}
    if partial:
        fields.update({name: None for name in declared.nulls(body) if name in PRICES})
    return fields


async def _system_values(request: web.Request) -> dict[str, Any]:
    return await settings.load(request.app[db_key].quick, request.app[config_key])


async def _check_policy(request: web.Request, values: dict[str, Any], url: str) -> None:
    """Personal models may only point where the upstream URL policy allows (system models are
    the admins' own choice)."""
    policy = netpolicy.NetPolicy.from_settings(values["upstream_url_policy"],
                                               values["upstream_allowlist"])
    try:
        await netpolicy.check_url(policy, request.app[resolver_key], url)
    except ValueError as e:
        raise ApiError(400, f"apiUrl not allowed: {e}") from None


# What the audit log keeps of a model: never its key, and its URL without user info or query.
_AUDITED = ("name", "apiUrl", "supportsImages", *PRICES)


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return {name: url_shown(row[name]) if name == "apiUrl" else row[name] for name in _AUDITED}


async def _record_update(tx: Transaction, request: web.Request, owner_id: int | None,
                         before: dict[str, Any], after: dict[str, Any],
                         fields: dict[str, Any]) -> None:
    """A system model's update (what changed; of the key, only that it was replaced), or a
    personal model's new upstream URL."""
    old, new = _shown(before), _shown(after)
    target = f"model:{after['id']}"
    if owner_id is None:
        changes = {name: {"from": old[name], "to": new[name]} for name in _AUDITED
                   if name in fields}
        await record(tx, request, "model_update", target,
                     {"name": after["name"], "changes": changes,
                      "apiKeyReplaced": "apiKey" in fields})
    elif before["apiUrl"] != after["apiUrl"]:
        await record(tx, request, "model_url_change", target,
                     {"name": after["name"], "from": old["apiUrl"], "to": new["apiUrl"]})


async def _create(request: web.Request, owner_id: int | None, clash: str) -> web.Response:
    db = request.app[db_key]
    fields = model_fields(await read_json(request, request.app[config_key].max_json_body),
                          partial=False)
    cap = 0
    if owner_id is not None:  # personal: the URL policy and the per-user cap apply
        values = await _system_values(request)
        await _check_policy(request, values, fields["apiUrl"])
        cap = values["max_models_per_user"]
    async with db.transaction() as tx:
        if owner_id is not None and await models.count_personal(tx, owner_id) >= cap:
            raise ApiError(400, f"At most {cap} model configurations per user; delete one "
                                "first")
        if await models.name_taken(tx, owner_id, fields["name"]):
            raise ApiError(409, clash)
        row = await models.create(tx, request.app[cipher_key], owner_id, fields["name"],
                                  fields["apiUrl"], fields["apiKey"], fields["supportsImages"],
                                  (fields.get(PRICES[0]), fields.get(PRICES[1])))
        if owner_id is None:
            await record(tx, request, "model_create", f"model:{row['id']}", _shown(row))
    return ok(row, "Model configuration created")


async def _update(request: web.Request, owner_id: int | None, clash: str) -> web.Response:
    db = request.app[db_key]
    model_id = path_id(request, "id", "model")
    fields = model_fields(await read_json(request, request.app[config_key].max_json_body),
                          partial=True)
    if await models.get_owned(db, model_id, owner_id) is None:
        raise not_found(NOT_FOUND)
    if owner_id is not None and "apiUrl" in fields:
        await _check_policy(request, await _system_values(request), fields["apiUrl"])
    async with db.transaction() as tx:
        before = await models.get_owned(tx, model_id, owner_id)
        if before is None:
            raise not_found(NOT_FOUND)
        if "name" in fields and await models.name_taken(tx, owner_id, fields["name"], model_id):
            raise ApiError(409, clash)
        await models.update(tx, request.app[cipher_key], model_id, fields)
        row = found(await models.get_owned(tx, model_id, owner_id))
        await _record_update(tx, request, owner_id, before, row, fields)
    return ok(row, "Model configuration updated")


async def _delete(request: web.Request, owner_id: int | None) -> web.Response:
    db = request.app[db_key]
    model_id = path_id(request, "id", "model")
    async with db.transaction() as tx:
        model = await models.get_owned(tx, model_id, owner_id)
        if model is None:
            raise not_found(NOT_FOUND)
        in_use = await models.sessions_using(tx, model_id)
        if in_use:
            raise ApiError(400, f"Cannot delete model: {in_use} chat sessions are using this model")
        await models.delete(tx, model_id)
        if owner_id is None:
            await record(tx, request, "model_delete", f"model:{model_id}", {"name": model["name"]})
    return ok(None, "Model configuration deleted")


# Static paths first: /api/models/system must not be read as /api/models/{id}.

@routes.get("/api/models/system/list")
@admin_only
async def list_system_models(request: web.Request) -> web.Response:
    return ok(await models.list_system_with_counts(request.app[db_key]))


@routes.post("/api/models/system")
@admin_only
async def create_system_model(request: web.Request) -> web.Response:
    return await _create(request, None, "System model name already exists")


@routes.put("/api/models/system/{id}")
@admin_only
async def update_system_model(request: web.Request) -> web.Response:
    return await _update(request, None, "System model name already exists")


@routes.delete("/api/models/system/{id}")
@admin_only
async def delete_system_model(request: web.Request) -> web.Response:
    return await _delete(request, None)


@routes.get("/api/models")
async def list_models(request: web.Request) -> web.Response:
    # On the database thread, not the inline reader: a list's length is the caller's to grow.
    return ok(await models.list_visible(request.app[db_key], request[user_key].id))


@routes.post("/api/models")
async def create_model(request: web.Request) -> web.Response:
    return await _create(request, request[user_key].id, "Model name already exists")


@routes.get("/api/models/{id}")
async def get_model(request: web.Request) -> web.Response:
    row = await models.get_visible(request.app[db_key], path_id(request, "id", "model"),
                                   request[user_key].id)
    if row is None:
        raise not_found(NOT_FOUND)
    return ok(row)


@routes.put("/api/models/{id}")
async def update_model(request: web.Request) -> web.Response:
    return await _update(request, request[user_key].id, "Model name already exists")


@routes.delete("/api/models/{id}")
async def delete_model(request: web.Request) -> web.Response:
    return await _delete(request, request[user_key].id)
