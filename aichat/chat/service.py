"""Getting a chat round ready: ownership and model checks, the user message, the context.

`check_*` raise the JSON errors of docs/api.md before anything is stored; `open_round` runs
under the session's reservation (any running round has been cancelled) and stores the user
message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, cast

from aiohttp import web

from aichat.chat.attempts import Waits
from aichat.chat.call import UpstreamCall
from aichat.chat import quota
from aichat.chat.context import HISTORY_MESSAGES, Context, fit
from aichat.chat.quota import Hold, Limits
from aichat.chat.recorders import ChatRecorder, Turn
from aichat.chat.request import ChatRequest, Image, RegenerateRequest
from aichat.chat.round import Engine, Round
from aichat.http.appkeys import (cipher_key, config_key, db_key, http_key, metrics_key,
                                 registry_key, tokenizer_key)
from aichat.http.errors import ApiError, not_found
from aichat.settings import system as settings
from aichat.settings.system import StreamSettings
from aichat.store import messages, models
from aichat.store import settings as settings_store
from aichat.store.base import Transaction
from aichat.store.quotas import Ask
from aichat.store.users import User

TEMPERATURE = 0.7


@dataclass(slots=True)
class Prepared:
    """A request that passed every check: what `open_round` needs."""

    user: User
    session_id: int
    model: dict[str, Any]
    content: str
    settings: StreamSettings
    images: list[Image] = field(default_factory=list)
    user_message_id: int | None = None  # set for regenerate (the existing message)
    user_tokens: int | None = None
    hold: Hold = field(default_factory=Hold)  # its prompt against the quotas, once admitted
    reply_id: int | None = None  # a stream's reply row, stored with the user message

    @property
    def limits(self) -> Limits:
        return Limits.of(self.user, self.settings)


def user_turn(content: str, images: list[Image]) -> dict[str, Any]:
    """The new message in multimodal form: text first, then the images (docs/api.md §5.4)."""
    return {"role": "user",
            "content": [{"type": "text", "text": content}, *(i.part() for i in images)]}


def engine(app: Mapping[Any, Any]) -> Engine:
    """The /api app or, from /v1, its `config_dict`."""
    config = app[config_key]
    return Engine(app[http_key], app[tokenizer_key], app[registry_key],
                  Waits(config.provider_retry_wait_ms / 1000,
                        config.provider_rate_limit_wait_ms / 1000), app.get(metrics_key))


async def stream_settings(app: Mapping[Any, Any]) -> StreamSettings:
    """The run-time settings, read fresh for each round."""
    config = app[config_key]
    return settings.stream_settings(config, await settings.load(app[db_key].quick, config))


async def _session_model(app: web.Application, user: User, session_id: int) -> dict[str, Any]:
    # One read: the session's owner and its model (a model in use cannot be deleted).
    model = await models.of_session(app[db_key].quick, session_id, user.id)
    if model is None:
        raise not_found("Chat session")
    # A key that does not decrypt is the round's error to report, after the user message.
    return cast(dict[str, Any], models.with_key(app[cipher_key], model, strict=False))


async def check_chat(app: web.Application, user: User, request: ChatRequest) -> Prepared:
    model = await _session_model(app, user, request.session_id)
    if request.images and not model["supports_images"]:
        raise ApiError(400, "This model does not accept images")
    return Prepared(user, request.session_id, model, request.content,
                    await stream_settings(app), request.images)


async def check_regenerate(app: web.Application, user: User,
                           request: RegenerateRequest) -> Prepared:
    db = app[db_key].quick
    model = await _session_model(app, user, request.session_id)
    last = await messages.last_user(db, request.session_id)
    if last is None:
        raise ApiError(400, "Nothing to regenerate")
    if request.message_id is not None:
        if not await messages.is_reply(db, request.message_id, request.session_id):
            raise not_found("Message")
        if await messages.latest_reply_id(db, request.session_id) != request.message_id:
            raise ApiError(400, "Only the latest reply can be regenerated")
    tokens = last["token_count"] if last["token_mode"] == app[tokenizer_key].mode else None
    return Prepared(user, request.session_id, model, last["content"],
                    await stream_settings(app), user_message_id=last["id"], user_tokens=tokens)


async def context_limit(app: web.Application, user_id: int) -> int:
    personal = await settings_store.personal(app[db_key].quick, user_id)
    return (personal or {}).get("context_token_limit") or \
        app[config_key].default_context_token_limit


async def _user_tokens(app: web.Application, prepared: Prepared) -> int:
    if prepared.user_tokens is None:
        prepared.user_tokens = await app[tokenizer_key].count_async(prepared.content)
    return prepared.user_tokens


async def _context(app: web.Application, prepared: Prepared, tokens: int) -> Context:
    """The messages that fit before the new one: all of the session's (a new message is
    not stored yet) or those before the message regenerated."""
    history = await messages.history(app[db_key].quick, prepared.session_id,
                                     prepared.user_message_id, HISTORY_MESSAGES)
    return await fit(app[tokenizer_key], history, await context_limit(app, prepared.user.id),
                     tokens)


async def open_round(app: web.Application, prepared: Prepared, *, streamed: bool) -> Round:
    """Check the quotas with the prompt as it will be sent (429), then, in the same commit,
    store the user message (unless regenerating) and a stream's `streaming` reply row; build
    the round, not started yet. If it never starts, the caller releases `prepared.hold` and
    removes the reply row (handlers/chat.py `_setting_up`)."""
    db, tokenizer = app[db_key], app[tokenizer_key]
    tokens = await _user_tokens(app, prepared)
    # Read before the new message is stored: the same history either way.
    context = await _context(app, prepared, tokens)
    regenerate = prepared.user_message_id is not None
    session_id = prepared.session_id

    async def store(tx: Transaction) -> tuple[int, int | None]:
        """The user message (unless regenerating) and, for a stream, the reply row."""
        message_id = prepared.user_message_id
        if message_id is None:
            message_id = await messages.add(tx, session_id, "user", prepared.content,
                                            tokens=(tokens, tokenizer.mode))
        reply_id = await messages.add(tx, session_id, "assistant", "",
                                      status=messages.STREAMING) if streamed else None
        return message_id, reply_id

    ask = Ask(prepared.user.id, 0, context.prompt_tokens,
              quota.prompt_cost(prepared.model, context.prompt_tokens))
    admission, stored = await quota.admit(app, prepared.limits, ask,
                                          prepared.settings.currency, store)
    prepared.hold = admission.hold
    assert stored is not None
    message_id, prepared.reply_id = stored
    call = UpstreamCall(prepared.model,
                        [*context.history, user_turn(prepared.content, prepared.images)],
                        {"temperature": TEMPERATURE}, bool(prepared.images),
                        context.prompt_tokens, context.limit)
    turn = Turn(session_id, message_id, prepared.content, regenerate, prepared.reply_id)
    return Round(engine(app), call, ChatRecorder(db, call, turn, tokenizer.mode, prepared.hold),
                 settings=prepared.settings, user_id=prepared.user.id, turn=turn,
                 streamed=streamed)
