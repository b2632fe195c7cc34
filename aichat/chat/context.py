"""Which history fits the budget (docs/api.md §5.3), from the token counts stored with each
message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aichat.chat.tokenizer import Tokenizer

HISTORY_MESSAGES = 50
CONVERSATION_OVERHEAD = 3
MESSAGE_OVERHEAD = 4


@dataclass(frozen=True, slots=True)
class Context:
    history: list[dict[str, Any]]  # oldest first, each {role, content}
    prompt_tokens: int
    limit: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.prompt_tokens)

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "context_limit": self.limit,
                "context_remaining": self.remaining}


async def message_tokens(tokenizer: Tokenizer, row: dict[str, Any]) -> int:
    """The stored count when it was made by the current mode, else a fresh one."""
    if row.get("token_count") is not None and row.get("token_mode") == tokenizer.mode:
        return row["token_count"]
    return await tokenizer.count_async(row["content"])


async def fit(tokenizer: Tokenizer, newest_first: list[dict[str, Any]], limit: int,
              new_tokens: int | None) -> Context:
    """Keep messages newest to oldest while the total stays within `limit`.

    `new_tokens` is the new user message's count: it is always sent, even alone over budget.
    With None (no new message), the newest message plays that part.
    """
    await tokenizer.warm()
    rows = list(newest_first)
    total = CONVERSATION_OVERHEAD
    kept: list[dict[str, Any]] = []
    if new_tokens is not None:
        total += MESSAGE_OVERHEAD + new_tokens + tokenizer.role_cost("user")
    elif rows:
        first = rows.pop(0)
        total += (MESSAGE_OVERHEAD + await message_tokens(tokenizer, first)
                  + tokenizer.role_cost(first["role"]))
        kept.append(first)
    for row in rows:
        cost = (MESSAGE_OVERHEAD + await message_tokens(tokenizer, row)
                + tokenizer.role_cost(row["role"]))
        if total + cost > limit:
            break
        total += cost
        kept.append(row)
    kept.reverse()
    return Context([{"role": r["role"], "content": r["content"]} for r in kept], total, limit)
