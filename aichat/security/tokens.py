"""JWT access tokens (HS256), per api.md: userId, username, role, iat, exp = iat + 1 day."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

LIFETIME_S = 86400


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: int
    token_version: int


class TokenService:
    def __init__(self, secret: str) -> None:
        self._secret = secret

    def issue(self, user_id: int, username: str, role: str, token_version: int) -> str:
        now = int(time.time())
        payload = {"userId": user_id, "username": username, "role": role, "tv": token_version,
                   "iat": now, "exp": now + LIFETIME_S}
        return jwt.encode(payload, self._secret, algorithm="HS256")

    def verify(self, token: str) -> Claims | None:
        """The claims of a valid, unexpired token, else None."""
        try:
            payload = jwt.decode(token, self._secret, algorithms=["HS256"],
                                 options={"require": ["exp", "iat", "userId"]})
        except jwt.PyJWTError:
            return None
        user_id, version = payload.get("userId"), payload.get("tv", 0)
        if type(user_id) is not int or type(version) is not int:
            return None
        return Claims(user_id, version)
