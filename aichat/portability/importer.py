"""POST /api/import's steps: read the body within `max_import_bytes`, parse and check it whole
(off the event loop), pick each session's model, then write it all in one transaction."""

from __future__ import annotations


from aichat.http import jsonfast
from aichat.http.errors import ApiError
from aichat.portability import chatgpt, ours
from aichat.portability.plan import FORMAT, Limits, Plan
from aichat.store import models
from aichat.store import portability as store
from aichat.store.base import Transaction

UNKNOWN = (f'The file is neither an aichat export (an object with "format": "{FORMAT}") nor '
           "ChatGPT's conversations.json (a list of conversations)")
NO_MODEL = ("Importing chats needs a model configuration to attach them to: add a model first "
            "(POST /api/models)")


def parse(raw: bytes, limits: Limits) -> Plan:
    """Blocking (a large body takes a while): run it in a thread."""
    try:
        body = jsonfast.loads(raw)
    except RecursionError:
        raise ApiError(400, "Invalid JSON body: nested too deeply") from None
    except ValueError as e:
        raise ApiError(400, f"Invalid JSON body: {str(e)[:200]}") from None
    if isinstance(body, list):
        return chatgpt.parse(body, limits)
    if isinstance(body, dict) and "format" in body:
        return ours.parse(body, limits)
    raise ApiError(400, UNKNOWN)


async def model_ids(tx: Transaction, user_id: int, plan: Plan) -> list[int]:
    """Each session's model: the one its file names if the user can use a model of that name
    (their own first, then a system one), else the user's oldest own, else the oldest system
    model; 400 NO_MODEL if there is none at all."""
    if not plan.sessions:
        return []
    default = await store.default_model(tx, user_id)
    if default is None:
        raise ApiError(400, NO_MODEL)
    by_name: dict[str, int | None] = {}
    chosen = []
    for session in plan.sessions:
        model_id = None
        if session.model is not None and "\x00" not in session.model:  # no name holds one
            if session.model not in by_name:
                by_name[session.model] = await models.visible_id(tx, user_id, session.model)
            model_id = by_name[session.model]
        chosen.append(model_id or default)
    return chosen


async def write(tx: Transaction, user_id: int, plan: Plan) -> None:
    """Every session of `plan`, new rows only (nothing existing is changed)."""
    for session, model_id in zip(plan.sessions, await model_ids(tx, user_id, plan),
                                 strict=True):
        await tx.call(store.add_session, user_id, model_id, session.title, session.created_at,
                      [m.row() for m in session.messages])
