"""JWT access tokens, HS256 (docs/api.md §1): userId, username, role, iat, exp = iat + 1 day."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

LIFETIME_S = 86400


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: int
    token_version: int


class TokenService:
    """Issues and checks tokens. A verified token is remembered (bounded, until it expires):
    checking an HS256 signature with PyJWT costs ~100 µs, a dict lookup almost nothing. A
    revoked token still fails: its version is compared with the database on every request.
    Expiry is judged by one clock (`clock`), for fresh and remembered tokens alike."""

    CACHE_SIZE = 4096

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._clock = clock
        self._verified: dict[str, tuple[Claims, int]] = {}

    def issue(self, user_id: int, username: str, role: str, token_version: int) -> str:
        now = int(self._clock())
        payload = {"userId": user_id, "username": username, "role": role, "tv": token_version,
                   "iat": now, "exp": now + LIFETIME_S}
        import jwt  # on first use, like bcrypt and pycryptodome (idle RSS)
        return jwt.encode(payload, self._secret, algorithm="HS256")

    def verify(self, token: str) -> Claims | None:
        """The claims of a valid, unexpired token, else None."""
        found = self._verified.get(token)
        if found is None:
            found = self._decode(token)
            if found is None:
                return None
            if len(self._verified) >= self.CACHE_SIZE:
                del self._verified[next(iter(self._verified))]  # the oldest entry
            self._verified[token] = found
        claims, expires = found
        if expires <= self._clock():
            self._verified.pop(token, None)
            return None
        return claims

    def _decode(self, token: str) -> tuple[Claims, int] | None:
        """Signature and claim types; expiry is checked by the caller against our clock."""
        import jwt
        try:
            payload = jwt.decode(token, self._secret, algorithms=["HS256"],
                                 options={"require": ["exp", "iat", "userId"],
                                          "verify_exp": False, "verify_iat": False})
        except jwt.PyJWTError:
            return None
        user_id, version, expires = payload["userId"], payload.get("tv", 0), payload["exp"]
        if type(user_id) is not int or type(version) is not int or type(expires) is not int:
            return None
        return Claims(user_id, version), expires
