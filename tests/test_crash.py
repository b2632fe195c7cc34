"""Crash safety: partial replies are checkpointed while streaming and survive kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp

from aichat.app import create_app

from .fake_upstream import Reply
from .helpers import SSEStream

ROOT = Path(__file__).resolve().parent.parent


def rows(path: str, sql: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchall()


# A running round's checkpointed text: the parts it appended, in order.
CHECKPOINTED = ("SELECT group_concat(content, '') FROM"
                " (SELECT content FROM round_checkpoint_parts ORDER BY id)")


async def until(predicate, timeout: float = 10.0) -> None:
    """Wait for a condition in another process's database (no event to await there)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - another process's state: nothing to await
            await asyncio.sleep(0.02)


async def test_running_rounds_are_checkpointed_and_cleared_when_they_end(chat_factory):
    chat = await chat_factory(checkpoint_interval_ms=30)
    chat.upstream.queue(Reply(tokens=[f"t{i} " for i in range(40)], delay=0.02))
    path = chat.api.config.database_path
    async with chat.open("long answer please") as response:
        reader = SSEStream(response)
        await reader.until("content")
        await until(lambda: (rows(path, CHECKPOINTED)[0][0] or "").count("t") >= 10)
        saved = rows(path, CHECKPOINTED)[0][0]
        head = rows(path, "SELECT user_message_id FROM round_checkpoints")[0][0]
        assert saved.startswith("t0 ") and head == reader.events[0]["messageId"]
        # Each checkpoint appended only what was new: no text was written twice.
        parts = [part for (part,) in rows(path, "SELECT content FROM round_checkpoint_parts")]
        assert len(parts) > 1 and sum(map(len, parts)) == len(saved)
        await reader.rest()
    assert rows(path, "SELECT * FROM round_checkpoints") == []  # gone with the final save
    assert rows(path, "SELECT * FROM round_checkpoint_parts") == []
    assert rows(path, "SELECT status FROM messages WHERE role = 'assistant'") == [("complete",)]


async def test_leftover_checkpoints_become_interrupted_replies_on_start(chat, aiohttp_client):
    await chat.stream("first")  # a normal exchange
    path = chat.api.config.database_path
    user_id = rows(path, "SELECT MAX(id) FROM messages WHERE role = 'user'")[0][0]
    with sqlite3.connect(path) as conn:
        msg = conn.execute("INSERT INTO messages (session_id, role, content) VALUES (?, 'user',"
                           " 'second')", (chat.session_id,)).lastrowid
        conn.execute("INSERT INTO round_checkpoints (session_id, user_message_id, regenerate,"
                     " model, provider, prompt_tokens, context_limit, content, reasoning)"
                     " VALUES (?, ?, 0, 'fake-model', '127.0.0.1', 42, 4000, ' half an ans',"
                     " 'thinking')", (chat.session_id, msg))
    await aiohttp_client(create_app(chat.api.config))  # a restart on the same data
    reply = rows(path, "SELECT content, status, reasoning FROM messages WHERE id > ?", (msg,))
    assert reply == [("half an ans", "interrupted", "thinking")]
    usage = rows(path, "SELECT prompt_tokens, completion_tokens, estimated, status, user_id"
                       " FROM usage_metrics ORDER BY id DESC LIMIT 1")
    assert usage == [(42, 3, 1, "interrupted", chat.user.id)]  # heuristic count of 'half an ans'
    assert rows(path, "SELECT * FROM round_checkpoints") == []
    assert user_id < msg


async def test_replies_left_streaming_keep_their_id_with_text_or_go(chat, aiohttp_client):
    """A crash leaves each streamed round's reply row `streaming`: the one with checkpointed
    text becomes its interrupted reply, the one that died before a checkpoint goes."""
    path = chat.api.config.database_path
    other = (await chat.api.ok("POST", "/api/sessions", chat.user,
                               json={"modelConfigId": chat.model["id"]}))["id"]
    with sqlite3.connect(path) as conn:
        left = {}
        for session in (chat.session_id, other):
            conn.execute("INSERT INTO messages (session_id, role, content) VALUES"
                         " (?, 'user', 'ask')", (session,))
            left[session] = conn.execute(
                "INSERT INTO messages (session_id, role, content, status) VALUES"
                " (?, 'assistant', '', 'streaming')", (session,)).lastrowid
        conn.execute("INSERT INTO round_checkpoints (session_id, user_message_id, model,"
                     " prompt_tokens, context_limit) VALUES (?, ?, 'fake-model', 5, 4000)",
                     (chat.session_id, left[chat.session_id] - 1))
        conn.execute("INSERT INTO round_checkpoint_parts (session_id, content) VALUES (?, ?)",
                     (chat.session_id, "so far"))
    await aiohttp_client(create_app(chat.api.config))  # a restart on the same data
    assert rows(path, "SELECT id, content, status FROM messages WHERE role = 'assistant'") == [
        (left[chat.session_id], "so far", "interrupted")]
    assert rows(path, "SELECT message_id FROM usage_metrics") == [(left[chat.session_id],)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "DATABASE_URL")}
    env.update({"PORT": str(port), "HOST": "127.0.0.1", "DATABASE_URL": str(data / "app.db"),
                "BCRYPT_ROUNDS": "4", "TOKENIZER_MODE": "heuristic", "LOG_LEVEL": "warn",
                "UPSTREAM_URL_POLICY": "any"})
    return subprocess.Popen([sys.executable, str(ROOT / "server.py"), "--env-file",
                             "/nonexistent"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


async def healthy(http: aiohttp.ClientSession, base: str) -> None:
    async with asyncio.timeout(20):
        while True:
            try:
                async with http.get(f"{base}/api/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


async def owner_with_session(http: aiohttp.ClientSession, base: str,
                             upstream_url: str) -> tuple[dict[str, str], dict]:
    """Once the server is up: its first user (owner), a model on the fake upstream, a session."""
    await healthy(http, base)
    async with http.post(f"{base}/api/auth/register",
                         json={"username": "owner", "password": "password1"}) as r:
        auth = {"Authorization": f"Bearer {(await r.json())['data']['token']}"}
    async with http.post(f"{base}/api/models", headers=auth, json={
            "name": "fake-model", "apiUrl": upstream_url, "apiKey": "sk-x"}) as r:
        model = (await r.json())["data"]
    async with http.post(f"{base}/api/sessions", headers=auth,
                         json={"modelConfigId": model["id"]}) as r:
        return auth, (await r.json())["data"]


async def test_kill_9_mid_stream_keeps_the_user_message_and_the_partial_reply(
        upstream, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    db = str(tmp_path / "app.db")
    try:
        async with aiohttp.ClientSession() as http:
            auth, session = await owner_with_session(http, base, upstream.url)
            tokens = [f"w{i} " for i in range(400)]
            upstream.queue(Reply(tokens=tokens, delay=0.01))
            response = await http.post(f"{base}/api/chat/stream", headers=auth,
                                       json={"sessionId": session["id"], "content": "tell"})
            reader = SSEStream(response)
            while reader.text().count("w") < 60:  # over half a second of text
                await reader.until("content")
            await until(lambda: bool(rows(db, CHECKPOINTED)[0][0]))
            checkpointed = rows(db, CHECKPOINTED)[0][0]
            [(streaming,)] = rows(db, "SELECT id FROM messages WHERE status = 'streaming'")
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            response.close()

            server = start_server(tmp_path, port)
            await healthy(http, base)
            assert rows(db, "PRAGMA integrity_check") == [("ok",)]
            assert rows(db, "SELECT * FROM round_checkpoints") == []
            kept = rows(db, "SELECT role, content, status, id FROM messages ORDER BY id")
            assert kept[0][:3] == ("user", "tell", "complete")
            role, text, status, reply_id = kept[1]
            assert (role, status, reply_id) == ("assistant", "interrupted", streaming)
            # What was relayed, up to the last checkpoint (≤ 1 s old) or later; nothing invented.
            assert "".join(tokens).startswith(text) and text.startswith(checkpointed.strip())
            assert len(rows(db, "SELECT id FROM usage_metrics")) == 1

            upstream.queue(Reply(tokens=["back ", "again"]))
            async with http.post(f"{base}/api/chat/stream", headers=auth,
                                 json={"sessionId": session["id"], "content": "hi"}) as r:
                again = SSEStream(r)
                await again.rest()
            assert again.types()[-1] == "complete" and again.text() == "back again"
            sent = upstream.requests[-1].body["messages"]
            assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    finally:
        server.kill()
        server.wait(10)


async def test_sigterm_stops_running_rounds_and_saves_them_before_exit(upstream, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    db = str(tmp_path / "app.db")
    try:
        async with aiohttp.ClientSession() as http:
            auth, session = await owner_with_session(http, base, upstream.url)
            upstream.queue(Reply(tokens=[f"w{i} " for i in range(500)], delay=0.01))
            async with http.post(f"{base}/api/chat/stream", headers=auth,
                                 json={"sessionId": session["id"], "content": "go"}) as r:
                reader = SSEStream(r)
                await reader.until("content")
                server.send_signal(signal.SIGTERM)
                events = await reader.rest()
            assert events[-1]["type"] == "stop" and events[-1]["reason"] == "cancelled"
            assert await asyncio.to_thread(server.wait, 20) == 0
            await asyncio.wait_for(upstream.requests[0].disconnected.wait(), 5)
            saved = rows(db, "SELECT content, status FROM messages WHERE role = 'assistant'")
            assert len(saved) == 1 and saved[0][1] == "stopped"
            assert saved[0][0] == reader.text().strip()
            assert rows(db, "SELECT * FROM round_checkpoints") == []
    finally:
        server.kill()
        server.wait(10)
