"""Schemathesis against the live server: no 500s, every answer as aichat.http.openapi says.

The server runs as a subprocess (`python server.py`) because schemathesis calls are synchronous:
an app on this process's event loop would deadlock. It gets a fresh database, an admin (whose
token every case sends), a second user, a personal and a system model, and a session with one
exchange (answered by a stub upstream on 127.0.0.1), so the ids the fuzz picks hit real rows.

Bounded and reproducible: at most MAX_EXAMPLES generated cases per operation (plus schemathesis'
example and boundary cases), derandomized, no example database. The operations that call an
upstream are left out. A failure carries the server log written during its case (the traceback,
for a 500).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, ignored_auth,
                                               negative_data_rejection,
                                               response_schema_conformance,
                                               status_code_conformance)

from aichat.http import openapi
from aichat.settings.config import env_names

ROOT = Path(__file__).resolve().parent.parent
MAX_EXAMPLES = 25
START_TIMEOUT_S = 30.0
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection, ignored_auth]
FUZZ_SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                         database=None, suppress_health_check=list(HealthCheck))


def _calls_upstream(ctx: Any) -> bool:
    return ctx.operation.path in ("/api/chat/stream", "/api/chat/regenerate",
                                  "/api/chat/completion", "/v1/chat/completions")


def _runs_last(ctx: Any) -> bool:
    """Deletions, so the first pass meets the fixture rows; and PUT /api/settings/system, as any
    upstream_url_policy but `any` makes model saves resolve (fuzzed) host names: no network."""
    method, path = ctx.operation.method.upper(), ctx.operation.path
    return method == "DELETE" or (method, path) == ("PUT", "/api/settings/system")


# Unknown query parameters are ignored by design (so no negative case), every case carries the
# admin's token from `_check` (not a generated header), and reports show sessionId, apiKey and
# password values (schemathesis would hide them), only the token hidden.
_config = schemathesis.Config.from_dict({
    "generation": {"allow-extra-parameters": False, "with-security-parameters": False},
    "output": {"sanitization": {"keys-to-sanitize": ["authorization"],
                                "sensitive-markers": ["authorization"]}}})
_schema = schemathesis.openapi.from_dict(openapi.spec(), config=_config).exclude(_calls_upstream)
first_pass = _schema.exclude(_runs_last)
last_pass = _schema.include(_runs_last)


# --- the server under test --------------------------------------------------------------------

class _Upstream(BaseHTTPRequestHandler):
    """A non-streamed chat completion, for the one exchange of the fixture session."""

    def do_POST(self) -> None:  # noqa: N802 (the http.server naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"choices": [{"message": {
            "content": "Hello!", "reasoning_content": "Greet back."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Server:
    url: str
    log_path: Path
    headers: dict[str, str] = field(default_factory=dict)
    http: requests.Session = field(default_factory=requests.Session)
    reported: list[str] = field(default_factory=list)  # log written during failed cases

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def ok(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.http.request(method, self.url + path, headers=headers, timeout=30,
                                     **kwargs)
        assert response.status_code == 200, (method, path, response.status_code, response.text)
        return response.json()["data"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(server: Server, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n"
                        f"{server.log_since(0)}")
        try:
            if server.http.get(server.url + "/api/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    pytest.fail(f"server not healthy after {START_TIMEOUT_S} s:\n{server.log_since(0)}")


def _populate(server: Server, upstream_url: str) -> None:
    """The admin (first account) whose token the fuzz sends, and rows for its ids to find."""
    password = f"Fz{secrets.token_hex(12)}9"  # never equal to anything the fuzz sends
    admin = server.ok("POST", "/api/auth/register", json={"username": "fuzz_admin",
                                                            "password": password})
    token = admin["token"]
    server.ok("POST", "/api/auth/register", json={"username": "fuzz_user",
                                                   "password": password})
    model = server.ok("POST", "/api/models", token, json={
        "name": "stub-model", "apiUrl": upstream_url, "apiKey": "sk-fuzz"})
    server.ok("POST", "/api/models/system", token, json={
        "name": "stub-system", "apiUrl": upstream_url, "apiKey": "sk-fuzz",
        "supportsImages": True})
    session = server.ok("POST", "/api/sessions", token, json={"modelConfigId": model["id"]})
    server.ok("POST", "/api/chat/completion", token,
              json={"sessionId": session["id"], "content": "Hi"})
    server.headers = {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = _free_port()
    # Only these settings: none inherited from the shell or a .env file.
    env = {k: v for k, v in os.environ.items() if k not in env_names()}
    env.update(DATABASE_URL=f"file:{tmp / 'data' / 'app.db'}", HOST="127.0.0.1",
               PORT=str(port), APP_MODE="multi", BCRYPT_ROUNDS="4", TOKENIZER_MODE="heuristic",
               LOG_LEVEL="warn", UPSTREAM_URL_POLICY="any")
    server = Server(f"http://127.0.0.1:{port}", tmp / "server.log")
    with server.log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "server.py", "--env-file", str(tmp / "no.env")], cwd=ROOT,
            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(server, process)
        _populate(server, f"http://127.0.0.1:{upstream.server_port}/v1/chat/completions")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        upstream.shutdown()
        upstream.server_close()
        server.http.close()


def _check(case: schemathesis.Case, server: Server) -> None:
    offset = server.log_size()
    try:
        case.call_and_validate(base_url=server.url, session=server.http,
                               headers=server.headers, checks=CHECKS, timeout=30)
    except BaseException as e:
        log = server.log_since(offset)
        if log:
            server.reported.append(log)
            e.add_note(f"server log during this case:\n{log}")
        raise


# --- the fuzz ---------------------------------------------------------------------------------

@first_pass.parametrize()
@FUZZ_SETTINGS
def test_fuzz(case: schemathesis.Case, server: Server) -> None:
    _check(case, server)


@last_pass.parametrize()
@FUZZ_SETTINGS
def test_fuzz_last(case: schemathesis.Case, server: Server) -> None:
    _check(case, server)


# Values at the edges of what Python's datetime holds, which random dates seldom reach.
EDGE_CASES = [
    ("GET", "/api/chat/usage/daily", {"from": "0001-01-01T00:00:00+01:00"}),
    ("GET", "/api/chat/usage/daily", {"to": "9999-12-31T23:00:00-05:00"}),
    ("GET", "/api/chat/usage/daily", {"from": "0999-12-31", "to": "1000-01-01"}),
]


@pytest.mark.parametrize(("method", "path", "query"), EDGE_CASES,
                         ids=[f"{m} {p} {q}" for m, p, q in EDGE_CASES])
def test_edge_case(method: str, path: str, query: dict[str, str], server: Server) -> None:
    _check(_schema[path][method].Case(query=query), server)


def test_server_survived_without_errors(server: Server) -> None:
    """Faults no answer showed: errors logged outside the cases already reported."""
    assert server.ok("GET", "/api/health")["status"] == "healthy"
    log = server.log_since(0)
    for chunk in server.reported:
        log = log.replace(chunk, "")
    assert "Traceback" not in log and " ERROR " not in log, log
