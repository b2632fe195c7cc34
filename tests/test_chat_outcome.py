"""The outcome of a round: its kinds, and one HTTP status map for /api and /v1."""

from __future__ import annotations

import ast
import inspect

import pytest

from aichat.chat.outcome import (COMPLETE, STOPPED, ErrorKind, Outcome, Status,
                                 raise_failure)
from aichat.http.errors import ApiError
from aichat.upstream import client


def test_every_kind_the_upstream_client_raises_is_an_error_kind():
    # A kind the round could not name would end it without a terminal event.
    kinds = {call.args[1].value for call in ast.walk(ast.parse(inspect.getsource(client)))
             if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "ProviderError"
             and isinstance(call.args[1], ast.Constant)}
    assert kinds and kinds <= set(ErrorKind)


@pytest.mark.parametrize("kind, status", [
    (ErrorKind.TIMEOUT, 504), (ErrorKind.INTERNAL, 500), (ErrorKind.STORAGE, 500),
    (ErrorKind.BLOCKED, 400), (ErrorKind.STATUS, 502), (ErrorKind.NETWORK, 502),
    (ErrorKind.IDLE, 502), (ErrorKind.DROP, 502), (ErrorKind.GARBAGE, 502),
    (ErrorKind.DECRYPT, 502),
])
def test_one_status_per_kind_on_both_surfaces(kind, status):
    for bare in (False, True):
        with pytest.raises(ApiError) as caught:
            raise_failure(Outcome(Status.ERROR, "the message", kind), bare_upstream_status=bare)
        assert caught.value.status == status and str(caught.value) == "the message"


def test_an_upstream_status_is_reported_bare_on_api_only():
    outcome = Outcome(Status.ERROR, "AI API request failed: 503 busy", ErrorKind.STATUS, 503)
    with pytest.raises(ApiError, match=r"^AI API request failed: 503$"):
        raise_failure(outcome, bare_upstream_status=True)
    with pytest.raises(ApiError, match=r"^AI API request failed: 503 busy$"):
        raise_failure(outcome)


@pytest.mark.parametrize("outcome", [None, COMPLETE, STOPPED])
def test_no_error_without_a_failure(outcome):
    raise_failure(outcome, bare_upstream_status=True)


def test_stored_values_are_the_plain_strings():
    assert [s.value for s in Status] == ["complete", "stopped", "error"]
    assert Status.STOPPED == "stopped" and f"{ErrorKind.BLOCKED}" == "blocked"
