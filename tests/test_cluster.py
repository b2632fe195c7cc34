"""Two real aichat processes on one PostgreSQL database, as behind a load balancer: whatever
one process used to keep in memory holds across them (chat/cluster.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import asyncpg
import pytest

from .conftest import PG_SECRETS
from .fake_upstream import Reply
from .helpers import SSEStream
from .test_crash import free_port, healthy, owner_with_session

ROOT = Path(__file__).resolve().parent.parent


class Instance:
    def __init__(self, url: str, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if k not in ("PORT", "DATABASE_URL")}
        environ.update({"PORT": str(self.port), "HOST": "127.0.0.1", "DATABASE_URL": url,
                        "JWT_SECRET": PG_SECRETS["jwt_secret"],
                        "ENCRYPTION_KEY": PG_SECRETS["encryption_key"],
                        "BCRYPT_ROUNDS": "4", "TOKENIZER_MODE": "heuristic",
                        "LOG_LEVEL": "warn", "UPSTREAM_URL_POLICY": "any", **env})
        tmp.mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--env-file", "/nonexistent"],
            env=environ, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@asynccontextmanager
async def two(pg_url: str, tmp_path: Path, **env: str) -> AsyncIterator[tuple[Any, ...]]:
    """Instances A and B on one database, an HTTP client, and a database connection."""
    a = Instance(pg_url, tmp_path / "a", **env)
    b = Instance(pg_url, tmp_path / "b", **env)
    db = None
    try:
        async with aiohttp.ClientSession() as http:
            await healthy(http, a.base)
            await healthy(http, b.base)
            db = await asyncpg.connect(pg_url)
            yield a, b, http, db
    finally:
        if db is not None:
            await db.close()
        for instance in (a, b):
            instance.kill()


async def until(check: Any, timeout: float = 15.0) -> Any:
    """Poll another process's state (there is no event to await across processes)."""
    async with asyncio.timeout(timeout):
        while not (result := await check()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return result


async def post(http: aiohttp.ClientSession, url: str, auth: dict, body: dict) -> tuple[int, Any]:
    async with http.post(url, headers=auth, json=body) as r:
        return r.status, await r.json()


async def streaming(http: aiohttp.ClientSession, base: str, auth: dict, session_id: int,
                    content: str) -> tuple[aiohttp.ClientResponse, SSEStream]:
    response = await http.post(f"{base}/api/chat/stream", headers=auth,
                               json={"sessionId": session_id, "content": content})
    assert response.status == 200, await response.text()
    reader = SSEStream(response)
    await reader.until("content")
    return response, reader


async def test_a_stop_on_b_stops_the_round_running_on_a(pg_url, tmp_path, upstream):
    async with two(pg_url, tmp_path) as (a, b, http, db):
        auth, session = await owner_with_session(http, a.base, upstream.url)
        upstream.queue(Reply(tokens=["one ", "two ", "three"], stall_after=2))
        response, reader = await streaming(http, a.base, auth, session["id"], "go")
        status, body = await post(http, f"{b.base}/api/chat/stop", auth,
                                  {"sessionId": session["id"]})
        assert status == 200 and body["data"]["stopped"] is True
        await reader.rest()
        response.close()
        assert reader.events[-1]["type"] == "stop"
        rows = await db.fetch("SELECT id, content, status FROM messages"
                              " WHERE role = 'assistant'")
        assert [(r["content"], r["status"]) for r in rows] == [("one two", "stopped")]
        assert body["data"]["assistantMessageId"] == rows[0]["id"]
        # Nothing runs any more: a second stop, on either instance, finds nothing.
        for instance in (a, b):
            status, body = await post(http, f"{instance.base}/api/chat/stop", auth,
                                      {"sessionId": session["id"]})
            assert body["data"] == {"stopped": False}


async def test_a_new_message_on_b_supersedes_the_round_on_a(pg_url, tmp_path, upstream):
    async with two(pg_url, tmp_path) as (a, b, http, db):
        auth, session = await owner_with_session(http, a.base, upstream.url)
        upstream.queue(Reply(tokens=["old ", "reply ", "never"], stall_after=2))
        response, old = await streaming(http, a.base, auth, session["id"], "first")
        upstream.queue(Reply(tokens=["new ", "reply"]))
        async with http.post(f"{b.base}/api/chat/stream", headers=auth,
                             json={"sessionId": session["id"], "content": "second"}) as r:
            new = SSEStream(r)
            await new.rest()
        await old.rest()
        response.close()
        assert old.events[-1]["type"] == "stop" and new.types()[-1] == "complete"
        rows = await db.fetch("SELECT role, content, status FROM messages ORDER BY id")
        assert [tuple(r) for r in rows] == [
            ("user", "first", "complete"), ("assistant", "old reply", "stopped"),
            ("user", "second", "complete"), ("assistant", "new reply", "complete")]


async def test_the_concurrency_limit_counts_rounds_on_every_instance(pg_url, tmp_path,
                                                                    upstream):
    async with two(pg_url, tmp_path, MAX_CONCURRENT_STREAMS="1") as (a, b, http, db):
        auth, first = await owner_with_session(http, a.base, upstream.url)
        status, second = await post(http, f"{b.base}/api/sessions", auth,
                                    {"modelConfigId": first["modelConfigId"]})
        upstream.queue(Reply(tokens=["busy ", "never"], stall_after=1))
        response, reader = await streaming(http, a.base, auth, first["id"], "long")
        status, body = await post(http, f"{b.base}/api/chat/stream", auth,
                                  {"sessionId": second["data"]["id"], "content": "more"})
        assert status == 429 and "limit 1" in body["error"]
        await post(http, f"{b.base}/api/chat/stop", auth, {"sessionId": first["id"]})
        await reader.rest()
        response.close()
        upstream.queue(Reply(tokens=["now ", "fine"]))
        async with http.post(f"{b.base}/api/chat/stream", headers=auth, json={
                "sessionId": second["data"]["id"], "content": "more"}) as r:
            assert r.status == 200  # the slot came back when the round on A ended
            done = SSEStream(r)
            await done.rest()
        assert done.text() == "now fine"
        assert await db.fetchval("SELECT COUNT(*) FROM live_rounds") == 0


async def test_an_instance_killed_mid_round_loses_no_reply_and_no_slot(pg_url, tmp_path,
                                                                       upstream):
    async with two(pg_url, tmp_path, MAX_CONCURRENT_STREAMS="1") as (a, b, http, db):
        auth, session = await owner_with_session(http, a.base, upstream.url)
        tokens = [f"w{i} " for i in range(400)]
        upstream.queue(Reply(tokens=tokens, delay=0.01))
        response, reader = await streaming(http, a.base, auth, session["id"], "tell")
        checkpointed = await until(lambda: db.fetchval(
            "SELECT string_agg(content, '' ORDER BY id) FROM round_checkpoint_parts"))
        a.kill()
        response.close()
        # B notices that A is gone (its lock is free) and keeps the partial reply.
        reply = await until(lambda: db.fetchrow(
            "SELECT content, status FROM messages WHERE role = 'assistant'"
            " AND status <> 'streaming'"))
        assert reply["status"] == "interrupted"
        assert "".join(tokens).startswith(reply["content"])
        assert reply["content"].startswith(checkpointed.strip())
        assert await db.fetchval("SELECT COUNT(*) FROM round_checkpoints") == 0
        # A's slot is not held forever: the user may stream again (limit 1), on B.
        upstream.queue(Reply(tokens=["back"]))
        async with http.post(f"{b.base}/api/chat/stream", headers=auth,
                             json={"sessionId": session["id"], "content": "again"}) as r:
            assert r.status == 200, await r.text()
            again = SSEStream(r)
            await again.rest()
        assert again.types()[-1] == "complete"


async def test_sign_in_failures_count_across_instances(pg_url, tmp_path, upstream):
    async with two(pg_url, tmp_path, LOGIN_ACCOUNT_LIMIT="3") as (a, b, http, db):
        await owner_with_session(http, a.base, upstream.url)
        statuses = []
        for instance in (a, b, a, b):
            async with http.post(f"{instance.base}/api/auth/login", json={
                    "username": "owner", "password": "wrong-password"}) as r:
                statuses.append(r.status)
        assert statuses == [401, 401, 401, 429]


async def test_a_setting_changed_on_one_instance_holds_on_the_other(pg_url, tmp_path, upstream):
    async with two(pg_url, tmp_path, APP_MODE="multi") as (a, b, http, db):
        auth, _ = await owner_with_session(http, a.base, upstream.url)
        async with http.put(f"{a.base}/api/settings/system", headers=auth,
                            json={"registration_enabled": False}) as r:
            assert r.status == 200, await r.text()
        async with http.post(f"{b.base}/api/auth/register", json={
                "username": "late", "password": "password1"}) as r:
            assert r.status == 403


@pytest.mark.parametrize("bad", ["", "x" * 10])
def test_postgresql_needs_shared_secrets(pg_url, tmp_path, bad):
    """Generated secrets would differ per instance: a shared database refuses to start
    without JWT_SECRET (and the password in the URL never reaches the log)."""
    env = {k: v for k, v in os.environ.items() if k not in ("JWT_SECRET", "ENCRYPTION_KEY")}
    env.update({"DATABASE_URL": pg_url, "PORT": str(free_port()), "ENCRYPTION_KEY": "e" * 40})
    if bad:
        env["JWT_SECRET"] = bad
    result = subprocess.run([sys.executable, str(ROOT / "server.py"), "--env-file",
                             "/nonexistent"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "JWT_SECRET" in result.stderr
    password = pg_url.split(":")[2].split("@")[0]
    assert password not in result.stderr + result.stdout


@pytest.mark.postgresql_only
async def test_postgresql_restarting_ends_streams_clearly_and_the_server_recovers(
        chat_factory, pg_cluster):
    chat = await chat_factory()
    chat.upstream.queue(Reply(tokens=[f"t{i} " for i in range(300)], delay=0.02))
    async with chat.open("before the restart") as response:
        reader = SSEStream(response)
        await reader.until("content")
        await asyncio.to_thread(pg_cluster.restart)
        await reader.rest(timeout=20)  # the stream ends: it does not hang on a dead database
    assert reader.events[-1]["type"] in ("stop", "error")

    async def healthy() -> bool:  # the pool reconnects, the instance rejoins, by themselves
        status, _ = await chat.api.call("GET", "/api/health")
        return status == 200
    await until(healthy, timeout=30)
    status, _ = await chat.api.call("GET", "/api/sessions", chat.user)
    assert status == 200
    kept = await chat.rows("SELECT role, content FROM messages ORDER BY id")
    assert kept[0] == ("user", "before the restart")  # written before: kept
    chat.upstream.queue(Reply(tokens=["after"]))
    again = await chat.stream("after the restart")
    assert again.types()[-1] == "complete" and again.text() == "after"


async def test_the_post_abort_guard_holds_when_the_re_send_reaches_the_other_instance(
        pg_url, tmp_path, upstream):
    async with two(pg_url, tmp_path) as (a, b, http, db):
        auth, session = await owner_with_session(http, a.base, upstream.url)
        upstream.queue(Reply(tokens=["alpha ", "beta ", "gamma"], stall_after=2))
        response, reader = await streaming(http, a.base, auth, session["id"], "Explain")
        response.close()  # the front end's stop button aborts the stream ...
        status, body = await post(http, f"{b.base}/api/chat/completion", auth,
                                  {"sessionId": session["id"], "content": "Explain"})
        assert status == 200, body  # ... and re-sends the message, here to B
        assert body["data"]["content"] == "alpha beta"
        assert body["data"]["assistantMessage"]["status"] == "stopped"
        assert body["data"]["userMessageId"] == reader.events[0]["messageId"]
        assert len(upstream.requests) == 1  # no second upstream call
        assert await db.fetchval("SELECT COUNT(*) FROM messages") == 2  # nothing new stored


async def test_deleting_on_b_stops_the_round_on_a_and_saves_nothing(pg_url, tmp_path,
                                                                   upstream):
    async with two(pg_url, tmp_path, APP_MODE="multi") as (a, b, http, db):
        admin, _ = await owner_with_session(http, a.base, upstream.url)
        status, body = await post(http, f"{a.base}/api/auth/register", {},
                                  {"username": "carol", "password": "password1"})
        carol = {"Authorization": f"Bearer {body['data']['token']}"}
        status, model = await post(http, f"{a.base}/api/models", carol, {
            "name": "m", "apiUrl": upstream.url, "apiKey": "sk-carol"})
        status, session = await post(http, f"{a.base}/api/sessions", carol,
                                     {"modelConfigId": model["data"]["id"]})
        upstream.queue(Reply(tokens=["doomed ", "text ", "never"], stall_after=2))
        response, reader = await streaming(http, a.base, carol, session["data"]["id"], "hi")
        async with http.delete(f"{b.base}/api/users/{body['data']['user']['id']}",
                               headers=admin) as r:
            assert r.status == 200, await r.text()
        await reader.rest()
        response.close()
        assert await db.fetchval("SELECT COUNT(*) FROM users WHERE username = 'carol'") == 0
        assert await db.fetchval("SELECT COUNT(*) FROM messages") == 0
        assert await db.fetchval("SELECT COUNT(*) FROM live_rounds") == 0


async def _v1(http: aiohttp.ClientSession, base: str, auth: dict) -> int:
    """One non-streamed /v1 request (no session: many may run at once); its status."""
    async with http.post(f"{base}/v1/chat/completions", headers=auth, json={
            "model": "fake-model", "messages": [{"role": "user", "content": "count me"}]}) as r:
        await r.read()
        return r.status


async def _set_limits(http: aiohttp.ClientSession, base: str, auth: dict, **limits: int) -> None:
    async with http.get(f"{base}/api/auth/me", headers=auth) as r:
        me = (await r.json())["data"]
    async with http.put(f"{base}/api/users/{me['id']}/limits", headers=auth,
                        json={"maxConcurrentStreams": 100, **limits}) as r:
        assert r.status == 200, await r.text()


async def test_requests_per_minute_count_on_every_instance(pg_url, tmp_path, upstream):
    async with two(pg_url, tmp_path) as (a, b, http, db):
        auth, _ = await owner_with_session(http, a.base, upstream.url)
        await _set_limits(http, a.base, auth, requestsPerMinute=6)
        upstream.default = Reply(tokens=["ok"], delay=0.05)
        statuses = await asyncio.gather(*(_v1(http, (a, b)[i % 2].base, auth)
                                          for i in range(20)))
        # One minute's count, whichever instance each request reached (unless the minute
        # turned during the burst: then each minute admits its own six).
        minutes = await db.fetchval("SELECT COUNT(DISTINCT substr(created_at, 1, 16))"
                                    " FROM usage_metrics")
        assert statuses.count(200) == 6 * minutes and set(statuses) == {200, 429}
        assert await db.fetchval("SELECT COUNT(*) FROM quota_holds") == 0


async def test_parallel_rounds_on_two_instances_hold_a_token_budget(pg_url, tmp_path,
                                                                    upstream):
    async with two(pg_url, tmp_path) as (a, b, http, db):
        auth, _ = await owner_with_session(http, a.base, upstream.url)
        upstream.default = Reply(tokens=["fine"])
        assert await _v1(http, a.base, auth) == 200  # no limit yet: measures one prompt
        prompt, used = await db.fetchrow("SELECT prompt_tokens, total_tokens FROM usage_metrics")
        # Room for exactly five more prompts; the replies arrive only after every admission.
        await _set_limits(http, a.base, auth, tokensPerDay=used + 5 * prompt + prompt // 2)
        upstream.default = Reply(tokens=["slow ", "reply"], delay=0.8)
        statuses = await asyncio.gather(*(_v1(http, (a, b)[i % 2].base, auth)
                                          for i in range(16)))
        assert statuses.count(200) == 5 and statuses.count(429) == 11
        assert await db.fetchval("SELECT COUNT(*) FROM quota_holds") == 0
        stored = await db.fetchval("SELECT SUM(tokens) FROM quota_days")
        assert stored == await db.fetchval("SELECT SUM(total_tokens) FROM usage_metrics")


async def _follow_on(http: aiohttp.ClientSession, base: str, auth: dict, session_id: int,
                     last_event_id: str | None = None, *, upto: str | None = None) -> SSEStream:
    """Follow the session's round on `base`: to its end, or (`upto`) until that event."""
    headers = {**auth, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    async with http.get(f"{base}/api/chat/sessions/{session_id}/stream",
                        headers=headers) as r:
        assert r.status == 200, await r.text()
        stream = SSEStream(r)
        if upto is None:
            await stream.rest(timeout=10)
        else:
            await stream.until(upto, timeout=10)
        return stream


async def test_a_reply_running_on_a_is_listed_and_followed_on_b(pg_url, tmp_path, upstream):
    async with two(pg_url, tmp_path) as (a, b, http, db):
        auth, session = await owner_with_session(http, a.base, upstream.url)
        sid = session["id"]
        tokens = [f"w{i} " for i in range(150)]
        whole = "".join(tokens).strip()
        upstream.queue(Reply(tokens=tokens, delay=0.02))
        response, own = await streaming(http, a.base, auth, sid, "tell")
        await until(lambda: db.fetchval("SELECT COUNT(*) FROM round_checkpoint_parts"))
        # B lists the reply A is generating, with the text A has checkpointed.
        async with http.get(f"{b.base}/api/chat/sessions/{sid}/messages", headers=auth) as r:
            listed = (await r.json())["data"]["messages"]
        assert listed[1]["status"] == "streaming" and listed[1]["content"]
        assert whole.startswith(listed[1]["content"])
        # A follower on B: a snapshot (start, then the text so far) ...
        cut = await _follow_on(http, b.base, auth, sid, upto="content")
        assert cut.events[0]["generationId"] == own.events[0]["generationId"]
        # ... then, its connection lost, a resume on B by the id it last had: the rest; and
        # one on B by an id of A's numbering, which B cannot place: a snapshot.
        rest, other = await asyncio.gather(
            _follow_on(http, b.base, auth, sid, cut.ids[-1]),
            _follow_on(http, b.base, auth, sid, own.ids[-1]))
        await own.rest()
        response.close()
        assert cut.text() + rest.text() == whole
        assert other.types()[0] == "start" and other.text() == whole
        [reply_id] = [r["id"] for r in await db.fetch(
            "SELECT id FROM messages WHERE role = 'assistant' AND status = 'complete'")]
        assert reply_id == listed[1]["id"]
        for stream in (own, rest, other):
            assert stream.events[-1] == {"type": "complete", "assistantMessageId": reply_id}
        usage = [e for e in rest.events if e["type"] == "usage"][-1]["usage"]
        assert usage["completion_tokens"] > 0
        assert usage == [e for e in own.events if e["type"] == "usage"][-1]["usage"]
        # Nothing runs any more: B, like A, answers 204.
        async with http.get(f"{b.base}/api/chat/sessions/{sid}/stream", headers=auth) as r:
            assert r.status == 204
