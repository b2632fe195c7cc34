"""What the provider has sent for a round so far, and the usage numbers it comes to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aichat.store.usage import Usage


@dataclass(slots=True)
class Reply:
    """Filled by the attempts (chat/attempts.py); read by the checkpoints, the recorder and
    the closing events. Kept as parts: joining on every delta would copy the text each time."""

    text_parts: list[str] = field(default_factory=list)
    reasoning_parts: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None  # as the provider reported it
    finish_reason: str | None = None
    stream_ended: bool = False  # a stream ran to its end: the `end` event goes out

    @property
    def relayed(self) -> bool:
        """Something reached the client: a retry or fallback would repeat it."""
        return bool(self.text_parts or self.reasoning_parts)

    def text(self) -> str:
        return "".join(self.text_parts).strip()

    def reasoning(self) -> str | None:
        return "".join(self.reasoning_parts).strip() or None


# No round uses more: a larger count from a provider is garbage, and would overflow the
# stored columns and costs (PostgreSQL INTEGER, cost in billionths: store/prices.py).
MAX_REPORTED_TOKENS = 100_000_000


def usage_from(reported: dict[str, Any] | None, prompt_estimate: int,
               completion_estimate: int) -> Usage:
    """The provider's numbers under any of their usual names, else our estimate (also for a
    number that is not a count from 0 to MAX_REPORTED_TOKENS)."""
    def pick(*names: str) -> int | None:
        for name in names:
            value = (reported or {}).get(name)
            if type(value) is int and 0 <= value <= MAX_REPORTED_TOKENS:
                return value
        return None

    prompt = pick("prompt_tokens", "prompt_eval_count", "input_tokens")
    completion = pick("completion_tokens", "eval_count", "output_tokens")
    if prompt is None and completion is None:
        return Usage(prompt_estimate, completion_estimate,
                     prompt_estimate + completion_estimate, True)
    estimated = prompt is None or completion is None
    prompt = prompt_estimate if prompt is None else prompt
    completion = completion_estimate if completion is None else completion
    total = pick("total_tokens")
    return Usage(prompt, completion, prompt + completion if total is None else total, estimated)


def stored_numbers(row: dict[str, Any]) -> dict[str, int]:
    """A stored usage row as the round's `usage` event reported it (docs/api.md §5.7)."""
    numbers = {k: row[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    if row["context_limit"] is not None:
        numbers["context_limit"] = row["context_limit"]
        numbers["context_remaining"] = max(0, row["context_limit"] - row["prompt_tokens"])
    return numbers
