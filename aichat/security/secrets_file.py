"""Secrets that must survive restarts: taken from the environment or generated once on disk."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

# The shortest secret we accept anywhere: JWT_SECRET, ENCRYPTION_KEY, rotate-key's new key and the
# key files. 32 characters of even lowercase letters carry > 150 bits.
MIN_SECRET_CHARS = 32


def generate() -> str:
    """32 random bytes, url-safe base64 (43 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")


def load_or_create(data_dir: Path, filename: str, configured: str | None) -> str:
    """Return `configured` if set, else the secret kept in `data_dir/filename` (mode 0600).

    The file is created with O_EXCL so two processes starting at once cannot each write one.
    """
    if configured:
        return configured
    path = data_dir / filename
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text(encoding="ascii").strip()
        if len(value) < MIN_SECRET_CHARS:
            raise RuntimeError(
                f"{path} holds no usable secret; delete it to generate a new one") from None
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return value
    value = generate()
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(value + "\n")
    return value
