"""How a round ended, why it was cancelled, and what a failed non-streamed answer returns.

The enums are `StrEnum`s: their values are the strings that are stored (`messages.status`,
`usage_metrics.status`) and sent (the SSE events), so they can be compared with plain strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aichat.http.errors import ApiError


class Status(StrEnum):
    COMPLETE = "complete"
    STOPPED = "stopped"
    ERROR = "error"


class ErrorKind(StrEnum):
    """Why a round failed: the upstream client's `ProviderError.kind`s, then our own."""

    STATUS = "status"  # the provider answered with an HTTP error or an error event
    NETWORK = "network"
    IDLE = "idle"
    DROP = "drop"
    GARBAGE = "garbage"
    BLOCKED = "blocked"  # the upstream URL policy refused the address
    TIMEOUT = "timeout"  # the round's total budget ran out
    DECRYPT = "decrypt"  # the model's stored API key does not decrypt
    INTERNAL = "internal"
    STORAGE = "storage"  # the reply could not be saved
    TOO_LONG = "too_long"  # the reply reached max_reply_chars


class CancelReason(StrEnum):
    DISCONNECT = "disconnect"  # the client left
    STOP = "stop"  # POST /api/chat/stop, or the post-abort guard
    SUPERSEDED = "superseded"  # a new round on the same session
    DELETED = "deleted"  # the session or its user was deleted
    CLEARED = "cleared"  # the session's messages were cleared
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    error: str | None = None
    kind: ErrorKind | None = None  # set for errors
    upstream_status: int | None = None  # the provider's HTTP status, for `status` errors


COMPLETE = Outcome(Status.COMPLETE)
STOPPED = Outcome(Status.STOPPED)

# Everything else is 502. A refused model URL is 400, not a gateway fault: the caller has to
# change the model, and SDKs do not retry a 400 the way they retry a 5xx.
_HTTP_STATUS: dict[ErrorKind | None, int] = {
    ErrorKind.TIMEOUT: 504, ErrorKind.INTERNAL: 500, ErrorKind.STORAGE: 500,
    ErrorKind.BLOCKED: 400}


def raise_failure(outcome: Outcome | None, *, bare_upstream_status: bool = False) -> None:
    """Raise the HTTP error of a failed non-streamed round: one map for /api/chat/completion
    and /v1/chat/completions (docs/api.md §6.1, §7).

    With `bare_upstream_status` (/api), a provider's HTTP error is reported by its status
    alone, "AI API request failed: <status>"; /v1 keeps the provider's error text after it.
    """
    if outcome is None or outcome.status != Status.ERROR:
        return
    message = outcome.error or "AI API request failed"
    if bare_upstream_status and outcome.kind == ErrorKind.STATUS and outcome.upstream_status:
        message = f"AI API request failed: {outcome.upstream_status}"
    raise ApiError(_HTTP_STATUS.get(outcome.kind, 502), message)
