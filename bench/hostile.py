"""What a hostile upstream or client costs the aichat server: memory, CPU and /api/health latency.

    python bench/hostile.py                      # this checkout, 50 MB upstream replies, 120 s caps
    python bench/hostile.py --quick              # 10 MB replies, 60 s caps
    python bench/hostile.py --root /tmp/base     # another checkout (e.g. a worktree of HEAD~1)

Processes: the aichat server of ROOT (`server.py`, a fresh one on a fresh temporary data folder
per scenario, so each has its own idle RSS and database; upstream URL policy `any`), a hostile
OpenAI-compatible upstream (this file with `--upstream-port`, a subprocess so its CPU stays
apart) and this script, the client. Upstream modes, by model name:
`huge` streams SIZE of text in normal 4 KB SSE chunks, `noline` sends one `data:` line of SIZE
letters with no newline, `small` answers a short normal reply (streamed or not).

Scenarios, each on its own: a. huge reply and b. no newline through POST /api/chat/stream (read
to the end); c. the largest single-message body POST /v1/chat/completions accepts (8 000 000
characters, halved while refused with 413/400); d. 4 210 small messages in one /v1 request.
For each: idle RSS just before, peak RSS (50 ms samples), server CPU (utime+stime), GET
/api/health every 20 ms from another task (p50/p99/max), wall time, status and last event, and
the database + WAL size after. Budget: peak RSS <= idle + 64 MB and health p99 < 50 ms.
A warm-up round (chat + /v1) loads the tokenizer before the idle reading. The table goes to
stdout and to bench/out/hostile-<root folder name>[-quick].md (server logs beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procstat  # noqa: E402
from run import free_port, pct, wait_ok  # noqa: E402  (run.py has no import-time effects)

HERE = Path(__file__).resolve().parent
PASSWORD = "benchpass1"
MB = 2**20
BUDGET_RSS_MB, BUDGET_P99_MS = 64, 50
WORDS = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
TEXT_4K = (WORDS * (4096 // len(WORDS) + 1))[:4096].decode()



async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    mode, size = body.get("model"), request.app["size"]
    if not body.get("stream"):
        return web.json_response({
            "id": "chatcmpl-hostile", "object": "chat.completion", "created": 0, "model": mode,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok, noted."}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        if mode == "noline":  # one line that never ends: no newline, no [DONE], then close
            await response.write(b'data: {"choices":[{"delta":{"content":"')
            block = b"abcdefghijklmnopqrstuvwxyz" * 2521  # ~64 KB
            for _ in range(size // len(block)):
                await response.write(block)
            return response
        text = TEXT_4K if mode == "huge" else "ok, noted."
        chunk = b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode()
        for _ in range(size // len(TEXT_4K) if mode == "huge" else 1):
            await response.write(chunk + b"\n\n")  # write() waits while the reader lags
        await response.write(b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n')
        await response.write(b"data: [DONE]\n\n")
    except (ConnectionError, asyncio.CancelledError):
        pass  # the server hung up on us: that is what a cap does
    return response


async def ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def serve_upstream(port: int, size: int) -> None:
    app = web.Application(client_max_size=64 * MB)
    app["size"] = size
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/health", ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)



@dataclass
class Outcome:  # what the client saw; filled in as it goes, so a timeout still shows progress
    status: str = "no answer"
    read: int = 0
    tail: bytes = b""  # the end of an SSE body read so far


@dataclass
class Row:
    name: str
    outcome: Outcome
    wall: float = 0.0
    cpu: float = 0.0
    idle: int = 0
    peak: int = 0
    health: list[float] = field(default_factory=list)
    health_errors: int = 0
    db: int = 0
    wal: int = 0

    def cells(self) -> list[str]:
        if not self.health:  # never measured (the set-up failed)
            return [self.name, self.outcome.status] + ["–"] * 9
        grow = (self.peak - self.idle) / MB
        p99 = pct(self.health, 0.99)
        ok = grow <= BUDGET_RSS_MB and p99 < BUDGET_P99_MS and not self.health_errors
        health = " / ".join(f"{pct(self.health, q):.1f}" for q in (0.5, 0.99, 1.0))
        if self.health_errors:
            health += f" ({self.health_errors} failed)"
        return [self.name, self.outcome.status, f"{self.outcome.read / MB:.1f}",
                f"{self.wall:.1f}", f"{self.cpu:.1f}", f"{self.idle / MB:.1f}",
                f"{self.peak / MB:.1f}", f"{grow:.1f}", f"{health} (n={len(self.health)})",
                f"{self.db / MB:.1f} + {self.wal / MB:.1f}", "yes" if ok else "**no**"]


async def quiesce(pid: int, limit_s: float = 60) -> None:
    """Wait (bounded) until the server stops burning CPU from the previous scenario."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = procstat.cpu_seconds(pid)
        await asyncio.sleep(0.5)
        if procstat.cpu_seconds(pid) - before < 0.03:
            return


async def poll_health(url: str, stop: asyncio.Event, row: Row) -> None:
    async with aiohttp.ClientSession() as http:  # its own connection, never queued behind load
        while not stop.is_set():
            start = time.perf_counter()
            try:
                async with asyncio.timeout(30), http.get(url) as r:
                    await r.read()
                    row.health_errors += r.status != 200
            except (aiohttp.ClientError, TimeoutError):
                row.health_errors += 1
            row.health.append((time.perf_counter() - start) * 1000)
            try:
                await asyncio.wait_for(stop.wait(), 0.02)
            except TimeoutError:
                pass


async def measure(name: str, ctx: dict[str, Any], timeout: float,
                  action: Callable[[dict[str, Any], Outcome], Awaitable[None]]) -> Row:
    pid = ctx["pid"]
    await quiesce(pid)
    row = Row(name, Outcome(), idle=procstat.rss_bytes(pid))
    stop = asyncio.Event()
    poller = asyncio.create_task(poll_health(ctx["base"] + "/api/health", stop, row))
    await asyncio.sleep(0.1)  # a few baseline health samples
    with procstat.Sampler(pid, 0.05) as sampler:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await action(ctx, row.outcome)
        except TimeoutError:
            seen = f", last event {last_event(row.outcome.tail)}" if row.outcome.tail else ""
            row.outcome.status = f"TIMEOUT after {timeout:.0f} s ({row.outcome.status}{seen})"
        except Exception as e:  # keep going with the next scenario
            row.outcome.status = f"FAILED {type(e).__name__}: {e} ({row.outcome.status})"
        row.wall = time.perf_counter() - start
    stop.set()
    await asyncio.wait_for(poller, 35)
    row.cpu, row.peak = sampler.cpu, sampler.peak
    await quiesce(pid, 30)  # let a round that outlived its client finish writing
    row.db, row.wal = (os.path.getsize(f) if os.path.exists(f) else 0
                       for f in (ctx["db"], ctx["db"] + "-wal"))
    print(f"{name}: {' | '.join(row.cells()[1:])}", flush=True)
    return row



def last_event(tail: bytes) -> str:
    """`type` (and `error`) of the last complete SSE event in the tail of a stream."""
    for event in reversed(tail.split(b"\n\n")[:-1]):
        if event.startswith(b"data:"):
            try:
                data = json.loads(event[5:])
            except ValueError:
                continue
            kind = data.get("type", "?")
            return f"{kind}: {data['error']}" if data.get("error") else kind
    return "no event"


async def chat_stream(ctx: dict[str, Any], session_id: int, out: Outcome) -> None:
    async with ctx["http"].post(ctx["base"] + "/api/chat/stream", headers=ctx["auth"],
                                json={"sessionId": session_id, "content": "go"}) as r:
        out.status = str(r.status)
        if r.status != 200:
            out.status += " " + (await r.text())[:120]
            return
        out.status = "200, reading"
        async for piece in r.content.iter_any():
            out.read += len(piece)
            out.tail = (out.tail + piece)[-8192:]
        out.status = f"200, {last_event(out.tail)}"


async def v1_post(ctx: dict[str, Any], messages: list[dict[str, str]], out: Outcome) -> int:
    body = json.dumps({"model": "small", "stream": False, "messages": messages}).encode()
    async with ctx["http"].post(ctx["base"] + "/v1/chat/completions", data=body, headers={
            "Authorization": f"Bearer {ctx['api_key']}",
            "Content-Type": "application/json"}) as r:
        raw = await r.read()
        out.read += len(raw)
        try:
            error = json.loads(raw).get("error")
        except ValueError:
            error = raw[:80].decode("utf-8", "replace")
        message = error.get("message", "") if isinstance(error, dict) else error or ""
        out.status = f"{r.status}" + (f" {message[:100]}" if message else "")
        return r.status


async def v1_largest(ctx: dict[str, Any], out: Outcome) -> None:
    tried = []
    chars = 8_000_000
    while chars >= 1000:  # halve while refused (413/400): a cheap refusal is a result too
        text = (WORDS.decode() * (chars // len(WORDS) + 1))[:chars]
        status = await v1_post(ctx, [{"role": "user", "content": text}], out)
        tried.append(f"{chars} ch: {out.status}")
        out.status = "; ".join(tried)
        if status not in (400, 413):
            return
        chars //= 2


async def v1_many(ctx: dict[str, Any], out: Outcome) -> None:
    await v1_post(ctx, [{"role": "user", "content": "hi"}] * 4210, out)



async def call(ctx: dict[str, Any], method: str, path: str, json_body: Any = None) -> Any:
    async with ctx["http"].request(method, ctx["base"] + path, json=json_body,
                                   headers=ctx.get("auth", {})) as r:
        body = await r.json()
        assert r.status == 200, (method, path, r.status, body)
        return body["data"]


async def start_server(http: aiohttp.ClientSession, root: Path, data_dir: str, up_url: str,
                       procs: list[subprocess.Popen], log: Any) -> dict[str, Any]:
    """A fresh server on its own data folder, set up through the API and warmed up."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PORT", "HOST", "APP_MODE", "DATABASE_URL", "UPSTREAM_URL_POLICY")}
    db = os.path.join(data_dir, "app.db")
    env.update({"PORT": str(port), "HOST": "127.0.0.1", "APP_MODE": "multi",
                "DATABASE_URL": db, "BCRYPT_ROUNDS": "4", "UPSTREAM_URL_POLICY": "any"})
    server = subprocess.Popen([sys.executable, "server.py", "--env-file", "/nonexistent"],
                              cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=log)
    procs.append(server)
    ctx: dict[str, Any] = {"http": http, "base": f"http://127.0.0.1:{port}", "server": server,
                           "pid": server.pid, "db": db}
    for _ in range(60):  # bounded; stop at once if the server dies while starting
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}; see {log.name}")
        try:
            await wait_ok(http, ctx["base"] + "/api/settings/health", 1)
            break
        except RuntimeError:
            continue
    else:
        raise RuntimeError(f"server did not answer within 60 s; see {log.name}")
    token = (await call(ctx, "POST", "/api/auth/register",
                        {"username": "bench", "password": PASSWORD}))["token"]
    ctx["auth"] = {"Authorization": f"Bearer {token}"}
    await call(ctx, "PUT", "/api/settings/system", {"upstream_url_policy": "any"})
    ctx["sessions"] = {}
    for mode in ("huge", "noline", "small"):
        model = await call(ctx, "POST", "/api/models",
                           {"name": mode, "apiUrl": up_url, "apiKey": "sk-x"})
        ctx["sessions"][mode] = (await call(ctx, "POST", "/api/sessions",
                                            {"modelConfigId": model["id"]}))["id"]
    ctx["api_key"] = (await call(ctx, "POST", "/api/keys", {"name": "bench"}))["key"]
    warm = Outcome()  # load the tokenizer and open the upstream pool before the idle reading
    await chat_stream(ctx, ctx["sessions"]["small"], warm)
    await v1_post(ctx, [{"role": "user", "content": "hi"}], warm)
    assert warm.status == "200", f"warm-up failed: {warm.status}"
    return ctx


SCENARIOS: list[tuple[str, Callable[[dict[str, Any], Outcome], Awaitable[None]]]] = [
    ("a. huge reply", lambda ctx, o: chat_stream(ctx, ctx["sessions"]["huge"], o)),
    ("b. no newline", lambda ctx, o: chat_stream(ctx, ctx["sessions"]["noline"], o)),
    ("c. /v1 largest body", v1_largest),
    ("d. /v1 4210 messages", v1_many),
]


async def bench(args: argparse.Namespace, root: Path, data_root: str,
                procs: list[subprocess.Popen], log_path: Path) -> list[Row]:
    size = (10 if args.quick else 50) * 10**6
    timeout = 60 if args.quick else 120
    log = open(log_path, "w")  # closed with the process; the servers' stderr too
    up_port = free_port()
    procs.append(subprocess.Popen(
        [sys.executable, __file__, "--upstream-port", str(up_port), "--size", str(size)],
        stdout=subprocess.DEVNULL, stderr=log))
    up_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
    rows = []
    async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as http:
        await wait_ok(http, f"http://127.0.0.1:{up_port}/health")
        for name, action in SCENARIOS:  # each on a fresh server: its own idle RSS and database
            try:
                ctx = await start_server(http, root, tempfile.mkdtemp(dir=data_root), up_url,
                                         procs, log)
                rows.append(await measure(name, ctx, timeout, action))
                if ctx["server"].poll() is not None:
                    rows[-1].outcome.status += f"; SERVER EXITED ({ctx['server'].returncode})"
            except Exception as e:
                rows.append(Row(name, Outcome(f"SET-UP FAILED {type(e).__name__}: {e}")))
                print(f"{name}: {rows[-1].outcome.status}", flush=True)
            finally:  # procs[0] is the upstream, kept for every scenario
                stop_all(procs[1:])
                del procs[1:]
    return rows


def report(rows: list[Row], command: str, args: argparse.Namespace, root: Path) -> str:
    size = 10 if args.quick else 50
    head = ["scenario", "status / last event", "client MB read", "wall s", "server CPU s",
            "idle RSS MB", "peak RSS MB", "peak − idle MB", "health p50 / p99 / max ms",
            "DB + WAL MB", "in budget"]
    lines = [f"# hostile inputs: {root}", "", f"- command: `{command}`",
             f"- upstream replies: {size} MB; scenario cap {60 if args.quick else 120} s; "
             f"budget: peak ≤ idle + {BUDGET_RSS_MB} MB, health p99 < {BUDGET_P99_MS} ms",
             f"- date: {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cores", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |")
    return "\n".join(lines) + "\n"


def stop_all(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(HERE.parent), help="aichat checkout to start")
    parser.add_argument("--quick", action="store_true", help="10 MB replies, 60 s caps")
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=50 * 10**6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream_port:
        return serve_upstream(args.upstream_port, args.size)
    root = Path(args.root).resolve()
    label = root.name + ("-quick" if args.quick else "")
    out_dir = HERE / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "python bench/hostile.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    procs: list[subprocess.Popen] = []
    data_dir = tempfile.mkdtemp(prefix="aichat-hostile-")  # a data folder per scenario inside
    try:
        import uvloop  # the client is Python too: keep its own overhead small
        runner: Callable[..., list[Row]] = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        rows = runner(bench(args, root, data_dir, procs, out_dir / f"hostile-{label}.log"))
    finally:
        stop_all(procs)
        shutil.rmtree(data_dir, ignore_errors=True)
    text = report(rows, command.strip(), args, root)
    (out_dir / f"hostile-{label}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
