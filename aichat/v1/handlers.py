"""GET /v1/models and POST /v1/chat/completions, in OpenAI's request and response formats.

Model ids are config names. A user's personal config shadows a system config of the same
name: the one they made themselves is the one they mean.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web

from aichat.settings import system as settings
from aichat.http.access import api_key_ok
from aichat.chat.context import CONVERSATION_OVERHEAD, MESSAGE_OVERHEAD, Context
from aichat.chat import relay
from aichat.chat.round import Waits
from aichat.chat.registry import PERSIST_WAIT_S
from aichat.http.errors import ApiError, json_response
from aichat.http.appkeys import (cipher_key, config_key, db_key, http_key, registry_key,
                                 tokenizer_key, user_key)
from aichat.store import models
from aichat.http.validate import read_json
from aichat.v1.middlewares import api_key_id_key
from aichat.v1.round import ApiRound
from aichat.v1.sink import OpenAISink

routes = web.RouteTableDef()

ROLES = ("system", "developer", "user", "assistant", "tool")
# Set by us: the model's upstream name, streaming, and the message list as validated.
_OURS = ("model", "messages", "stream")


def _visible_by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_name: dict[str, dict[str, Any]] = {}
    for row in rows:  # personal first, so they win a name clash
        by_name.setdefault(row["name"], row)
    return by_name


@routes.get("/models")
@api_key_ok
async def list_models(request: web.Request) -> web.Response:
    visible = await models.list_visible(request.config_dict[db_key].quick,
                                        request[user_key].id)
    data = []
    for name, row in _visible_by_name(visible["personal"] + visible["system"]).items():
        created = row["createdAt"]
        data.append({"id": name, "object": "model",
                     "created": int(time.mktime(time.strptime(created[:19],
                                                              "%Y-%m-%dT%H:%M:%S"))),
                     "owned_by": "user" if row["userId"] is not None else "system"})
    return json_response({"object": "list", "data": data})


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _check_messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "messages must be a non-empty array")
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of: {', '.join(ROLES)}")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise ApiError(400, f"messages[{i}].content must be a string or an array")
    return value


async def _prompt_estimate(tokenizer: Any, messages: list[dict[str, Any]]) -> int:
    """api.md §5.3's cost, used only when the provider reports no usage."""
    await tokenizer.warm()
    total = CONVERSATION_OVERHEAD
    for message in messages:
        total += (MESSAGE_OVERHEAD + await tokenizer.count_async(_text_of(message.get("content")))
                  + tokenizer.role_cost(message["role"]))
    return total


async def _model(app: Any, user_id: int, name: Any) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise ApiError(400, "model is required")
    row = await app[db_key].quick.one(
        "SELECT id FROM model_configs WHERE name = ? AND (user_id = ? OR user_id IS NULL)"
        " ORDER BY user_id IS NULL LIMIT 1", (name, user_id))
    if row is None:
        raise ApiError(404, f"The model '{name}' does not exist")
    # A key that does not decrypt is reported by the round as its error.
    return await models.upstream(app[db_key].quick, app[cipher_key], row["id"], strict=False)


@routes.post("/chat/completions")
@api_key_ok
async def chat_completions(request: web.Request) -> web.StreamResponse:
    app, user = request.config_dict, request[user_key]
    config = app[config_key]
    body = await read_json(request, config.max_chat_body)
    messages = _check_messages(body.get("messages"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false")
    if body.get("n") not in (None, 1):
        raise ApiError(400, "n must be 1")
    model = await _model(app, user.id, body.get("model"))
    if not model["supports_images"] and any(
            isinstance(m.get("content"), list) and any(
                isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"])
            for m in messages):
        raise ApiError(400, "This model does not accept images")
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    stream_settings = settings.stream_settings(
        config, await settings.load(app[db_key].quick, config))
    registry = app[registry_key]
    if not registry.claim(user.id, None, stream_settings.max_streams):
        raise ApiError(429, f"Too many requests are generating at once (limit "
                       f"{stream_settings.max_streams})", {"Retry-After": "15"})
    try:
        round_ = ApiRound(
            db=app[db_key], http=app[http_key], tokenizer=app[tokenizer_key], registry=registry,
            settings=stream_settings,
            waits=Waits(config.provider_retry_wait_ms / 1000,
                        config.provider_rate_limit_wait_ms / 1000),
            user_id=user.id, model=model,
            context=Context([], await _prompt_estimate(app[tokenizer_key], messages), 0),
            messages=messages, options={k: v for k, v in body.items() if k not in _OURS},
            api_key_id=request.get(api_key_id_key), streamed=stream)
        if stream:
            return await _stream(request, round_, include_usage)
        round_.start()
    finally:
        registry.release(user.id)
    await round_.follow(PERSIST_WAIT_S)
    return _completion(round_)


async def _stream(request: web.Request, round_: ApiRound,
                  include_usage: bool) -> web.StreamResponse:
    writer = await relay.begin(request, round_, lambda writer: OpenAISink(
        writer, round_.model["name"], include_usage))
    if writer is None:  # the client left before the headers went out
        return web.Response(status=499)
    return await relay.finish(round_, writer)


def _completion(round_: ApiRound) -> web.Response:
    outcome = round_.outcome
    if outcome is not None and outcome.status == "error":
        status = {"timeout": 504, "blocked": 400, "internal": 500, "storage": 500}.get(
            outcome.kind or "", 502)
        raise ApiError(status, outcome.error or "AI API request failed")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(round_.text_parts)}
    if round_.reasoning_parts:
        message["reasoning_content"] = "".join(round_.reasoning_parts)
    usage = round_.final_usage or {}
    return json_response({
        "id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion",
        "created": int(time.time()), "model": round_.model["name"],
        "choices": [{"index": 0, "message": message,
                     "finish_reason": round_.finish_reason or "stop"}],
        "usage": {k: usage.get(k, 0) for k in
                  ("prompt_tokens", "completion_tokens", "total_tokens")}})


