"""bcrypt hashing, always off the event loop (a cost-12 hash takes ~250 ms of CPU)."""

from __future__ import annotations

import asyncio

MAX_BYTES = 72  # bcrypt ignores (bcrypt 5 refuses) anything longer


class PasswordHasher:
    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self._dummy: bytes | None = None

    def _hash(self, password: str) -> str:
        import bcrypt  # lazily, like the other crypto libraries: idle RSS (bench/README.md)
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(self.rounds)).decode("ascii")

    @staticmethod
    def _check(password: bytes, hashed: bytes) -> bool:
        import bcrypt
        return bcrypt.checkpw(password, hashed)

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hash, password)

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Check `password`; for an unknown user (`hashed=None`) spend the same time, then fail."""
        encoded = password.encode()
        if hashed is None or len(encoded) > MAX_BYTES:
            if self._dummy is None:
                self._dummy = (await self.hash("timing-only")).encode("ascii")
            await asyncio.to_thread(self._check, b"x", self._dummy)
            return False
        return await asyncio.to_thread(self._check, encoded, hashed.encode("ascii"))
