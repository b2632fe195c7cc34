"""Secret watch: a test fails at teardown if a secret it handled shows up where it must not.

Kept for every test: each log record (a root handler at DEBUG: message and exception text) and
each response the aiohttp test client received (headers, and the body as the client was fed
it, so a streamed SSE body counts whether or not the test read it). None of them may contain:

- a model API key the test sent (the `apiKey` of a JSON body sent to /api/models...),
- a password the test sent to /api/auth/... (register, login, password change),
- the JWT secret, encryption key or DEFAULT_ADMIN_PASSWORD of an app the test started
  (configured values, else the data folder's `jwt_secret` / `encryption_key` files).

What the test client sends and what the fake upstream receives may of course contain them.

The audit log (docs/api.md, "Audit log") is watched too: when the test client of an app closes,
every row of its audit_log table is read (if the app has a database with that table), and none
may contain any of the above, nor a JWT, a whole API key (`aic_...`), a bcrypt hash, or any
password hash, model key ciphertext or API key hash the app stores at that moment.

Cost: a dictionary look-up per body chunk and one record per log line; four reads per app at
its close; the search runs once per test over the joined texts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import streams, test_utils, web

from aichat.http.appkeys import config_key, db_key
from aichat.security.credentials import KEY_PREFIX

MIN_CHARS = 4  # a shorter value would match ordinary text by chance ("k", "abc")
MAX_PARSED_BODY = 4 * 1024 * 1024  # raw `data=` bodies parsed for secrets up to this size
PASSWORD_PATHS = "/api/auth/"
MODEL_PATHS = "/api/models"
AUDIT_ROWS = "SELECT * FROM audit_log ORDER BY id"
AUDIT_READ_TIMEOUT_S = 5.0
# Never in an audit row, whoever's they are.
AUDIT_PATTERNS = {"a JWT": re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]{8,}"),
                  "an API key": re.compile(re.escape(KEY_PREFIX) + r"[\w-]{16,}"),
                  "a bcrypt hash": re.compile(r"\$2[aby]?\$\d{2}\$")}
STORED_SECRETS = (("SELECT hashed_password AS v FROM users", "a stored password hash"),
                  ("SELECT api_key AS v FROM model_configs", "a stored model key ciphertext"),
                  ("SELECT key_hash AS v FROM api_keys", "a stored API key hash"))


@dataclass
class Watch:
    secrets: dict[str, str] = field(default_factory=dict)  # value -> what it is, redacted
    logs: list[str] = field(default_factory=list)
    responses: list[tuple[str, list[bytes]]] = field(default_factory=list)
    # id(StreamReader) -> (the reader, kept alive so the id stays unique; its chunk list)
    feeds: dict[int, tuple[streams.StreamReader, list[bytes]]] = field(default_factory=dict)
    audit: list[tuple[str, str]] = field(default_factory=list)  # (app, its rows as JSON)
    stored: dict[str, str] = field(default_factory=dict)  # hashes and ciphertexts: audit only

    def secret(self, value: Any, what: str, hint: bool = True) -> None:
        """Watch for `value`; `hint`: name its first characters in a failure (the test's own
        values are in its source anyway; the app's generated secrets are not)."""
        if isinstance(value, str) and len(value) >= MIN_CHARS:
            shown = f"{value[:3]}..., " if hint else ""
            self.secrets.setdefault(value, f"{what} ({shown}{len(value)} chars)")

    def sent(self, method: str, path: str, kwargs: dict[str, Any]) -> None:
        if not path.startswith((MODEL_PATHS, PASSWORD_PATHS)):
            return
        body = _json_body(kwargs)
        if not isinstance(body, dict):
            return
        where = f"{method} {path}"
        if path.startswith(MODEL_PATHS):
            self.secret(body.get("apiKey"), f"the apiKey sent to {where}")
        else:
            for name, value in body.items():
                if name.lower().endswith("password"):
                    self.secret(value, f"the {name} sent to {where}")

    def received(self, label: str, resp: Any) -> None:
        chunks = [b"".join(name + b": " + value + b"\r\n" for name, value in resp.raw_headers)
                  + b"\r\n"]
        content = resp.content
        if type(content) is streams.StreamReader:  # not the shared EMPTY_PAYLOAD
            chunks.extend(content._buffer)  # what came in with the headers
            self.feeds[id(content)] = (content, chunks)
        self.responses.append((label, chunks))

    def started(self, app: Any) -> None:
        config = app.get(config_key) if isinstance(app, web.Application) else None
        if config is None:
            return
        for name, configured in (("jwt_secret", config.jwt_secret),
                                 ("encryption_key", config.encryption_key)):
            value = configured or _read(config.data_dir / name)
            self.secret(value, f"the app's {name.upper()} ({config.data_dir})", hint=False)
        self.secret(config.default_admin_password, "the app's DEFAULT_ADMIN_PASSWORD",
                    hint=False)

    async def read_audit(self, app: Any) -> None:
        """The app's audit rows and what it stores hashed or encrypted, while its database is
        still open; nothing if it has none (it never started, or an old schema)."""
        if not isinstance(app, web.Application) or db_key not in app:
            return
        db, config = app[db_key], app.get(config_key)
        try:
            async with asyncio.timeout(AUDIT_READ_TIMEOUT_S):
                rows = await db.all(AUDIT_ROWS)
                stored = [(row["v"], what) for sql, what in STORED_SECRETS
                          for row in await db.all(sql)]
        except Exception:  # closed, unavailable, or no audit_log table: nothing to read
            return
        where = f"the audit log of the app on {config.data_dir if config else '?'}"
        # The values as stored (detail is JSON text once, as _forms expects), one row a line.
        text = "\n".join("\0".join(str(v) for v in row.values()) for row in rows)
        self.audit.append((where, text))
        for value, what in stored:
            if isinstance(value, str) and len(value) >= MIN_CHARS:
                self.stored.setdefault(value, what)

    def audit_leaks(self) -> list[str]:
        found = []
        for where, text in self.audit:
            for value, what in [*self.secrets.items(), *self.stored.items()]:
                form = next((f for f in _forms(value) if f in text), None)
                if form is not None:
                    found.append(f"{what} is in {where}: {_context(text, form)}")
            for what, pattern in AUDIT_PATTERNS.items():
                match = pattern.search(text)
                if match:
                    found.append(f"{what} is in {where}: {_context(text, match.group())}")
        return found

    def leaks(self) -> list[str]:
        logs = "\n".join(self.logs)
        bodies = [(label, b"".join(chunks)) for label, chunks in self.responses]
        everything = b"\0".join(body for _, body in bodies)
        found = []
        for value, what in self.secrets.items():
            for form in _forms(value):
                if form in logs:
                    record = next(r for r in self.logs if form in r)
                    found.append(f"{what} is in a log record: "
                                 f"{_context(record, form)}")
                    break
                raw = form.encode("utf-8")
                if raw in everything:
                    label, body = next((lb, b) for lb, b in bodies if raw in b)
                    found.append(f"{what} is in the response to {label}: "
                                 f"{_context(body.decode('utf-8', 'replace'), form)}")
                    break
        return found + self.audit_leaks()


_watch: Watch | None = None


def _json_body(kwargs: dict[str, Any]) -> Any:
    if kwargs.get("json") is not None:
        return kwargs["json"]
    data = kwargs.get("data")
    if isinstance(data, (bytes, bytearray, str)) and len(data) <= MAX_PARSED_BODY:
        try:
            return json.loads(data)
        except ValueError:
            return None
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _forms(value: str) -> list[str]:
    """The value as it would appear raw or inside a JSON string."""
    forms = [value]
    for escaped in (json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]):
        if escaped not in forms:
            forms.append(escaped)
    return forms


def _context(text: str, form: str, width: int = 60) -> str:
    """Up to `width` characters either side of the first occurrence, every occurrence masked."""
    at = text.index(form)
    region = text[max(0, at - width - len(form)):at + 2 * len(form) + width]
    region = region.replace(form, "<SECRET>")
    mark = region.index("<SECRET>")
    return repr(region[max(0, mark - width):mark + len("<SECRET>") + width])


# --- hooks into aiohttp and logging, installed once per session ---

_original_request = test_utils.TestClient._request
_original_start = test_utils.TestClient.start_server
_original_close = test_utils.TestClient.close
_original_feed = streams.StreamReader.feed_data


async def _request(self: test_utils.TestClient, method: str, path: Any,
                   **kwargs: Any) -> Any:
    watch = _watch
    if watch is not None:
        watch.sent(method, str(path).split("?", 1)[0], kwargs)
    resp = await _original_request(self, method, path, **kwargs)
    if watch is not None and watch is _watch:
        watch.received(f"{method} {path} ({resp.status})", resp)
    return resp


async def _start_server(self: test_utils.TestClient) -> None:
    await _original_start(self)
    if _watch is not None:
        _watch.started(self.app)


async def _close(self: test_utils.TestClient) -> None:
    if _watch is not None and not self._closed:
        await _watch.read_audit(self.app)
    await _original_close(self)


def _feed_data(self: streams.StreamReader, data: bytes, size: int = 0) -> bool:
    watch = _watch
    if watch is not None and watch.feeds:
        entry = watch.feeds.get(id(self))
        if entry is not None:
            entry[1].append(bytes(data))
    return _original_feed(self, data, size)


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        watch = _watch
        if watch is None:
            return
        try:
            text = record.getMessage()
        except Exception:  # a bad format string is the logging call's bug, not a leak
            text = f"{record.msg!r} % {record.args!r}"
        if record.exc_info:
            text += "\n" + self._formatter.formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + record.stack_info
        watch.logs.append(f"{record.name} {record.levelname}: {text}")


_handler = _LogCapture()


def pytest_configure(config: pytest.Config) -> None:
    if "_buffer" not in streams.StreamReader.__slots__:
        raise pytest.UsageError("tests/secret_watch.py: aiohttp's StreamReader changed; "
                                "update how the plugin reads the first body bytes")
    test_utils.TestClient._request = _request
    test_utils.TestClient.start_server = _start_server
    test_utils.TestClient.close = _close
    streams.StreamReader.feed_data = _feed_data
    logging.getLogger().addHandler(_handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    test_utils.TestClient._request = _original_request
    test_utils.TestClient.start_server = _original_start
    test_utils.TestClient.close = _original_close
    streams.StreamReader.feed_data = _original_feed
    logging.getLogger().removeHandler(_handler)


def _pytest_handlers(config: pytest.Config) -> list[logging.Handler]:
    """pytest's own capture handlers that take every level unless told otherwise (the log
    file only when it is the default /dev/null: a chosen --log-file keeps what it asked)."""
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    found = [getattr(plugin, "report_handler", None), getattr(plugin, "caplog_handler", None)]
    log_file = getattr(plugin, "log_file_handler", None)
    if getattr(log_file, "baseFilename", None) == os.devnull:
        found.append(log_file)
    return [h for h in found if isinstance(h, logging.Handler) and h.level == logging.NOTSET]


@pytest.fixture(autouse=True)
def secret_watch(request: pytest.FixtureRequest):
    """The current test's `Watch`; checked after the test's other fixtures are torn down.

    The root logger goes down to DEBUG for the test, but pytest's own capture (failure
    reports, caplog, the log file) keeps the level it had: else it would format every DEBUG
    record again (aiosqlite logs two per SQL statement) and flood failure reports.
    """
    global _watch
    root = logging.getLogger()
    level = root.level
    quieted = _pytest_handlers(request.config)
    for handler in quieted:
        handler.setLevel(root.getEffectiveLevel())
    root.setLevel(logging.DEBUG)
    _watch = watch = Watch()
    try:
        yield watch
    finally:
        _watch = None
        root.setLevel(level)
        for handler in quieted:
            handler.setLevel(logging.NOTSET)
    leaks = watch.leaks()
    if leaks:
        pytest.fail("secret leak:\n  " + "\n  ".join(leaks), pytrace=False)
