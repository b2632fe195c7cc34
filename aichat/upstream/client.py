"""The upstream client: one OpenAI-compatible chat-completions call, streamed or not.

Parsing is deliberately forgiving (events split across reads, CRLF, `data:` with or without a
space, comments, junk lines), and every failure becomes a `ProviderError` whose `kind` tells
the round whether a retry or the non-streaming fallback may follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncGenerator, Iterator

import aiohttp
from yarl import URL

from aichat.http import jsonfast
from aichat.upstream import netpolicy

log = logging.getLogger(__name__)

CONTENT, REASONING, FINISH, USAGE = "content", "reasoning", "finish", "usage"
_ERROR_TEXT_CHARS = 200
_MAX_ERROR_BODY = 8192
_MAX_JSON_BODY = 16 * 1024 * 1024
MAX_LINE_BYTES = 1024 * 1024  # one SSE line; the default of MAX_UPSTREAM_LINE_BYTES


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    api_key: str
    model: str

    @property
    def host(self) -> str | None:
        try:
            return URL(self.url).host
        except ValueError:
            return None


class ProviderError(Exception):
    """An upstream failure. `kind`: status, network, idle, drop, garbage, empty."""

    def __init__(self, message: str, kind: str, *, status: int | None = None,
                 retry_after: float | None = None, before_headers: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.before_headers = before_headers

    @property
    def retryable(self) -> bool:
        """429, 5xx, a connection error, or silence before the response headers."""
        if self.kind == "status":
            return self.status == 429 or (self.status or 0) >= 500
        return self.kind == "network" or (self.kind == "idle" and self.before_headers)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def redact(text: str, secret: str) -> str:
    return text.replace(secret, "[redacted]") if secret else text


def _error_text(raw: bytes, secret: str) -> str:
    text = " ".join(raw.decode("utf-8", "replace").split())
    # Redact before trimming, so a key cut in half by the trim cannot slip through.
    return redact(text, secret)[:_ERROR_TEXT_CHARS]


# Deadlines are ours: the round's budget, the idle limit before the headers (one timer per
# attempt) and `_IdleWatch` after them. aiohttp's sock_read would re-arm a timer per chunk.
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None)


class _IdleWatch:
    """Closes the response after `idle_s` without a chunk: one timer per idle period."""

    def __init__(self, idle_s: float | None, response: aiohttp.ClientResponse) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle_s = idle_s
        self._response = response
        self.last = self._loop.time()
        self.fired = False
        self._handle = (self._loop.call_at(self.last + idle_s, self._check)
                        if idle_s else None)

    def touch(self) -> None:
        self.last = self._loop.time()

    def _check(self) -> None:
        assert self._idle_s is not None  # scheduled only with a limit
        due = self.last + self._idle_s
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check)
            return
        self.fired = True
        self._response.close()  # wakes the pending read

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


@contextlib.contextmanager
def _reading(watch: _IdleWatch, idle_s: float | None) -> Iterator[None]:
    """Body-reading failures as ProviderErrors: silence (the watch closed it) or a drop."""
    try:
        yield
    except aiohttp.ClientError:
        if watch.fired:
            raise ProviderError(f"AI API sent nothing for {idle_s:g}s", "idle") from None
        raise ProviderError("AI API connection closed unexpectedly", "drop") from None
    if watch.fired:  # closing the response may also end the read as a plain EOF
        raise ProviderError(f"AI API sent nothing for {idle_s:g}s", "idle")


async def _post(http: aiohttp.ClientSession, target: Target, body: bytes,
                idle_s: float | None, accept: str) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"Bearer {target.api_key}", "Content-Type": "application/json",
               "Accept": accept}
    try:
        async with asyncio.timeout(idle_s):
            response = await http.post(target.url, data=body, headers=headers,
                                       timeout=_NO_TIMEOUT, allow_redirects=False)
    except TimeoutError:
        raise ProviderError(f"AI API did not respond within {idle_s:g}s", "idle",
                            before_headers=True) from None
    except aiohttp.InvalidURL:
        raise ProviderError("AI API URL is not valid", "network") from None
    except aiohttp.ClientConnectorError as e:
        guard = netpolicy.current.get()
        if guard is not None and guard.refused:
            raise ProviderError(
                f"AI API URL not allowed: {guard.refused[0]}, which the upstream_url_policy "
                f"({guard.policy.mode}) does not allow", "blocked") from None
        raise ProviderError(f"Could not reach the AI API ({type(e).__name__})",
                            "network") from None
    except aiohttp.ClientError as e:
        raise ProviderError(f"Could not reach the AI API ({type(e).__name__})",
                            "network") from None
    if not 200 <= response.status < 300:
        try:
            async with asyncio.timeout(idle_s):
                raw = await response.content.read(_MAX_ERROR_BODY)
        except (TimeoutError, aiohttp.ClientError):
            raw = b""
        finally:
            response.close()
        text = _error_text(raw, target.api_key)
        raise ProviderError(f"AI API request failed: {response.status} {text}".rstrip(),
                            "status", status=response.status,
                            retry_after=parse_retry_after(response.headers.get("Retry-After")))
    return response


def _events(chunk: dict[str, Any]) -> list[tuple[str, Any]]:
    """The deltas of one streamed chunk, reasoning before content."""
    out: list[tuple[str, Any]] = []
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out.append((REASONING, reasoning))
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append((CONTENT, content))
        finish = choice.get("finish_reason")
        if finish is not None:
            out.append((FINISH, str(finish)))
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        out.append((USAGE, usage))
    return out


class StreamResult:
    """Set while streaming: how the body ended."""

    done_marker = False  # saw data: [DONE]
    junk_lines = 0


class _Lines:
    """Splits a byte stream into lines in linear time, refusing a line past `max_bytes`.

    Pieces without a newline wait in a list (appending to one bytes object would copy it on
    every read: quadratic on a stream that never sends a newline) and are joined once the
    line ends."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._pending: list[bytes] = []
        self._size = 0

    def feed(self, piece: bytes) -> list[bytes]:
        end = piece.rfind(b"\n")
        if end < 0:
            self._size += len(piece)
            if self._size > self._max:
                raise ProviderError(f"AI API sent a line longer than {self._max} bytes",
                                    "garbage")
            self._pending.append(piece)
            return []
        head, tail = piece[:end], piece[end + 1:]
        if self._pending:
            head = b"".join((*self._pending, head))
            self._pending.clear()
        lines = head.split(b"\n")
        # Only a piece longer than the cap can hold a line longer than it: the usual small
        # piece costs no per-line check.
        if len(head) > self._max and any(len(line) > self._max for line in lines):
            raise ProviderError(f"AI API sent a line longer than {self._max} bytes", "garbage")
        self._size = len(tail)
        if tail:
            self._pending.append(tail)
        return lines


async def stream(http: aiohttp.ClientSession, target: Target, body: bytes,
                 idle_s: float | None, result: StreamResult,
                 max_line: int = MAX_LINE_BYTES) -> AsyncGenerator[tuple[str, Any], None]:
    """Yield (kind, value) events of a streamed completion until [DONE] or EOF."""
    response = await _post(http, target, body, idle_s, "text/event-stream")
    watch = _IdleWatch(idle_s, response)
    clean = False
    try:
        with _reading(watch, idle_s):
            lines = _Lines(max_line)
            async for piece in response.content.iter_any():
                watch.touch()
                for line in lines.feed(piece):
                    if not line.startswith(b"data:"):
                        continue  # blank separators, comments, event:/id:/retry: fields
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        result.done_marker = clean = True
                        return
                    try:
                        chunk = jsonfast.loads(data)
                    except ValueError:
                        chunk = None
                    if not isinstance(chunk, dict):
                        result.junk_lines += 1
                        if result.junk_lines <= 3:
                            log.warning("skipped a malformed upstream line from %s",
                                        target.host)
                        continue
                    if "error" in chunk and not chunk.get("choices"):
                        raise ProviderError(_stream_error(chunk, target.api_key), "status")
                    for event in _events(chunk):
                        yield event
        clean = True
    finally:
        watch.cancel()
        # A body we did not read to the end: close the connection so the provider stops now.
        if clean:
            response.release()
        else:
            response.close()


def _stream_error(chunk: dict[str, Any], secret: str) -> str:
    error = chunk.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    text = redact(" ".join(str(message).split()), secret)[:_ERROR_TEXT_CHARS]
    return f"AI API reported an error: {text}"


@dataclass(slots=True)
class Completion:
    content: str
    reasoning: str
    usage: dict[str, Any] | None
    finish_reason: str | None = None


async def complete(http: aiohttp.ClientSession, target: Target, body: bytes,
                   idle_s: float | None) -> Completion:
    """One non-streamed completion."""
    response = await _post(http, target, body, idle_s, "application/json")
    watch = _IdleWatch(idle_s, response)
    parts, size = [], 0
    try:
        with _reading(watch, idle_s):
            async for piece in response.content.iter_any():
                watch.touch()
                parts.append(piece)
                size += len(piece)
                if size > _MAX_JSON_BODY:
                    raise ProviderError("AI API response is too large", "garbage")
    finally:
        watch.cancel()
        response.close()
    raw = b"".join(parts)
    try:
        data = jsonfast.loads(raw)
        choice = data["choices"][0]
        message = choice["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ProviderError("AI API returned an unreadable response", "garbage") from None
    content = message.get("content") if isinstance(message, dict) else None
    reasoning = (message.get("reasoning_content") or message.get("reasoning")
                 if isinstance(message, dict) else None)
    usage = data.get("usage")
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    return Completion(content if isinstance(content, str) else "",
                      reasoning if isinstance(reasoning, str) else "",
                      usage if isinstance(usage, dict) else None,
                      finish if isinstance(finish, str) else None)
