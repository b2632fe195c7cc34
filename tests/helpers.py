"""Test helpers: an API client that knows the envelope, and the one error-shape check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient

from aichat.config import Config


def assert_error(status: int, body: dict, expected_status: int, contains: str = "") -> None:
    """api.md's error envelope: success false, a string error, data null."""
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
