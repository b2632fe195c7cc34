"""Account rules shared by registration, password change and the env-bootstrapped admin."""

from __future__ import annotations

import re

from aichat.http.errors import ApiError
from aichat.security.passwords import MAX_BYTES

USERNAME_RULE = "Username must be 3-20 characters: letters, digits, underscore"
PASSWORD_RULE = "Password must be at least 8 characters with letters and numbers"
USERNAME = re.compile(r"[A-Za-z0-9_]{3,20}")
PASSWORD_MIN_BYTES = 8
LETTER = re.compile(r"[A-Za-z]")
DIGIT = re.compile(r"[0-9]")


def valid_username(value: object) -> str:
    if not isinstance(value, str) or not USERNAME.fullmatch(value):
        raise ApiError(400, USERNAME_RULE)
    return value


def valid_password(value: object, rule: str = PASSWORD_RULE) -> str:
    """8-72 UTF-8 bytes (bcrypt's limit) with at least one ASCII letter and one digit."""
    if (not isinstance(value, str)
            or not PASSWORD_MIN_BYTES <= len(value.encode("utf-8")) <= MAX_BYTES
            or not LETTER.search(value) or not DIGIT.search(value)):
        raise ApiError(400, rule)
    return value
