"""GET /v1/models and POST /v1/chat/completions, in OpenAI's request and response formats.

Model ids are config names. A user's personal config shadows a system config of the same
name: the one they made themselves is the one they mean.
"""

from __future__ import annotations

import calendar
import secrets
import time
from typing import Any

from dataclasses import replace

from aiohttp import web

from aichat.chat import quota, relay, service
from aichat.chat.quota import Limits
from aichat.chat.outcome import raise_failure
from aichat.chat.registry import PERSIST_WAIT_S
from aichat.chat.round import Round
from aichat.http.access import api_key_ok
from aichat.http.appkeys import (cipher_key, config_key, db_key, registry_key, tokenizer_key,
                                 user_key)
from aichat.http.errors import ApiError, json_response
from aichat.http.validate import read_json
from aichat.store import models
from aichat.store.quotas import Ask
from aichat.v1 import round as api_round
from aichat.v1.middlewares import api_key_id_key, api_key_tokens_key
from aichat.v1.request import Limits as Sizes, parse_completion, prompt_estimate
from aichat.v1.sink import OpenAISink

routes = web.RouteTableDef()


def _visible_by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_name: dict[str, dict[str, Any]] = {}
    for row in rows:  # personal first, so they win a name clash
        by_name.setdefault(row["name"], row)
    return by_name


@routes.get("/models")
@api_key_ok
async def list_models(request: web.Request) -> web.Response:
    # On the database thread, not the inline reader: a list's length is the caller's to grow.
    visible = await models.list_visible(request.config_dict[db_key], request[user_key].id)
    data = []
    for name, row in _visible_by_name(visible["personal"] + visible["system"]).items():
        created = row["createdAt"]
        data.append({"id": name, "object": "model",
                     "created": calendar.timegm(time.strptime(created[:19],
                                                              "%Y-%m-%dT%H:%M:%S")),
                     "owned_by": "user" if row["userId"] is not None else "system"})
    return json_response({"object": "list", "data": data})


async def _model(app: Any, user_id: int, name: str) -> dict[str, Any]:
    db = app[db_key].quick
    model_id = await models.visible_id(db, user_id, name)
    if model_id is None:
        raise ApiError(404, f"The model '{name}' does not exist")
    # A key that does not decrypt is reported by the round as its error.
    model = await models.upstream(db, app[cipher_key], model_id, strict=False)
    if model is None:  # deleted since the look-up
        raise ApiError(404, f"The model '{name}' does not exist")
    return model


@routes.post("/chat/completions")
@api_key_ok
async def chat_completions(request: web.Request) -> web.StreamResponse:
    app, user = request.config_dict, request[user_key]
    config = app[config_key]
    asked = parse_completion(await read_json(request, config.max_chat_body), Sizes.of(config))
    model = await _model(app, user.id, asked.model)
    if asked.has_images and not model["supports_images"]:
        raise ApiError(400, "This model does not accept images")
    settings = await service.stream_settings(app)
    key_id = request.get(api_key_id_key)
    limits = replace(Limits.of(user, settings),
                     key_tokens_per_month=request.get(api_key_tokens_key))
    tokens = await prompt_estimate(app[tokenizer_key], asked.messages)
    ask = Ask(user.id, key_id or 0, tokens, quota.prompt_cost(model, tokens))
    refusal = f"Too many requests are generating at once (limit {limits.max_streams})"
    async with app[registry_key].booked(user.id, limits.max_streams, refusal):
        admission, _ = await quota.admit(app, limits, ask, settings.currency)
        async with quota.holding(admission.hold):
            round_ = api_round.open_round(app, user.id, key_id, model, asked, settings, tokens,
                                          admission.hold)
            if asked.stream:
                writer = await relay.begin(request, round_, lambda writer: OpenAISink(
                    writer, round_.call.model_name, asked.include_usage), admission.headers())
            else:
                round_.start()
    if not asked.stream:
        await round_.follow(PERSIST_WAIT_S)
        raise_failure(round_.outcome)
        return _completion(round_, admission.headers())
    if writer is None:  # the client left before the headers went out
        return web.Response(status=499)
    return await relay.finish(round_, writer)


def _completion(round_: Round, headers: dict[str, str]) -> web.Response:
    reply = round_.reply
    message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.text_parts)}
    if reply.reasoning_parts:
        message["reasoning_content"] = "".join(reply.reasoning_parts)
    usage = round_.final_usage or {}
    return json_response({
        "id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion",
        "created": int(time.time()), "model": round_.call.model_name,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": reply.finish_reason or "stop"}],
        "usage": {k: usage.get(k, 0) for k in
                  ("prompt_tokens", "completion_tokens", "total_tokens")}}, headers=headers)
