"""A /v1 round: the client's own messages, relayed by the chat engine, accounted per request."""

from __future__ import annotations

from typing import Any, Mapping

from aichat.chat import service
from aichat.chat.call import UpstreamCall
from aichat.chat.recorders import ApiRecorder
from aichat.chat.round import Round
from aichat.http.appkeys import db_key, tokenizer_key
from aichat.settings.system import StreamSettings
from aichat.v1.request import CompletionRequest, prompt_estimate


async def open_round(app: Mapping[Any, Any], user_id: int, api_key_id: int | None,
                     model: dict[str, Any], request: CompletionRequest,
                     settings: StreamSettings) -> Round:
    """The round for a checked request; not started yet. No session, no history, no
    context budget: the messages go as sent, and nothing is stored but one usage row."""
    call = UpstreamCall(model, request.messages, request.options, request.has_images,
                        await prompt_estimate(app[tokenizer_key], request.messages))
    return Round(service.engine(app), call, ApiRecorder(app[db_key], call, user_id, api_key_id),
                 settings=settings, user_id=user_id, streamed=request.stream)
