"""Run every benchmark scenario, direct and through aichat, and write bench/RESULTS.md.

    python bench/run.py            # the full run (about ten minutes on a 2-core box)
    python bench/run.py --quick    # a smoke run: one round, smaller loads

Processes: the fake upstream (`tests/fake_upstream.py`), the aichat server (`server.py`, on a
temporary data folder) and this script, which is the load generator and reads both servers'
CPU time and RSS from /proc. Each scenario runs `direct` (this script talks to the fake
upstream itself: the floor of a zero-cost proxy) and `aichat` (the same token stream through
POST /api/chat/stream), alternating which goes first over the rounds; tables show medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402
import procstat  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "benchpass1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Stack:
    upstream: subprocess.Popen
    server: subprocess.Popen
    upstream_url: str
    base: str
    cold_start_s: float
    data_dir: str


async def wait_ok(http: aiohttp.ClientSession, url: str, limit_s: float = 30) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        try:
            async with http.get(url) as r:
                if r.status == 200:
                    return time.perf_counter() - start
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.005)
    raise RuntimeError(f"{url} did not come up")


async def start_stack(http: aiohttp.ClientSession, log_dir: Path) -> Stack:
    up_port, port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream", "--port", str(up_port)], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=open(log_dir / "upstream.log", "w"))
    await wait_ok(http, f"http://127.0.0.1:{up_port}/health")
    data_dir = tempfile.mkdtemp(prefix="aichat-bench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORT", "DATABASE_URL"))}
    env.update({"PORT": str(port), "HOST": "127.0.0.1", "APP_MODE": "multi",
                "DATABASE_URL": os.path.join(data_dir, "app.db"), "BCRYPT_ROUNDS": "4"})
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "server.py", "--env-file", "/nonexistent"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(log_dir / "server.log", "w"))
    base = f"http://127.0.0.1:{port}"
    await wait_ok(http, f"{base}/api/settings/health")
    cold = time.perf_counter() - started
    return Stack(upstream, server, f"http://127.0.0.1:{up_port}/v1/chat/completions", base,
                 cold, data_dir)


class Setup:
    """Accounts, models and session pools on the aichat side."""

    def __init__(self, http: aiohttp.ClientSession, stack: Stack) -> None:
        self.http, self.stack = http, stack
        self.pools: dict[str, list[int]] = {}

    async def call(self, method: str, path: str, token: str | None = None,
                   json: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.stack.base + path, json=json,
                                     headers=headers) as r:
            body = await r.json()
            assert r.status == 200, (path, r.status, body)
            return body["data"]

    async def user(self, name: str) -> str:
        data = await self.call("POST", "/api/auth/register",
                               json={"username": name, "password": PASSWORD})
        return data["token"]

    async def prepare(self, shapes: dict[str, int]) -> None:
        self.token = await self.user("bench")
        await self.call("PUT", "/api/settings/system", self.token,
                        json={"registration_enabled": True})
        await self.allow_streams(max(shapes.values()) + 10)
        for shape, count in shapes.items():
            model = await self.call("POST", "/api/models/system", self.token, json={
                "name": f"bench-{shape}", "apiUrl": self.stack.upstream_url, "apiKey": "sk-bench"})
            self.pools[shape] = []
            for i in range(count):
                session = await self.call("POST", "/api/sessions", self.token, json={
                    "modelConfigId": model["id"], "title": f"{shape} {i}"})
                self.pools[shape].append(session["id"])
        self.api_key = (await self.call("POST", "/api/keys", self.token,
                                        json={"name": "bench"}))["key"]
        # crud50's user: 200 sessions on a system model (a personal one on 127.0.0.1 would be
        # refused: multi mode defaults to the public_only URL policy).
        self.crud_token = await self.user("crud")
        for i in range(200):
            await self.call("POST", "/api/sessions", self.crud_token,
                            json={"modelConfigId": model["id"], "title": f"chat {i}"})

    async def allow_streams(self, count: int) -> None:
        """One bench user runs every stream: lift the per-user cap (default 3) for it."""
        await self.call("PUT", "/api/settings/system", self.token,
                        json={"max_concurrent_streams": count})

    def aichat_targets(self, shape: str, n: int) -> list[loadgen.Target]:
        pool = self.pools[shape]
        headers = {"Authorization": f"Bearer {self.token}"}
        return [loadgen.Target(f"{self.stack.base}/api/chat/stream",
                               {"sessionId": pool[i % len(pool)], "content": f"question {i}"},
                               headers, b'"type":"content"', b'"type":"complete"')
                for i in range(n)]

    def v1_targets(self, shape: str, n: int) -> list[loadgen.Target]:
        """The same stream through the OpenAI-compatible surface, on a personal API key."""
        body = {"model": f"bench-{shape}", "stream": True,
                "messages": [{"role": "user", "content": "q"}]}
        headers = {"Authorization": f"Bearer {self.api_key}"}
        return [loadgen.Target(f"{self.stack.base}/v1/chat/completions", body, headers,
                               b'"content":', b"[DONE]")] * n

    def direct_targets(self, shape: str, n: int) -> list[loadgen.Target]:
        body = {"model": f"bench-{shape}", "stream": True, "temperature": 0.7,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}
        return [loadgen.Target(self.stack.upstream_url, body,
                               {"Authorization": "Bearer sk-bench"},
                               b'"delta": {"content"', b"[DONE]")] * n


@dataclass
class Measure:
    scenario: str
    mode: str
    results: list[loadgen.StreamResult]
    elapsed: float
    cpu_s: float  # the measured server's CPU (aichat, or the fake upstream when direct)
    peak_rss: int

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.ok)

    @property
    def content_events(self) -> int:
        return sum(r.content_events for r in self.results)

    def row(self) -> dict[str, float]:
        ok = [r for r in self.results if r.ok]
        ttft = [r.t_first_content * 1000 for r in ok if r.t_first_content is not None]
        totals = [r.total for r in ok if r.total is not None]
        gaps = [g * 1000 for r in ok for g in r.gaps[1:]]
        events = max(1, self.content_events)
        return {
            "streams": len(self.results), "failed": self.failed,
            "headers_p50": pct([r.t_headers * 1000 for r in ok if r.t_headers], 0.5),
            "first_event_p50": pct([r.t_first_event * 1000 for r in ok if r.t_first_event], 0.5),
            "ttft_p50": pct(ttft, 0.5), "ttft_p99": pct(ttft, 0.99),
            "total_p50": pct(totals, 0.5), "total_p99": pct(totals, 0.99),
            "gap_p99": pct(gaps, 0.99), "events": self.content_events,
            "events_per_s": self.content_events / self.elapsed if self.elapsed else 0,
            "cpu_us_event": self.cpu_s * 1e6 / events,
            "cpu_ms_stream": self.cpu_s * 1e3 / max(1, len(self.results)),
            "peak_rss_mb": self.peak_rss / 2**20,
        }


def median_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


async def measure(name: str, mode: str, pid: int, load) -> Measure:
    with procstat.Sampler(pid) as sampler:
        start = time.perf_counter()
        results = await load
        elapsed = time.perf_counter() - start
    return Measure(name, mode, results, elapsed, sampler.cpu, sampler.peak)


async def settle(pid: int, seconds: float = 1.0) -> int:
    await asyncio.sleep(seconds)
    return procstat.rss_bytes(pid)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.streams: dict[str, list[Measure]] = {}
        self.crud: dict[str, list[dict[str, float]]] = {}
        self.memory: dict[str, float] = {}
        self.leak: list[float] = []

    def scenarios(self) -> list[tuple[str, str, str, int, int]]:
        """(name, shape, kind, streams, waves)."""
        if self.quick:
            return [("relay1", "200x0", "seq", 1, 1), ("hold100", "200x20", "wave", 20, 1),
                    ("hold500", "100x50", "wave", 50, 1)]
        return [("relay1", "200x0", "seq", 1, 1), ("hold100", "200x20", "wave", 100, 2),
                ("hold500", "100x50", "wave", 500, 1)]

    async def run_stream(self, http, setup: Setup, stack: Stack, name: str, shape: str,
                         kind: str, n: int, waves: int, mode: str) -> Measure:
        targets = {"direct": setup.direct_targets, "aichat": setup.aichat_targets,
                   "v1": setup.v1_targets}[mode](shape, n)
        pid = stack.upstream.pid if mode == "direct" else stack.server.pid

        async def load() -> list[loadgen.StreamResult]:
            if kind == "seq":
                return await loadgen.sequential(http, targets, 3 if self.quick else 10, 30)
            results = []
            for _ in range(waves):
                results += await loadgen.wave(http, targets, 60)
            return results
        return await measure(name, mode, pid, load())

    async def run_crud(self, http, setup: Setup, stack: Stack, mode: str) -> dict[str, float]:
        total = 2000 if self.quick else 20000
        if mode == "direct":
            url, headers, pid = stack.upstream_url.replace("/v1/chat/completions", "/health"), \
                {}, stack.upstream.pid
        else:
            url, headers, pid = f"{stack.base}/api/sessions", \
                {"Authorization": f"Bearer {setup.crud_token}"}, stack.server.pid
        with procstat.Sampler(pid) as sampler:
            stats = await loadgen.requests(http, url, headers, total, 50)
        lat = [x * 1000 for x in stats.latencies]
        return {"requests": total, "errors": stats.errors, "rps": total / stats.elapsed,
                "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
                "cpu_us_req": sampler.cpu * 1e6 / total, "peak_rss_mb": sampler.peak / 2**20}

    async def run(self) -> None:
        log_dir = ROOT / "bench" / "out"
        log_dir.mkdir(parents=True, exist_ok=True)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            stack = await start_stack(http, log_dir)
            try:
                await self._run(http, stack)
            finally:
                for proc in (stack.server, stack.upstream):
                    proc.terminate()
                    proc.wait(15)

    async def _run(self, http, stack: Stack) -> None:
        pid = stack.server.pid
        self.memory["cold_start_s"] = stack.cold_start_s
        self.memory["rss_start_mb"] = await settle(pid, 0.5) / 2**20
        setup = Setup(http, stack)
        scenarios = self.scenarios()
        await setup.prepare({shape: n for _, shape, _, n, _ in scenarios})
        warm = setup.aichat_targets("200x0", 5)
        for target in warm:
            await loadgen.stream(http, target, 30)
        self.memory["rss_warm_mb"] = await settle(pid) / 2**20
        for target in setup.aichat_targets("200x0", 95):  # to 100 streams in all
            await loadgen.stream(http, target, 30)
        self.memory["rss_100_mb"] = await settle(pid) / 2**20
        rounds = 1 if self.quick else self.args.rounds
        for i in range(rounds):
            order = ("direct", "aichat") if i % 2 == 0 else ("aichat", "direct")
            for name, shape, kind, n, waves in scenarios:
                # /v1 is measured beside /api/chat/stream on hold100 only (same code path).
                for mode in order + (("v1",) if name == "hold100" else ()):
                    m = await self.run_stream(http, setup, stack, name, shape, kind, n, waves,
                                              mode)
                    self.streams.setdefault(f"{name}/{mode}", []).append(m)
                    print(f"round {i + 1} {name:8} {mode:6} failed={m.failed} "
                          f"events={m.content_events} cpu={m.row()['cpu_us_event']:.1f}us/ev "
                          f"ttft_p99={m.row()['ttft_p99']:.1f}ms "
                          f"total_p50={m.row()['total_p50']:.2f}s "
                          f"peak={m.peak_rss / 2**20:.1f}MB", flush=True)
                    await asyncio.sleep(0.5)
            for mode in order:
                row = await self.run_crud(http, setup, stack, mode)
                self.crud.setdefault(mode, []).append(row)
                print(f"round {i + 1} crud50   {mode:6} rps={row['rps']:.0f} "
                      f"p99={row['p99']:.1f}ms errors={row['errors']}", flush=True)
        self.memory["rss_after_loads_mb"] = await settle(pid, 2) / 2**20
        leak_rounds = 3 if self.quick else 10
        n = 20 if self.quick else 100
        for i in range(leak_rounds):
            for _ in range(2):
                await loadgen.wave(http, setup.aichat_targets("200x20", n), 60)
            self.leak.append(await settle(pid, 1.5) / 2**20)
            print(f"leak check round {i + 1}: idle rss {self.leak[-1]:.1f} MB", flush=True)

    def report(self, command: str) -> str:
        cores = os.cpu_count()
        lines = [
            "# aichat benchmark results", "",
            f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {cores} cores, {platform.machine()}, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}",
            f"- command: `{command}`",
            f"- rounds: {1 if self.quick else self.args.rounds} (direct/aichat order alternating); "
            "medians shown",
            "- direct = the load generator talks to the fake upstream itself; its CPU column "
            "is the fake upstream's (the floor). aichat = the same stream through "
            "POST /api/chat/stream (auth, DB writes, usage); its CPU column is the aichat "
            "server's.", "",
            "## Streams", "",
            "| scenario | mode | streams | failed | TTFT p50 ms | TTFT p99 ms | total p50 s "
            "| total p99 s | gap p99 ms | content events/s | server CPU µs/event "
            "| server CPU ms/stream | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        floors = {}
        for key, measures in self.streams.items():
            name, mode = key.split("/")
            row = median_rows([m.row() for m in measures])
            if mode == "direct":
                floors[name] = row["cpu_us_event"]
            lines.append(
                f"| {name} | {mode} | {row['streams']:.0f} | {row['failed']:.0f} "
                f"| {row['ttft_p50']:.1f} | {row['ttft_p99']:.1f} | {row['total_p50']:.3f} "
                f"| {row['total_p99']:.3f} | {row['gap_p99']:.1f} | {row['events_per_s']:.0f} "
                f"| {row['cpu_us_event']:.1f} | {row['cpu_ms_stream']:.2f} "
                f"| {row['peak_rss_mb']:.1f} |")
        lines += ["", "Relay cost through aichat as a multiple of the direct floor (same run):", ""]
        for key, measures in self.streams.items():
            name, mode = key.split("/")
            if mode in ("aichat", "v1") and floors.get(name):
                cost = median_rows([m.row() for m in measures])["cpu_us_event"]
                via = "" if mode == "aichat" else " via /v1/chat/completions"
                lines.append(f"- {name}{via}: {cost:.1f} µs/event = {cost / floors[name]:.2f}× "
                             f"the direct floor ({floors[name]:.1f} µs/event)")
        lines += ["", "## crud50: GET /api/sessions (user with 200 sessions), 50 concurrent", "",
                  "| mode | requests | errors | req/s | p50 ms | p99 ms | server CPU µs/req "
                  "| peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
        for mode, rows in self.crud.items():
            row = median_rows(rows)
            label = "direct (fake upstream GET /health)" if mode == "direct" else "aichat"
            lines.append(f"| {label} | {row['requests']:.0f} | {row['errors']:.0f} "
                         f"| {row['rps']:.0f} | {row['p50']:.2f} | {row['p99']:.2f} "
                         f"| {row['cpu_us_req']:.1f} | {row['peak_rss_mb']:.1f} |")
        m = self.memory
        lines += ["", "## Memory and start", "",
                  f"- cold start (process start → first 200 from /api/settings/health): "
                  f"{m['cold_start_s'] * 1000:.0f} ms",
                  f"- idle RSS after start: {m['rss_start_mb']:.1f} MB",
                  f"- idle RSS after 5 warm-up streams (tokenizer loaded): "
                  f"{m['rss_warm_mb']:.1f} MB",
                  f"- idle RSS after 100 streams: {m['rss_100_mb']:.1f} MB",
                  f"- idle RSS after all loads: {m['rss_after_loads_mb']:.1f} MB"]
        if len(self.leak) >= 2:
            base = self.leak[1]
            growth = (self.leak[-1] - base) / base * 100
            lines.append(f"- leak check: idle RSS after each of {len(self.leak)} hold100 rounds: "
                         + ", ".join(f"{x:.1f}" for x in self.leak)
                         + f" MB; round 2 → {len(self.leak)}: {growth:+.1f} %")
        return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()
    run_and_report(Bench(args), "bench/run.py", args.out)


def run_and_report(bench: Any, script: str, out: str) -> None:
    """Run a bench on the fastest loop at hand, then write and print its report."""
    try:  # the load generator is Python too: uvloop keeps its own cost out of the figures
        import uvloop
        uvloop.run(bench.run())
    except ImportError:
        asyncio.run(bench.run())
    command = f"python {script} " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = bench.report(command.strip())
    Path(out).write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
