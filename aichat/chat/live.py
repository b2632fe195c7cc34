"""The text of replies still being generated, for the message history (docs/api.md §5.9).

A streamed round's reply row stays `streaming` and empty until the round ends; a listing
fills it in: from the round itself when it runs in this process, else (another instance on
PostgreSQL) from its checkpoints, at most a checkpoint interval behind.
"""

from __future__ import annotations

from typing import Any, Mapping

from aichat.http.appkeys import db_key, registry_key
from aichat.store import checkpoints
from aichat.store.messages import STREAMING


async def fill_streaming(app: Mapping[Any, Any], rows: list[dict[str, Any]]) -> None:
    """Give each `streaming` row of `rows` (messages as listed) the text so far."""
    for row in rows:
        if row["status"] != STREAMING:
            continue
        round_ = app[registry_key].running(row["sessionId"])
        if round_ is not None and round_.turn is not None and round_.turn.reply_id == row["id"]:
            row["content"], row["reasoning"] = round_.reply.text(), round_.reply.reasoning()
            continue
        saved = await checkpoints.text_so_far(app[db_key], row["sessionId"])
        if saved is not None:
            row["content"], row["reasoning"] = saved[0].strip(), saved[1].strip() or None
