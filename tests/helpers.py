"""Test helpers: an API client that knows the envelope, and the one error-shape check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient

from aichat.settings.config import Config


def assert_error(status: int, body: dict, expected_status: int, contains: str = "") -> None:
    """The error envelope (docs/api.md §1): success false, a string error, data null."""
    assert status == expected_status, (status, body)
    assert body["success"] is False, body
    assert isinstance(body["error"], str) and body["error"], body
    assert body["data"] is None, body
    assert contains.lower() in body["error"].lower(), (contains, body["error"])


@dataclass
class User:
    id: int
    username: str
    password: str
    token: str
    role: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Api:
    client: TestClient
    config: Config
    users: dict[str, User] = field(default_factory=dict)

    async def call(self, method: str, path: str, user: User | str | None = None, *,
                   json: Any = None, data: Any = None, headers: dict | None = None,
                   params: dict | None = None) -> tuple[int, dict]:
        hdrs = dict(headers or {})
        if isinstance(user, str):
            user = self.users[user]
        if user is not None:
            hdrs.update(user.headers)
        kwargs: dict[str, Any] = {"headers": hdrs, "params": params}
        if json is not None:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        async with self.client.request(method, path, **kwargs) as resp:
            body = await resp.json(content_type=None)
            return resp.status, body

    async def ok(self, method: str, path: str, user: User | str | None = None,
                 **kwargs: Any) -> Any:
        status, body = await self.call(method, path, user, **kwargs)
        assert status == 200 and body["success"] is True, (method, path, status, body)
        assert "data" in body
        return body["data"]

    async def error(self, method: str, path: str, user: User | str | None, expected: int,
                    contains: str = "", **kwargs: Any) -> str:
        status, body = await self.call(method, path, user, **kwargs)
        assert_error(status, body, expected, contains)
        return body["error"]

    @property
    def db(self) -> Any:
        """The app's store (SQLite or PostgreSQL): tests read and tamper through it, with
        `?` placeholders on both."""
        from aichat.http.appkeys import db_key
        return self.client.app[db_key]

    async def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        """A query's rows as tuples, from whichever store the app runs on."""
        return [tuple(row.values()) for row in await self.db.all(sql, params)]

    async def execute(self, sql: str, params: tuple = ()) -> int:
        """A write, committed; the number of rows it changed."""
        async with self.db.transaction() as tx:
            return await tx.execute(sql, params)

    async def register(self, username: str, password: str = "password1") -> User:
        data = await self.ok("POST", "/api/auth/register",
                             json={"username": username, "password": password})
        user = User(data["user"]["id"], username, password, data["token"], data["user"]["role"])
        self.users[username] = user
        return user

    async def login(self, username: str, password: str) -> User:
        data = await self.ok("POST", "/api/auth/login",
                             json={"username": username, "password": password})
        user = User(data["user"]["id"], username, password, data["token"], data["user"]["role"])
        self.users[username] = user
        return user


class SSEStream:
    """Reads one SSE response event by event, with a timeout on each read."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.events: list[dict] = []
        self.pings = 0
        self.raw: list[bytes] = []
        self.ids: list[str] = []  # the `id:` of each numbered event, in order

    async def next(self, timeout: float = 5.0) -> dict | None:
        """The next data event (pings are counted and skipped); None at the end of the body."""
        import asyncio
        import json as jsonlib
        async with asyncio.timeout(timeout):
            while True:
                try:
                    block = await self.response.content.readuntil(b"\n\n")
                except asyncio.IncompleteReadError as e:
                    assert e.partial == b"", f"body ended inside an event: {e.partial!r}"
                    return None
                if not block:
                    return None
                if block.startswith(b"id: "):  # a chat stream's events are numbered
                    line, _, block = block.partition(b"\n")
                    self.ids.append(line[4:].decode())
                self.raw.append(block)  # the event itself, without its id
                if block == b": ping\n\n":
                    self.pings += 1
                    continue
                assert block.startswith(b"data: ") and block.count(b"\n") == 2, block
                event = jsonlib.loads(block[6:])
                self.events.append(event)
                return event

    async def until(self, kind: str, timeout: float = 5.0) -> dict:
        while True:
            event = await self.next(timeout)
            assert event is not None, f"stream ended before a {kind!r} event: {self.events}"
            if event["type"] == kind:
                return event

    async def rest(self, timeout: float = 10.0) -> list[dict]:
        while await self.next(timeout) is not None:
            pass
        return self.events

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def text(self) -> str:
        return "".join(e["content"] for e in self.events if e["type"] == "content")


@dataclass
class Chat:
    """A running app with user alice, her model on the fake upstream and one session."""

    api: Api
    upstream: Any
    user: User
    model: dict
    session_id: int

    def open(self, content: str = "Hi there", *, path: str = "/api/chat/stream",
             session_id: int | None = None, images: list | None = None,
             body: dict | None = None, user: User | None = None):
        """The raw request context manager (for reading incrementally or aborting)."""
        payload = body if body is not None else {
            "sessionId": session_id or self.session_id, "content": content,
            **({"images": images} if images is not None else {})}
        return self.api.client.post(path, json=payload, headers=(user or self.user).headers)

    async def stream(self, content: str = "Hi there", **kwargs: Any) -> SSEStream:
        """Send a message and read the whole SSE response."""
        async with self.open(content, **kwargs) as response:
            assert response.status == 200, await response.text()
            assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
            reader = SSEStream(response)
            await reader.rest()
            return reader

    async def messages(self) -> list[dict]:
        data = await self.api.ok("GET", f"/api/chat/sessions/{self.session_id}/messages",
                                 self.user)
        return data["messages"]

    async def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        return await self.api.rows(sql, params)
