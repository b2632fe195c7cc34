"""What event ids and followers cost on the relay path (docs/api.md §5.9): bench/FOLLOWERS.md.

    python bench/followers.py              # full run: 16 rounds, ~7.5 minutes on a 2-core box
    python bench/followers.py --quick      # smoke run: 2 rounds, smaller loads, ~50 s

    git worktree add --detach /tmp/aichat-base 201c0fa      # the baseline, made by hand ...
    python bench/followers.py --base-root /tmp/aichat-base
    git worktree remove /tmp/aichat-base                    # ... and removed after

Without --base-root the script adds that worktree itself (`git worktree add --detach` of
BASE_REV in a temporary folder) and removes it at the end. `--only ids` / `--only followers`
runs one part; `--base-root` on a worktree of HEAD itself is an A/A check of part 1 (the two
server processes should then cost the same).

Processes: the fake upstream and the aichat server of this checkout (bench/run.py's
`start_stack`), a second aichat server started from the base checkout on its own SQLite data
folder (same interpreter, same environment), and this script, the load generator.

1. **Event ids** (HEAD vs base): bench/quotas.py's loads, N users at once, each streaming rounds
   one after another in its own session (long: 300-token replies; short: 20-token replies), on
   HEAD (every /api/chat/stream event goes through chat/broadcast.py: an `id:` line, the
   replay log, the copy to followers) and on the base (201c0fa: the SSEWriter is the sink),
   alternating which goes first over the rounds.
2. **Followers** (HEAD): one round at a time, a long reply in a fresh session, with 0 followers
   and with F (the per-round cap, 16) clients of GET /api/chat/sessions/:id/stream, all
   started once the original client has its first content event; the two alternate. Each
   follower's joined text must equal the original client's.

CPU: the aichat server's, summed over its threads from /proc/<pid>/task/*/schedstat (ns; the
10 ms ticks of /proc/<pid>/stat that procstat.py reads are kept as a cross-check: a 0-follower
round uses only some 70 of them). RSS: procstat.py's 100 ms samples.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, UTC
from pathlib import Path
from typing import Any, Iterator

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procstat  # noqa: E402
import quotas  # noqa: E402
import run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from aichat.chat.broadcast import MAX_FOLLOWERS  # noqa: E402
from aichat.sse.writer import encode_text  # noqa: E402

BASE_REV = "201c0fa"  # the commit before event ids and GET .../stream (issue 16)
SIDES = ("HEAD", "base")
CONTENT = b'"type":"content"'


# --- measuring --------------------------------------------------------------------------------


def thread_cpu_ns(pid: int) -> int:
    """CPU time of all the process's threads so far, in ns (schedstat's first field)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total


class Sampler(procstat.Sampler):
    """procstat's sampler, with `cpu` in ns resolution (schedstat) and its ticks in `ticks`."""

    def __enter__(self) -> Sampler:
        self.ns_start = thread_cpu_ns(self.pid)
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.ticks = self.cpu
        self.cpu = (thread_cpu_ns(self.pid) - self.ns_start) / 1e9


def parse(body: bytes) -> tuple[list[bytes], list[dict[str, Any]]]:
    """The `id:` values and `data:` payloads of an SSE body."""
    ids, events = [], []
    for line in body.split(b"\n"):
        if line.startswith(b"id: "):
            ids.append(line[4:])
        elif line.startswith(b"data: "):
            events.append(json.loads(line[6:]))
    return ids, events


def joined(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e.get("type") == "content")


async def read_body(response: aiohttp.ClientResponse,
                    first_content: asyncio.Event | None = None) -> bytes:
    """The whole body, kept raw (parsed after the measured window)."""
    body = bytearray()
    async for piece in response.content.iter_any():
        body += piece
        if first_content is not None and not first_content.is_set() and CONTENT in body:
            first_content.set()
    return bytes(body)


async def followed_round(http: aiohttp.ClientSession, base: str, headers: dict[str, str],
                         session_id: int, followers: int) -> tuple[bytes, list[tuple[int, bytes]]]:
    """One round of POST /api/chat/stream and `followers` clients of GET .../stream, all
    started together once the original client has read its first content event."""
    begun = asyncio.Event()

    async def original() -> bytes:
        async with http.post(f"{base}/api/chat/stream", headers=headers, json={
                "sessionId": session_id, "content": "a long story, please"}) as r:
            if r.status != 200:
                raise RuntimeError(f"POST /api/chat/stream: {r.status} {await r.text()}")
            return await read_body(r, begun)

    async def follower() -> tuple[int, bytes]:
        await begun.wait()
        async with http.get(f"{base}/api/chat/sessions/{session_id}/stream",
                            headers=headers) as r:
            return r.status, await read_body(r)

    async with asyncio.timeout(180), asyncio.TaskGroup() as group:
        first = group.create_task(original())
        rest = [group.create_task(follower()) for _ in range(followers)]
    return first.result(), [t.result() for t in rest]


def reference_costs(event: bytes, n: int) -> dict[str, float]:
    """In this process, µs of CPU: encoding one text event (aichat's `encode_text`) and one
    send() of an event's bytes on a loopback TCP connection (TCP_NODELAY, as aiohttp's)."""
    start = time.thread_time()
    for i in range(n):
        encode_text("content", f"tok{i % 2000} ")
    encode_us = (time.thread_time() - start) * 1e6 / n
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
        sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def drain() -> None:
            while receiver.recv(1 << 16):
                pass
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        start = time.thread_time()  # this thread's CPU: blocked time is not counted
        for _ in range(n):
            sender.sendall(event)
        send_us = (time.thread_time() - start) * 1e6 / n
        sender.close()
        reader.join(10)
        receiver.close()
    return {"encode_us": encode_us, "send_us": send_us, "event_bytes": len(event)}


# --- processes --------------------------------------------------------------------------------


@contextlib.contextmanager
def base_checkout(given: str | None) -> Iterator[Path]:
    """The base checkout: `given`, or a worktree of BASE_REV made here and removed after."""
    if given:
        yield Path(given).resolve()
        return
    parent = tempfile.mkdtemp(prefix="aichat-followers-")
    path = Path(parent) / "base"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), BASE_REV],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                       check=False, capture_output=True)
        shutil.rmtree(parent, ignore_errors=True)


def revision(root: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                              text=True).stdout.strip()
    rev = git("rev-parse", "--short", "HEAD") or "?"
    return rev + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no")
                  else "")


async def start_server(http: aiohttp.ClientSession, root: Path, stack: run.Stack,
                       log: Path, extra_env: dict[str, str] | None = None) -> run.Stack:
    """An aichat server from checkout `root`, set up as bench/run.py's, on `stack`'s upstream
    (with `extra_env` on top: a setting only this side has)."""
    port = run.free_port()
    data_dir = tempfile.mkdtemp(prefix="aichat-bench-base-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORT", "DATABASE_URL"))}
    env.update({"PORT": str(port), "HOST": "127.0.0.1", "APP_MODE": "multi",
                "DATABASE_URL": os.path.join(data_dir, "app.db"), "BCRYPT_ROUNDS": "4",
                **(extra_env or {})})
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "server.py", "--env-file", "/nonexistent"],
                              cwd=root, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(log, "w"))
    base = f"http://127.0.0.1:{port}"
    await run.wait_ok(http, f"{base}/api/settings/health", 60)
    return run.Stack(stack.upstream, server, stack.upstream_url, base,
                     time.perf_counter() - started, data_dir)


# --- the bench --------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = quotas.scenarios(args.quick)
        self.rounds = args.rounds or (2 if args.quick else 16)
        self.what = args.what
        self.long = args.reply or ("500x3" if args.quick else "2000x3")  # tokens x gap ms
        self.followers = args.followers
        self.parts = (args.only,) if args.only else ("ids", "followers")
        self.relay: dict[tuple[str, str], list[dict[str, float]]] = {}  # (side, scenario)
        self.follow: dict[int, list[dict[str, float]]] = {}  # by followers, in round order
        self.notes: dict[str, Any] = {"load_before": os.getloadavg()}

    async def run(self) -> None:
        started = time.perf_counter()
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with contextlib.AsyncExitStack() as cleanup, aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as http:
            self.notes["revs"] = {"HEAD": (ROOT, revision(ROOT))}
            head = await run.start_stack(http, out)
            stacks = {"HEAD": head}
            for proc in (head.upstream, head.server):
                cleanup.callback(proc.wait, 15)
                cleanup.callback(proc.terminate)
            cleanup.callback(shutil.rmtree, head.data_dir, True)
            if "ids" in self.parts:
                base_root = cleanup.enter_context(base_checkout(self.args.base_root))
                self.notes["revs"]["base"] = (base_root, revision(base_root))
                base_env = dict(pair.split("=", 1) for pair in self.args.base_env)
                stacks["base"] = await start_server(http, base_root, head,
                                                    out / "followers-base.log", base_env)
                if base_env:
                    self.notes["revs"]["base"] = (base_root, revision(base_root) + " with "
                                                  + ", ".join(self.args.base_env))
                cleanup.callback(stacks["base"].server.wait, 15)
                cleanup.callback(stacks["base"].server.terminate)
                cleanup.callback(shutil.rmtree, stacks["base"].data_dir, True)
            self.http = http
            self.setups = {side: await self.prepare(side, stack) for side, stack in stacks.items()}
            self.notes["setup_s"] = time.perf_counter() - started
            if "ids" in self.parts:
                for i in range(self.rounds):
                    await self.relay_round(i)
            self.notes["relay_s"] = time.perf_counter() - started - self.notes["setup_s"]
            if "followers" in self.parts:
                await self.prepare_follow()
                for i in range(self.rounds):
                    await self.follow_round(i)
        if "followers" in self.parts:
            self.reference = reference_costs(self.sample_event, 200_000)
        self.notes["wall_s"] = time.perf_counter() - started
        self.notes["load_after"] = os.getloadavg()

    async def prepare(self, side: str, stack: run.Stack) -> quotas.Setup:
        """quotas.py's users, priced models and sessions, warmed; and which events carry ids."""
        setup = quotas.Setup(self.http, stack)
        await setup.prepare(self.plan)
        await asyncio.gather(*(quotas.users_at_once(self.http, setup.targets(s, "off", 2))
                               for s in self.plan))
        session = setup.sessions[(self.plan[0].name, "on")][0]  # never measured
        body, _ = await followed_round(self.http, stack.base, {
            "Authorization": f"Bearer {setup.users[0]}"}, session, 0)
        ids, events = parse(body)
        self.notes[f"ids_{side}"] = (len(ids), len(events))
        if side == "HEAD" and len(ids) != len(events):
            raise RuntimeError(f"HEAD: {len(ids)} ids for {len(events)} events")
        print(f"{side}: set up and warmed; {len(ids)} ids on {len(events)} events"
              + (" (an A/A run: the base has ids too)" if side == "base" and ids else ""),
              flush=True)
        return setup

    async def relay_round(self, i: int) -> None:
        order = SIDES if i % 2 == 0 else SIDES[::-1]
        for s in self.plan:
            for side in order:
                setup = self.setups[side]
                targets = setup.targets(s, "off", s.rounds)
                await asyncio.sleep(0.3)
                with Sampler(setup.stack.server.pid) as sampler:
                    start = time.perf_counter()
                    results = await quotas.users_at_once(self.http, targets)
                    elapsed = time.perf_counter() - start
                row = run.Measure(s.name, side, results, elapsed, sampler.cpu,
                                  sampler.peak).row()
                row.update(cpu_s=sampler.cpu, ticks_s=sampler.ticks)
                self.relay.setdefault((side, s.name), []).append(row)
                print(f"round {i + 1} ids {s.name:5} {side:4} failed={row['failed']:.0f} "
                      f"cpu={row['cpu_us_event']:.1f}us/ev {row['cpu_ms_stream']:.2f}ms/round "
                      f"ttft_p50={row['ttft_p50']:.1f}ms", flush=True)

    async def prepare_follow(self) -> None:
        setup = self.setups["HEAD"]
        self.headers = {"Authorization": f"Bearer {setup.token}"}
        self.model = (await setup.call("POST", "/api/models/system", setup.token, json={
            "name": f"bench-{self.long}", "apiUrl": setup.stack.upstream_url,
            "apiKey": "sk-bench", **quotas.PRICES}))["id"]
        # The 20 followers, all at once: the cap (MAX_FOLLOWERS) should refuse the rest.
        asked = max(20, self.followers + 1)
        original, copies = await followed_round(self.http, setup.stack.base, self.headers,
                                                await self.session(), asked)
        statuses = [status for status, _ in copies]
        self.notes["cap"] = (asked, {s: statuses.count(s) for s in sorted(set(statuses))})
        self.check(original, [(s, b) for s, b in copies if s == 200])
        ids, _ = parse(original)
        event = b"id: " + ids[-1] + b"\n" + encode_text("content", "tok1234 ")
        self.sample_event = b"%x\r\n%s\r\n" % (len(event), event)  # as a chunk on the wire
        print(f"HEAD: {asked} followers at once: {self.notes['cap'][1]}", flush=True)

    async def session(self) -> int:
        setup = self.setups["HEAD"]
        return (await setup.call("POST", "/api/sessions", setup.token, json={
            "modelConfigId": self.model, "title": "followed"}))["id"]

    def check(self, original: bytes, copies: list[tuple[int, bytes]]) -> tuple[int, int, int]:
        """(content events of the original, of all copies, copies whose text or end differ)."""
        _, events = parse(original)
        text, end = joined(events), events[-1]["type"]
        if end != "complete" or not text:
            raise RuntimeError(f"the original stream ended with {end}")
        counts, wrong = [sum(e.get("type") == "content" for e in events)], 0
        for _, body in copies:
            _, got = parse(body)
            counts.append(sum(e.get("type") == "content" for e in got))
            wrong += joined(got) != text or not got or got[-1]["type"] != end
        return counts[0], sum(counts), wrong

    async def follow_round(self, i: int) -> None:
        order = (0, self.followers) if i % 2 == 0 else (self.followers, 0)
        pid = self.setups["HEAD"].stack.server.pid
        for n in order:
            session = await self.session()
            await asyncio.sleep(0.3)
            with Sampler(pid) as sampler:
                start = time.perf_counter()
                original, copies = await followed_round(
                    self.http, self.setups["HEAD"].stack.base, self.headers, session, n)
                elapsed = time.perf_counter() - start
            served = [(s, b) for s, b in copies if s == 200]
            generated, written, wrong = self.check(original, served)
            row = {"followers": len(served), "wrong": wrong, "generated": generated,
                   "copies": written, "cpu_s": sampler.cpu, "ticks_s": sampler.ticks,
                   "wall_s": elapsed, "cpu_ms_round": sampler.cpu * 1e3,
                   "cpu_us_event": sampler.cpu * 1e6 / generated,
                   "cpu_us_copy": sampler.cpu * 1e6 / written,
                   "peak_rss_mb": sampler.peak / 2**20}
            self.follow.setdefault(n, []).append(row)
            print(f"round {i + 1} follow {n:2} served={len(served)} wrong={wrong} "
                  f"cpu={row['cpu_ms_round']:.1f}ms {row['cpu_us_event']:.1f}us/generated "
                  f"{row['cpu_us_copy']:.2f}us/copy peak={row['peak_rss_mb']:.1f}MB", flush=True)

    # --- the report ---

    def report(self, command: str) -> str:
        tick = 1000 / os.sysconf("SC_CLK_TCK")
        rows = [r for rs in [*self.relay.values(), *self.follow.values()] for r in rs]
        ticks = sum(r["ticks_s"] for r in rows) / sum(r["cpu_s"] for r in rows)
        revs = self.notes["revs"]
        ids = {side: self.notes[f"ids_{side}"] for side in revs}
        sides = [f"{side}: `{revs[side][0]}` at {revs[side][1]} ({ids[side][0]} `id:` lines on "
                 f"{ids[side][1]} events of a warm-up stream)" for side in revs]
        lines = [
            f"# aichat relay: {self.what.lower()}"
            + (" and followers" if self.follow else ""), "",
            f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- command: `{command}` — wall time {self.notes['wall_s']:.0f} s (set-up and "
            f"warm-up {self.notes['setup_s']:.0f} s"
            + (f", part 1 {self.notes['relay_s']:.0f} s)" if self.relay else ")"),
            f"- machine: {os.cpu_count()} cores ({quotas.cpu_model()}), {platform.machine()}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}; the "
            "load generator, the fake upstream and the aichat servers share these cores",
            "- load average (1 min) at start / end: " + " / ".join(
                f"{self.notes[k][0]:.2f}" for k in ("load_before", "load_after"))
            + " (another job may be using the box: the two sides of each comparison run back "
            "to back in every round, alternating which goes first)",
            "- " + "; ".join(sides) + ("; both servers run at once, from the same "
                                       "interpreter, each on its own SQLite data folder, "
                                       if len(sides) > 1 else "; ")
            + "with bench/run.py's settings (precise tokenizer, access log on)",
            f"- rounds: {self.rounds}; medians shown",
            "- CPU: the aichat process's threads, from /proc/<pid>/task/*/schedstat (ns), "
            "during the load; the 10 ms ticks of /proc/<pid>/stat (bench/procstat.py) over all "
            f"loads add up to {ticks:.3f}× that ({tick:.0f} ms ticks"
            + (f": too coarse for a 0-follower round's {self.smallest_ticks():.0f} ticks)"
               if self.follow else ")"), "",
        ]
        lines += self.relay_report() if self.relay else []
        lines += self.follow_report() if self.follow else []
        return "\n".join(lines) + "\n"

    def smallest_ticks(self) -> float:
        tick = 1 / os.sysconf("SC_CLK_TCK")
        return min(r["cpu_s"] for rs in self.follow.values() for r in rs) / tick

    def relay_report(self) -> list[str]:
        lines = [
            f"## 1. {self.what} on the relay path: HEAD vs base", "",
            "Load: " + "; ".join(
                f"**{s.name}** = {s.users} users at once, each {s.rounds} rounds one after "
                f"another in its own session, {s.shape.split('x')[0]}-token replies "
                f"{s.shape.split('x')[1]} ms apart" for s in self.plan)
            + " (bench/quotas.py's loads, limits off, every model priced). CPU per content "
            "event relayed and per chat round.", "",
            "| scenario | side | chat rounds per load | failed | content events/s | TTFT p50 ms "
            "| TTFT p99 ms | aichat CPU µs/event | aichat CPU ms/round | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|"]
        for s in self.plan:
            for side in SIDES[::-1]:
                m = run.median_rows(self.relay[(side, s.name)])
                lines.append(
                    f"| {s.name} | {side} | {m['streams']:.0f} | {m['failed']:.0f} "
                    f"| {m['events_per_s']:.0f} | {m['ttft_p50']:.1f} | {m['ttft_p99']:.1f} "
                    f"| {m['cpu_us_event']:.1f} | {m['cpu_ms_stream']:.3f} "
                    f"| {m['peak_rss_mb']:.1f} |")
        lines += ["", "HEAD ÷ base:", "",
                  "| scenario | base µs/event | HEAD µs/event | HEAD ÷ base (medians) "
                  "| HEAD ÷ base (all rounds pooled) | per-round HEAD ÷ base: median [min – max] "
                  "| rounds HEAD > base | extra CPU per chat round |",
                  "|---|---|---|---|---|---|---|---|"]
        noise = []
        for s in self.plan:
            base, head = self.relay[("base", s.name)], self.relay[("HEAD", s.name)]
            a, b = run.median_rows(base), run.median_rows(head)
            cells, note = compare(base, head, "cpu_us_event", "HEAD", "base")
            noise += [f"- {s.name}: {note}"] if note else []
            extra = (b["cpu_ms_stream"] - a["cpu_ms_stream"]) * 1000
            lines.append(f"| {s.name} | {a['cpu_us_event']:.1f} | {b['cpu_us_event']:.1f} | "
                         + " | ".join(cells) + f" | {extra:+.0f} µs |")
        return lines + ["", *(["Noise:", "", *noise] if noise else [
            "Noise: every difference is wider than the spread of its per-round ratios."]), ""]

    def follow_report(self) -> list[str]:
        f = self.followers
        asked, seen = self.notes["cap"]
        tokens, gap = self.long.split("x")
        zero, many = self.follow[0], self.follow[f]
        lines = [
            f"## 2. Followers: one round, 0 vs {f} followers (HEAD)", "",
            f"Load: one round at a time, a {tokens}-token reply {gap} ms apart in a fresh "
            f"session; with {f} followers (GET /api/chat/sessions/:id/stream, started together "
            "once the original client had its first content event: a snapshot, then the live "
            "events) or none. Generated = content events of the round (the original client's); "
            "copies = content events written to all its clients (a follower's snapshot counts "
            "as one). CPU is the whole round's, the followers' requests included.", "",
            f"The issue's 20 followers at once (warm-up round, {asked} asked): "
            + ", ".join(f"{n} × {status}" for status, n in seen.items())
            + f" (the cap is {MAX_FOLLOWERS} per round, docs/api.md §5.9).", "",
            "| followers | loads | followers served | copies with a different text or end "
            "| generated events | copies written | wall s | aichat CPU ms/round "
            "| aichat CPU µs per generated event | aichat CPU µs per copy | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
        for n, rows in ((0, zero), (f, many)):
            m = run.median_rows(rows)
            lines.append(
                f"| {n} | {len(rows)} | {m['followers']:.0f} | {sum(r['wrong'] for r in rows)} "
                f"| {m['generated']:.0f} | {m['copies']:.0f} | {m['wall_s']:.2f} "
                f"| {m['cpu_ms_round']:.1f} | {m['cpu_us_event']:.1f} | {m['cpu_us_copy']:.2f} "
                f"| {m['peak_rss_mb']:.1f} |")
        lines += ["", f"{f} ÷ 0:", "",
                  "| per | 0 followers | " + f"{f} followers | {f} ÷ 0 (medians) "
                  f"| {f} ÷ 0 (all rounds pooled) | per-round {f} ÷ 0: median [min – max] "
                  f"| rounds {f} > 0 |", "|---|---|---|---|---|---|---|"]
        noise = []
        for key, label in (("cpu_us_event", "generated event"), ("cpu_us_copy", "copy written")):
            cells, note = compare(zero, many, key, str(f), "0", "copies" if "copy" in key
                                  else "generated")
            noise += [f"- per {label}: {note}"] if note else []
            a, b = run.median_rows(zero)[key], run.median_rows(many)[key]
            lines.append(f"| {label} | {a:.2f} µs | {b:.2f} µs | " + " | ".join(cells) + " |")
        # What one more copy costs: the extra CPU of a round ÷ the extra copies, pair by pair.
        per_copy = [(y["cpu_s"] - x["cpu_s"]) * 1e6 / (y["copies"] - x["copies"])
                    for x, y in zip(zero, many, strict=True)]
        per_follower = [(y["cpu_s"] - x["cpu_s"]) * 1e3 / f for x, y in zip(zero, many,
                                                                            strict=True)]
        ref = self.reference
        extra = statistics.median(per_copy)
        lines += [
            "", "Per follower:", "",
            f"- extra CPU per extra copy written (round with {f} − round with 0, ÷ the extra "
            f"copies, pair by pair): median **{extra:.2f} µs** [{min(per_copy):.2f} – "
            f"{max(per_copy):.2f}]",
            f"- extra CPU per follower per round: median {statistics.median(per_follower):.1f} "
            f"ms [{min(per_follower):.1f} – {max(per_follower):.1f}] ({tokens} events each)",
            f"- reference, measured in the load generator's process on this box: one "
            f"`sendall()` of a {ref['event_bytes']}-byte event (as a chunk on the wire) on a "
            f"loopback TCP connection costs {ref['send_us']:.2f} µs of CPU; encoding one text "
            f"event (`encode_text`, orjson) {ref['encode_us']:.2f} µs. One extra copy thus "
            f"costs {extra / ref['send_us']:.1f} bare send()s, or as much as "
            f"{extra / ref['encode_us']:.0f} encodings",
            "", *(["Noise:", "", *noise] if noise else [
                "Noise: every difference is wider than the spread of its per-round ratios."])]
        return lines


def compare(a_rows: list[dict[str, float]], b_rows: list[dict[str, float]], key: str,
            b_name: str, a_name: str, count: str = "events") -> tuple[list[str], str]:
    """Cells (ratio of medians, pooled, per-round median [min – max], rounds b > a) and a noise
    note (empty when the difference is wider than the per-round spread)."""
    a, b = run.median_rows(a_rows)[key], run.median_rows(b_rows)[key]
    ratio = b / a
    pooled = (sum(r["cpu_s"] for r in b_rows) / sum(r[count] for r in b_rows)) / (
        sum(r["cpu_s"] for r in a_rows) / sum(r[count] for r in a_rows))
    each = [y[key] / x[key] for x, y in zip(a_rows, b_rows, strict=True)]
    up, down = sum(r > 1 for r in each), sum(r < 1 for r in each)
    spread, p = max(each) - min(each), quotas.sign_test(up, down)
    note = ""
    if spread > abs(ratio - 1):
        note = (f"the per-round ratios spread over {spread:.3f} (max − min), more than {b_name} "
                f"differs from {a_name} ({ratio - 1:+.3f}); {b_name} cost more in {up} of "
                f"{up + down} rounds (sign test p = {p:.2g}): "
                + ("the direction is clear, its size is not" if p < 0.05 else
                   "the difference is within this run's noise"))
    return [f"{ratio:.3f}×", f"{pooled:.3f}×",
            f"{statistics.median(each):.3f}× [{min(each):.3f} – {max(each):.3f}]",
            f"{up}/{len(each)}"], note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of each part (default 16; 2 with --quick)")
    parser.add_argument("--base-root", default=None, metavar="DIR",
                        help=f"the baseline checkout (default: a temporary worktree of "
                             f"{BASE_REV}, removed after)")
    parser.add_argument("--followers", type=int, default=MAX_FOLLOWERS,
                        help=f"followers per followed round (default {MAX_FOLLOWERS}, the cap)")
    parser.add_argument("--only", choices=("ids", "followers"), default=None,
                        help="run one part only")
    parser.add_argument("--reply", default=None, metavar="TOKENSxGAP_MS",
                        help="part 2's reply (default 2000x3; 500x3 with --quick)")
    parser.add_argument("--what", default="Event ids",
                        help="what HEAD adds over the base, for the report's headings")
    parser.add_argument("--base-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the base server only (with "
                             "--base-root on this checkout: one setting on vs off)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "FOLLOWERS.md"))
    args = parser.parse_args()
    run.run_and_report(Bench(args), "bench/followers.py", args.out)


if __name__ == "__main__":
    main()
