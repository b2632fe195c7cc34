"""A /v1 round: the client's own messages, relayed by the chat engine, accounted per request."""

from __future__ import annotations

from typing import Any, Mapping

from aichat.chat import service
from aichat.chat.call import UpstreamCall
from aichat.chat.recorders import ApiRecorder
from aichat.chat.round import Round
from aichat.chat.quota import Hold
from aichat.http.appkeys import db_key
from aichat.settings.system import StreamSettings
from aichat.v1.request import CompletionRequest


def open_round(app: Mapping[Any, Any], user_id: int, api_key_id: int | None,
               model: dict[str, Any], request: CompletionRequest, settings: StreamSettings,
               prompt_tokens: int, hold: Hold) -> Round:
    """The round for a checked request; not started yet. No session, no history, no
    context budget: the messages go as sent, and nothing is stored but one usage row."""
    call = UpstreamCall(model, request.messages, request.options, request.has_images,
                        prompt_tokens)
    recorder = ApiRecorder(app[db_key], call, user_id, api_key_id, hold)
    return Round(service.engine(app), call, recorder, settings=settings, user_id=user_id,
                 streamed=request.stream)
