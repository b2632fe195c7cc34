"""X-Request-Id on every response, and in the log lines of its request and its round
(docs/operations.md §9), in text or JSON (LOG_FORMAT)."""

from __future__ import annotations

import io
import json
import logging
import re

from aichat.http import requestid

from .fake_upstream import Reply
from .helpers import SSEStream

GENERATED = re.compile(r"[0-9a-f]{16}")


async def header_of(api, method: str, path: str, sent: str | None = None) -> str:
    headers = {requestid.HEADER: sent} if sent is not None else {}
    async with api.client.request(method, path, headers=headers) as r:
        return r.headers[requestid.HEADER]


async def test_every_response_carries_an_id(api):
    assert GENERATED.fullmatch(await header_of(api, "GET", "/api/health"))
    ids = {await header_of(api, "GET", "/api/health") for _ in range(5)}
    assert len(ids) == 5  # a new one each time
    assert GENERATED.fullmatch(await header_of(api, "GET", "/api/nowhere"))  # 404
    assert GENERATED.fullmatch(await header_of(api, "GET", "/api/sessions"))  # 401


async def test_a_sane_id_from_the_client_is_kept_and_any_other_replaced(api):
    for sane in ("abc-123", "3f2a9c4e-1b7d-4c8e-9f00-0123456789ab", "trace:1/2+3=4"):
        assert await header_of(api, "GET", "/api/health", sane) == sane
    for insane in ("has space", "x" * 129, "semi;colon", "ünïcode"):
        got = await header_of(api, "GET", "/api/health", insane)
        assert got != insane and GENERATED.fullmatch(got)


async def test_a_stream_and_its_rounds_log_lines_carry_the_id(chat):
    out = io.StringIO()
    handler = requestid.handler("json")
    handler.setStream(out)
    logger = logging.getLogger("aichat")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        chat.upstream.queue(Reply(tokens=["a ", "b"], delay=0.01))
        async with chat.api.client.post(
                "/api/chat/stream", json={"sessionId": chat.session_id, "content": "hi"},
                headers={**chat.user.headers, requestid.HEADER: "trace-round-1"}) as r:
            assert r.headers[requestid.HEADER] == "trace-round-1"
            stream = SSEStream(r)
            await stream.rest()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    ended = [e for e in lines if "ended complete" in e["message"]]
    assert len(ended) == 1 and ended[0]["request_id"] == "trace-round-1"
    assert ended[0]["level"] == "debug" and ended[0]["logger"] == "aichat.chat.round"
    assert ended[0]["time"].endswith("Z")


def test_text_lines_end_with_the_id_and_json_lines_carry_exceptions():
    record = logging.LogRecord("aichat.x", logging.WARNING, __file__, 1, "went %s", ("wrong",),
                               None)
    record.request_id = "abc"
    assert requestid.TextFormatter().format(record).endswith("aichat.x: went wrong [abc]")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        failed = logging.LogRecord("aichat.x", logging.ERROR, __file__, 1, "failed", (),
                                   sys.exc_info())
    entry = json.loads(requestid.JsonFormatter().format(failed))
    assert entry["message"] == "failed" and "ValueError: boom" in entry["exception"]
    assert "request_id" not in entry  # outside a request
