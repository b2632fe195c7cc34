"""Time GET /api/sessions on a database seeded with 10 000 sessions and 1 000 000 messages.

    python bench/list_sessions.py [--sessions 10000] [--messages 1000000] [--requests 300]

Starts the real server (`server.py`) as a subprocess on a temporary data folder, seeds the
database directly with sqlite3, then times sequential requests. The baseline, measured in the
same run, is the same request for a user with 20 sessions and no messages, and /api/health.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_healthy(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(f"{base}/api/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("server did not start")


async def register(http: aiohttp.ClientSession, base: str, name: str) -> tuple[int, str]:
    async with http.post(f"{base}/api/auth/register",
                         json={"username": name, "password": "password1"}) as r:
        data = (await r.json())["data"]
        return data["user"]["id"], data["token"]


def seed(db_path: str, user_id: int, model_id: int, sessions: int, messages: int) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            "INSERT INTO chat_sessions (user_id, model_config_id, title, created_at)"
            " VALUES (?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?))",
            [(user_id, model_id, f"Chat {i}", f"-{sessions - i} seconds")
             for i in range(sessions)])
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM chat_sessions WHERE user_id = ?", (user_id,))]
        per = max(1, messages // len(ids))
        batch = []
        for sid in ids:
            for j in range(per):
                batch.append((sid, "user" if j % 2 == 0 else "assistant", f"message {j}"))
            if len(batch) >= 100_000:
                conn.executemany("INSERT INTO messages (session_id, role, content) "
                                 "VALUES (?, ?, ?)", batch)
                batch.clear()
        if batch:
            conn.executemany("INSERT INTO messages (session_id, role, content) VALUES (?, ?, ?)",
                             batch)
        conn.commit()


async def timed(http: aiohttp.ClientSession, url: str, token: str, n: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    times = []
    for _ in range(n):
        start = time.perf_counter()
        async with http.get(url, headers=headers) as r:
            await r.read()
            assert r.status == 200, r.status
        times.append((time.perf_counter() - start) * 1000)
    return times


def summary(times: list[float]) -> str:
    times = sorted(times)
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
    return f"p50 {statistics.median(times):.2f} ms  p95 {p(0.95):.2f} ms  p99 {p(0.99):.2f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="aichat-bench-")
    db_path = os.path.join(tmp, "app.db")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATABASE_URL": db_path, "PORT": str(port), "APP_MODE": "multi",
           "BCRYPT_ROUNDS": "4", "LOG_LEVEL": "warn", "TOKENIZER_MODE": "heuristic"}
    server = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "--env-file",
                               "/nonexistent"], env=env)
    try:
        await wait_healthy(base)
        async with aiohttp.ClientSession() as http:
            big_id, big = await register(http, base, "big")
            small_id, small = await register(http, base, "small")
            async with http.post(f"{base}/api/models/system", headers={
                    "Authorization": f"Bearer {big}"}, json={
                    "name": "m", "apiUrl": "http://127.0.0.1:9/v1/chat/completions",
                    "apiKey": "k"}) as r:
                model_id = (await r.json())["data"]["id"]
            started = time.perf_counter()
            seed(db_path, big_id, model_id, args.sessions, args.messages)
            seed(db_path, small_id, model_id, 20, 0)
            print(f"seeded {args.sessions} sessions, {args.messages} messages in "
                  f"{time.perf_counter() - started:.1f}s")
            for _ in range(2):  # warm up both paths
                await timed(http, f"{base}/api/sessions", big, 20)
                await timed(http, f"{base}/api/sessions", small, 20)
            health = await timed(http, f"{base}/api/health", big, args.requests)
            small_t = await timed(http, f"{base}/api/sessions", small, args.requests)
            big_t = await timed(http, f"{base}/api/sessions", big, args.requests)
            deep = await timed(http, f"{base}/api/sessions?page=250&limit=20", big,
                               args.requests)
        print(f"GET /api/health                     {summary(health)}")
        print(f"GET /api/sessions (20 sessions)      {summary(small_t)}")
        print(f"GET /api/sessions ({args.sessions} sessions) {summary(big_t)}")
        print(f"GET /api/sessions?page=250          {summary(deep)}")
        print(f"ratio seeded/baseline p50: "
              f"{statistics.median(big_t) / statistics.median(small_t):.2f}x")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
