"""The fast database paths: group commit, the inline read-only reader, and the caches."""

from __future__ import annotations

import asyncio
import sqlite3

import aiosqlite
import jwt
import pytest

from aichat.security.crypto import DecryptError, KeyCipher, model_aad
from aichat.security.jwt_tokens import TokenService
from aichat.store import sqlite as database
from aichat.store.base import Transaction


@pytest.fixture
async def db(tmp_path):
    db = await database.connect(str(tmp_path / "t.db"))
    yield db
    await db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request) -> str | None:
    return None if request.param == "sqlite" else request.getfixturevalue("pg_app_url")


@pytest.fixture
async def any_db(store_url, tmp_path):
    """The store on either backend: group commit is SQLite's thread batch or PostgreSQL's
    shared transaction, with the same promises."""
    if store_url is None:
        db = await database.connect(str(tmp_path / "t.db"))
    else:
        from aichat.store import postgres
        db = await postgres.connect(store_url, 4)
    yield db
    await db.close()


async def insert_user(tx: Transaction, name: str) -> int:
    return await tx.insert("INSERT INTO users (username, hashed_password) VALUES (?, 'x')",
                           (name,))


async def fail_after_insert(tx: Transaction, name: str) -> None:
    await insert_user(tx, name)
    raise ValueError("refused")


async def wanders_off(tx: Transaction) -> None:
    await insert_user(tx, "wanderer")
    await asyncio.sleep(0)  # a job on SQLite's thread has no loop to wait on


async def test_a_job_that_awaits_anything_but_its_transaction_is_refused(db):
    with pytest.raises(RuntimeError, match="awaited something other than its transaction"):
        await db.run(wanders_off)
    assert await db.value("SELECT COUNT(*) FROM users") == 0  # and it wrote nothing


def test_aiosqlite_still_has_the_thread_call_we_use():
    assert callable(getattr(aiosqlite.Connection, "_execute", None))


async def test_group_commit_runs_each_job_atomically_and_alone(any_db):
    db = any_db
    jobs = [db.run(insert_user, f"user{i}") for i in range(50)]
    jobs.insert(10, db.run(fail_after_insert, "doomed"))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert isinstance(results[10], ValueError)
    ids = [r for i, r in enumerate(results) if i != 10]
    assert len(set(ids)) == 50
    names = {r["username"] for r in await db.all("SELECT username FROM users")}
    assert "doomed" not in names and len(names) == 50  # the failed job left nothing behind


async def test_group_commit_and_transactions_do_not_interleave(any_db):
    db = any_db
    async def slow_transaction():
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO users (username, hashed_password) VALUES ('a', 'x')")
            await asyncio.sleep(0)  # let the group writer try to run meanwhile
            await tx.execute("INSERT INTO users (username, hashed_password) VALUES ('b', 'x')")
            raise RuntimeError("roll back")

    results = await asyncio.gather(slow_transaction(), db.run(insert_user, "c"),
                                   return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], int)
    names = {r["username"] for r in await db.all("SELECT username FROM users")}
    assert names == {"c"}


async def test_a_cancelled_caller_still_gets_its_job_written(any_db):
    db = any_db
    task = asyncio.ensure_future(db.run(insert_user, "late"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await db.run(insert_user, "after")  # queued behind it, so it is written by now
    names = {r["username"] for r in await db.all("SELECT username FROM users")}
    assert names == {"late", "after"}


async def test_quick_reader_sees_commits_and_cannot_write(db):
    assert await db.quick.value("SELECT COUNT(*) FROM users") == 0
    await db.run(insert_user, "seen")
    assert (await db.quick.one("SELECT username FROM users"))["username"] == "seen"
    with pytest.raises(sqlite3.OperationalError):
        await db.quick.all("DELETE FROM users")


def test_token_cache_still_honours_expiry():
    now = [1_800_000_000.0]
    service = TokenService("a-secret-that-is-long-enough-for-hs256-signing", lambda: now[0])
    token = service.issue(7, "someone", "USER", 0)
    assert service.verify(token).user_id == 7  # verified, now remembered
    claims = jwt.decode(token, options={"verify_signature": False})
    now[0] = claims["exp"] - 1
    assert service.verify(token).user_id == 7
    now[0] = claims["exp"]
    assert service.verify(token) is None  # remembered, but expired
    assert service.verify(token) is None  # and decoded afresh it is still expired


def test_decrypt_cache_is_keyed_by_row():
    cipher = KeyCipher("a-secret-that-is-long-enough-for-aes-use")
    stored = cipher.encrypt("sk-row-1", model_aad(1))
    assert cipher.decrypt(stored, model_aad(1)) == "sk-row-1"
    with pytest.raises(DecryptError):
        cipher.decrypt(stored, model_aad(2))  # a cached plaintext is not a pass for row 2
