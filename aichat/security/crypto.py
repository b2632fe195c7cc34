"""AES-256-GCM for provider API keys at rest.

Stored form: "v1:" + base64(nonce(12) || ciphertext || tag(16)). The row identity is the
associated data, so a ciphertext copied into another row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import Any

PREFIX = "v1:"
NONCE_BYTES = 12
TAG_BYTES = 16


def _gcm(key: bytes, nonce: bytes) -> Any:
    # pycryptodome is imported on first use: an idle server needs no cipher (idle RSS budget).
    from Crypto.Cipher import AES
    return AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)


class DecryptError(ValueError):
    """The stored value is not ours, was tampered with, or belongs to another row or key."""


def derive_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


class KeyCipher:
    """Encrypts with a fresh nonce each time; remembers a few recent decryptions, since every
    chat round needs its model's key and an AES-GCM setup costs more than the rest of the
    round's start-up checks."""

    CACHE_SIZE = 256

    def __init__(self, secret: str) -> None:
        self._key = derive_key(secret)
        self._recent: dict[tuple[str, bytes], str] = {}

    def encrypt(self, plaintext: str, aad: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        cipher = _gcm(self._key, nonce)
        cipher.update(aad)
        ciphertext, tag = cipher.encrypt_and_digest(plaintext.encode("utf-8"))
        return PREFIX + base64.b64encode(nonce + ciphertext + tag).decode("ascii")

    def decrypt(self, stored: str, aad: bytes) -> str:
        hit = self._recent.get((stored, aad))
        if hit is not None:
            return hit
        plaintext = self._decrypt(stored, aad)
        if len(self._recent) >= self.CACHE_SIZE:
            del self._recent[next(iter(self._recent))]
        self._recent[(stored, aad)] = plaintext
        return plaintext

    def _decrypt(self, stored: str, aad: bytes) -> str:
        if not stored.startswith(PREFIX):
            raise DecryptError("unknown API key format")
        try:
            blob = base64.b64decode(stored[len(PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise DecryptError("API key is not valid base64") from None
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise DecryptError("API key ciphertext is too short")
        nonce, ciphertext, tag = blob[:NONCE_BYTES], blob[NONCE_BYTES:-TAG_BYTES], blob[-TAG_BYTES:]
        cipher = _gcm(self._key, nonce)
        cipher.update(aad)
        try:
            return cipher.decrypt_and_verify(ciphertext, tag).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise DecryptError("API key does not decrypt with the current ENCRYPTION_KEY") from None


def model_aad(model_id: int) -> bytes:
    return f"model_configs:{model_id}:api_key".encode("ascii")
