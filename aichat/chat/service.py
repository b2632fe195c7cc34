"""Getting a round ready: ownership and model checks, the user message, the context.

`check_*` raise the JSON errors of api.md before anything is stored; `open_round` runs under the
session's reservation (any running round has been cancelled) and stores the user message.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from aichat.settings import system as settings
from aichat.http.errors import ApiError, not_found
from aichat.http.appkeys import (cipher_key, config_key, db_key, http_key, registry_key,
                                 tokenizer_key)
from aichat.store import messages, models, sessions
from aichat.store import settings as settings_store
from aichat.store.users import User
from aichat.chat.context import HISTORY_MESSAGES, fit
from aichat.settings.system import StreamSettings
from aichat.chat.request import ChatRequest, RegenerateRequest
from aichat.chat.round import Round, Waits


@dataclass(slots=True)
class Prepared:
    """A request that passed every check: what `open_round` needs."""

    user: User
    session_id: int
    model: dict[str, Any]
    content: str
    new_message: dict[str, Any]
    settings: StreamSettings
    user_message_id: int | None = None  # set for regenerate (the existing message)
    user_tokens: int | None = None


def user_turn(content: str, images: list[Any]) -> dict[str, Any]:
    """The new message in multimodal form: text first, then the images (api.md §5.4)."""
    return {"role": "user",
            "content": [{"type": "text", "text": content}, *(i.part() for i in images)]}


async def _session_model(app: web.Application, user: User, session_id: int) -> dict[str, Any]:
    db = app[db_key].quick
    session = await sessions.owned(db, session_id, user.id)
    if session is None:
        raise not_found("Chat session")
    # A key that does not decrypt is the round's error to report, after the user message.
    model = await models.upstream(db, app[cipher_key], session["model_config_id"],
                                  strict=False)
    if model is None:
        raise not_found("Model configuration")
    return model


async def _settings(app: web.Application) -> StreamSettings:
    config = app[config_key]
    return settings.stream_settings(config, await settings.load(app[db_key].quick, config))


async def check_chat(app: web.Application, user: User, request: ChatRequest) -> Prepared:
    model = await _session_model(app, user, request.session_id)
    if request.images and not model["supports_images"]:
        raise ApiError(400, "This model does not accept images")
    return Prepared(user, request.session_id, model, request.content,
                    user_turn(request.content, request.images), await _settings(app))


async def check_regenerate(app: web.Application, user: User,
                           request: RegenerateRequest) -> Prepared:
    db = app[db_key].quick
    model = await _session_model(app, user, request.session_id)
    last = await messages.last_user(db, request.session_id)
    if last is None:
        raise ApiError(400, "Nothing to regenerate")
    if request.message_id is not None:
        latest = await db.one(
            "SELECT id FROM messages WHERE session_id = ? AND role = 'assistant'"
            " ORDER BY created_at DESC, id DESC LIMIT 1", (request.session_id,))
        target = await db.one("SELECT id FROM messages WHERE id = ? AND session_id = ?"
                              " AND role = 'assistant'", (request.message_id, request.session_id))
        if target is None:
            raise not_found("Message")
        if latest is None or latest["id"] != target["id"]:
            raise ApiError(400, "Only the latest reply can be regenerated")
    tokens = last["token_count"] if last["token_mode"] == app[tokenizer_key].mode else None
    return Prepared(user, request.session_id, model, last["content"],
                    user_turn(last["content"], []), await _settings(app),
                    user_message_id=last["id"], user_tokens=tokens)


async def context_limit(app: web.Application, user_id: int) -> int:
    personal = await settings_store.personal(app[db_key].quick, user_id)
    return (personal or {}).get("context_token_limit") or \
        app[config_key].default_context_token_limit


async def open_round(app: web.Application, prepared: Prepared, *, streamed: bool) -> Round:
    """Store the user message (unless regenerating) and build the round; not started yet."""
    db, tokenizer, config = app[db_key], app[tokenizer_key], app[config_key]
    tokens = prepared.user_tokens
    if tokens is None:
        tokens = await tokenizer.count_async(prepared.content)
    regenerate = prepared.user_message_id is not None
    if not regenerate:
        prepared.user_message_id = await db.run(functools.partial(
            messages.add, session_id=prepared.session_id, role="user",
            content=prepared.content, tokens=(tokens, tokenizer.mode)))
    history = await messages.history(db.quick, prepared.session_id, prepared.user_message_id,
                                     HISTORY_MESSAGES)
    context = await fit(tokenizer, history, await context_limit(app, prepared.user.id), tokens)
    return Round(
        db=db, http=app[http_key], tokenizer=tokenizer, registry=app[registry_key],
        settings=prepared.settings,
        waits=Waits(config.provider_retry_wait_ms / 1000,
                    config.provider_rate_limit_wait_ms / 1000),
        session_id=prepared.session_id, user_id=prepared.user.id, model=prepared.model,
        user_message_id=prepared.user_message_id, user_content=prepared.content,
        context=context, new_message=prepared.new_message, regenerate=regenerate,
        streamed=streamed)
