"""aichat on SQLite vs on PostgreSQL vs two instances sharing one PostgreSQL database.

    python bench/cluster.py                 # full run: 3 rounds, ~6-8 minutes on a 2-core box
    python bench/cluster.py --quick         # smoke run: 1 round, smaller loads
    python bench/cluster.py --rounds 2 --out bench/CLUSTER.md

One run starts, on this machine: the fake upstream (`tests/fake_upstream.py`), a throwaway
PostgreSQL cluster on 127.0.0.1 (`tests/pg_cluster.py`, but with fsync, synchronous_commit and
full_page_writes at their shipped defaults, i.e. on), and four aichat servers (`server.py`,
default settings as in bench/run.py):

- `sqlite`: one instance on an SQLite file in a temp folder (WAL, synchronous=NORMAL as
  shipped);
- `postgres`: one instance on its own PostgreSQL database;
- `postgres x2`: two instances on one other PostgreSQL database; the load generator sends the
  streams round-robin to the two ports, as a load balancer would.

Each scenario also runs `direct` (the load generator talks to the fake upstream itself: the
floor a zero-cost proxy would reach; its CPU column is the fake upstream's), like bench/run.py.
The modes' order alternates over the rounds and the tables show medians.

CPU per event: aichat = utime+stime of the aichat process(es) during the load ÷ content events
relayed. PostgreSQL = utime+stime of the cluster's processes (children of the postmaster, read
from /proc every 100 ms so pool connections that appear during the load are counted), limited
to the backends connected to the measured database plus the ones of no database (checkpointer,
WAL writer, background writer, ...) and the postmaster itself; the other database's idle
instances (their janitors) are left out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402
import procstat  # noqa: E402
import run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.pg_cluster import Cluster, find_bindir  # noqa: E402

OUT = ROOT / "bench" / "out"
JWT_SECRET = "bench-cluster-jwt-secret-" + "j" * 32
ENCRYPTION_KEY = "bench-cluster-encryption-key-" + "k" * 32
DURABILITY = ("fsync", "synchronous_commit", "full_page_writes")
MODES = ("direct", "sqlite", "postgres", "postgres x2")
LABELS = {"direct": "direct (floor)", "sqlite": "SQLite", "postgres": "PostgreSQL",
          "postgres x2": "2 instances on PostgreSQL"}


class DurableCluster(Cluster):
    """tests/pg_cluster.py's cluster without its durability-off flags: PostgreSQL as shipped.

    Those flags are `-c` options on the server's command line, which win over ALTER SYSTEM, so
    they are taken out here rather than overridden afterwards (`start` checks with SHOW)."""

    def _server_options(self) -> str:
        args = shlex.split(super()._server_options())
        kept: list[str] = []
        i = 0
        while i < len(args):
            if args[i] == "-c" and args[i + 1].split("=")[0] in DURABILITY:
                i += 2
                continue
            kept.append(args[i])
            i += 1
        return shlex.join(kept)

    @property
    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])


# --- processes --------------------------------------------------------------------------------


class Server:
    """One aichat server (server.py) with its stderr in bench/out/cluster-<name>.log."""

    def __init__(self, name: str, database_url: str, upstream_url: str) -> None:
        self.name = name
        self.port = run.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.upstream_url = upstream_url  # run.Setup reads stack.base and stack.upstream_url
        self.cwd = tempfile.mkdtemp(prefix=f"aichat-cluster-{name.replace(' ', '')}-")
        self.log = OUT / f"cluster-{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PORT", "DATABASE_URL"))}
        # bench/run.py's environment, plus the two secrets every instance on one PostgreSQL
        # database must share (set for SQLite too, so both start the same way).
        env.update({"PORT": str(self.port), "HOST": "127.0.0.1", "APP_MODE": "multi",
                    "DATABASE_URL": database_url, "BCRYPT_ROUNDS": "4",
                    "JWT_SECRET": JWT_SECRET, "ENCRYPTION_KEY": ENCRYPTION_KEY})
        self.started = time.perf_counter()
        # cwd: a temp folder (with PostgreSQL, aichat's data folder is ./data).
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--env-file", "/nonexistent"],
            cwd=self.cwd, env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        self.cold_start_s = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    async def ready(self, http: aiohttp.ClientSession) -> None:
        try:
            await run.wait_ok(http, f"{self.base}/api/settings/health", 60)
        except RuntimeError:
            raise RuntimeError(f"{self.name} did not come up:\n"
                               f"{self.log.read_text()[-3000:]}") from None
        self.cold_start_s = time.perf_counter() - self.started

    def check(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"aichat {self.name} exited ({self.process.returncode}):\n"
                               + self.log.read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.cwd, ignore_errors=True)


class Setup(run.Setup):
    """bench/run.py's Setup, with each session's owner (streams may be spread over users)."""

    def __init__(self, http: aiohttp.ClientSession, stack: Any) -> None:
        super().__init__(http, stack)
        self.tokens: list[str] = []
        self.owners: dict[str, list[str]] = {}

    def alias(self, server: Server) -> Setup:
        """The same users, models and sessions, reached through another instance."""
        other = Setup(self.http, server)
        other.token, other.tokens = self.token, self.tokens
        other.pools, other.owners = self.pools, self.owners
        return other

    def aichat_targets(self, shape: str, n: int) -> list[loadgen.Target]:
        """As bench/run.py's, each stream on its session with the session owner's token."""
        pool, owners = self.pools[shape], self.owners[shape]
        return [loadgen.Target(f"{self.stack.base}/api/chat/stream",
                               {"sessionId": pool[i % len(pool)], "content": f"question {i}"},
                               {"Authorization": f"Bearer {owners[i % len(pool)]}"},
                               b'"type":"content"', b'"type":"complete"')
                for i in range(n)]


# --- the PostgreSQL meter ---------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _cpu(pid: int) -> float | None:
    try:
        return procstat.cpu_seconds(pid)
    except (OSError, IndexError, ValueError):
        return None


class PgMeter:
    """CPU of the PostgreSQL cluster's processes during a load, split by database."""

    def __init__(self, postmaster: int, admin_url: str, interval: float = 0.1) -> None:
        self.postmaster = postmaster
        self.admin_url = admin_url
        self.interval = interval
        self.conn: Any = None

    async def open(self) -> None:
        self.conn = await asyncpg.connect(self.admin_url,
                                          server_settings={"application_name": "bench-meter"})

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def _activity(self) -> dict[int, str | None]:
        rows = await self.conn.fetch("SELECT pid, datname FROM pg_stat_activity")
        return {r["pid"]: r["datname"] for r in rows}

    def _read(self, baseline: bool) -> None:
        for pid in _children(self.postmaster):
            value = _cpu(pid)
            if value is None:
                continue
            if pid not in self.first:
                # Known at the start: its CPU so far is not the load's; born since: all of it is.
                self.first[pid] = value if baseline else 0.0
            self.last[pid] = value

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._read(False)

    async def start(self, databases: set[str]) -> None:
        self.databases = databases
        self.names = await self._activity()
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.pm_start = _cpu(self.postmaster) or 0.0
        self._read(True)
        self.task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> dict[str, float]:
        self.task.cancel()
        self._read(False)
        pm = (_cpu(self.postmaster) or 0.0) - self.pm_start
        self.names.update(await self._activity())
        split = {"db": 0.0, "background": pm, "unknown": 0.0, "other": 0.0}
        for pid, first in self.first.items():
            used = self.last[pid] - first
            if pid not in self.names:
                split["unknown"] += used  # came and went between two looks: counted in
            elif self.names[pid] is None:
                split["background"] += used
            elif self.names[pid] in self.databases:
                split["db"] += used
            else:
                split["other"] += used  # the other database's instances, this meter's own query
        split["counted"] = split["db"] + split["background"] + split["unknown"]
        return split


# --- measurements -----------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    mode: str
    results: list[loadgen.StreamResult]
    elapsed: float
    cpu: list[float]  # per measured process: the fake upstream (direct) or each aichat
    peak: list[int]
    pg: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, float]:
        base = run.Measure(self.scenario, self.mode, self.results, self.elapsed,
                           sum(self.cpu), max(self.peak)).row()
        events = max(1, base["events"])
        pg = self.pg.get("counted", 0.0)
        base["pg_us_event"] = pg * 1e6 / events
        base["total_us_event"] = base["cpu_us_event"] + base["pg_us_event"]
        n = len(self.cpu)
        for i in range(n):  # streams went round-robin: stream k to process k % n
            mine = sum(r.content_events for r in self.results[i::n])
            base[f"cpu_us_event_{i}"] = self.cpu[i] * 1e6 / max(1, mine)
            base[f"failed_{i}"] = sum(1 for r in self.results[i::n] if not r.ok)
            base[f"peak_rss_mb_{i}"] = self.peak[i] / 2**20
        return base


def median_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.rounds = args.rounds or (1 if args.quick else 3)
        self.results: dict[tuple[str, str], list[Result]] = {}
        self.notes: dict[str, Any] = {}
        self.errors: list[str] = []
        self.logs: list[Path] = []  # this run's: the servers', the upstream's, PostgreSQL's

    def scenarios(self) -> list[tuple[str, str, str, int, int, tuple[str, ...]]]:
        """(name, shape, kind, streams, waves, modes)."""
        every = self._scenarios()
        if self.args.only:
            every = [s for s in every if s[0] in self.args.only]
        return every

    def _scenarios(self) -> list[tuple[str, str, str, int, int, tuple[str, ...]]]:
        single = ("direct", "sqlite", "postgres")
        if self.quick:  # hold500 only at 100 streams, to smoke-test the two-instance path
            return [("relay1", "200x0", "seq", 1, 1, single),
                    ("hold100", "200x20", "wave", 20, 1, single),
                    ("hold500", "100x50", "wave", 100, 1, MODES)]
        return [("relay1", "200x0", "seq", 1, 1, single),
                ("hold100", "200x20", "wave", 100, 2, single),
                ("hold500", "100x50", "wave", 500, 1, MODES)]

    # --- set-up ---

    async def prepare(self, http: aiohttp.ClientSession, server: Server,
                      shapes: dict[str, int]) -> Setup:
        """bench/run.py's set-up without crud50's user: a bench user (the first, so the admin)
        whose per-user stream cap is lifted, one system model per stream shape and a session
        per concurrent stream. With --users N the sessions (and so the streams) are spread
        round-robin over N users."""
        setup = Setup(http, server)  # a Server has what run.Setup reads of a Stack
        setup.token = await setup.user("bench")
        await setup.call("PUT", "/api/settings/system", setup.token,
                         json={"registration_enabled": True})
        await setup.allow_streams(max(shapes.values()) + 10)
        setup.tokens = [setup.token] + [await setup.user(f"bench{i}")
                                        for i in range(1, self.args.users)]
        for shape, count in shapes.items():
            model = await setup.call("POST", "/api/models/system", setup.token, json={
                "name": f"bench-{shape}", "apiUrl": server.upstream_url, "apiKey": "sk-bench"})
            owners = [setup.tokens[i % len(setup.tokens)] for i in range(count)]
            ids: list[int] = []
            for start in range(0, count, 50):
                batch = await asyncio.gather(*(
                    setup.call("POST", "/api/sessions", owners[i], json={
                        "modelConfigId": model["id"], "title": f"{shape} {i}"})
                    for i in range(start, min(count, start + 50))))
                ids += [s["id"] for s in batch]
            setup.pools[shape] = ids
            setup.owners[shape] = owners
        return setup

    async def warm(self, http: aiohttp.ClientSession, groups: list[list[Setup]]) -> None:
        """Load the tokenizer and fill the pools before measuring, every aichat alike: 20
        streams one at a time, then a wave of 20. Groups side by side; the instances of a
        group (on one database, so on the same sessions) one after the other: a message on
        one would supersede the round running on the other."""
        async def group(setups: list[Setup]) -> None:
            for setup in setups:
                await one(setup)

        async def one(setup: Setup) -> None:
            for target in setup.aichat_targets("200x0", 20):
                result = await loadgen.stream(http, target, 30)
                if not result.ok:
                    raise RuntimeError(f"warm-up stream failed on {setup.stack.base}: "
                                       f"{result.error}")
            await loadgen.wave(http, setup.aichat_targets("200x20", 20), 60)
        await asyncio.gather(*(group(g) for g in groups))

    # --- the run ---

    async def run(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found")
        cluster = DurableCluster(bindir)
        up_port = run.free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_upstream", "--port", str(up_port)], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=open(OUT / "cluster-upstream.log", "w"))
        servers: list[Server] = []
        meter: PgMeter | None = None
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=None)
        sqlite_dir = tempfile.mkdtemp(prefix="aichat-cluster-sqlite-")
        try:
            cluster.start()
            await self.check_postgres(cluster)
            await cluster.create_database("bench_one")
            await cluster.create_database("bench_two")
            self.step(started, "PostgreSQL up, databases created")
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                await run.wait_ok(http, f"http://127.0.0.1:{up_port}/health")
                upstream_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
                sqlite = Server("sqlite", os.path.join(sqlite_dir, "app.db"), upstream_url)
                one = Server("postgres", cluster.url("bench_one"), upstream_url)
                servers += [sqlite, one]
                await asyncio.gather(sqlite.ready(http), one.ready(http))
                a = Server("postgres-x2-a", cluster.url("bench_two"), upstream_url)
                servers.append(a)
                await a.ready(http)  # migrates bench_two first; then B joins
                b = Server("postgres-x2-b", cluster.url("bench_two"), upstream_url)
                servers.append(b)
                await b.ready(http)
                self.notes["cold_start_ms"] = {s.name: s.cold_start_s * 1000 for s in servers}
                self.step(started, "aichat servers up")

                scenarios = self.scenarios()
                shapes = {shape: n for _, shape, _, n, _, _ in scenarios}
                shapes["200x0"] = 1  # the warm-up streams'
                shapes["200x20"] = max(shapes.get("200x20", 0), 20)  # the warm-up wave's
                setup_sqlite = await self.prepare(http, sqlite, shapes)
                setup_one = await self.prepare(http, one, shapes)
                setup_a = await self.prepare(http, a, shapes)
                setup_b = setup_a.alias(b)
                self.step(started, "users, models and sessions created")
                await self.warm(http, [[setup_sqlite], [setup_one], [setup_a, setup_b]])
                self.notes["setup_s"] = time.perf_counter() - started
                self.step(started, "warmed up")
                await self.idle(servers, cluster)

                meter = PgMeter(cluster.postmaster_pid, cluster.admin_url)
                await meter.open()
                stacks = {
                    "direct": ([setup_sqlite], [upstream.pid], None),
                    "sqlite": ([setup_sqlite], [sqlite.pid], None),
                    "postgres": ([setup_one], [one.pid], {"bench_one"}),
                    "postgres x2": ([setup_a, setup_b], [a.pid, b.pid], {"bench_two"}),
                }
                for i in range(self.rounds):
                    for name, shape, kind, n, waves, modes in scenarios:
                        order = modes if i % 2 == 0 else tuple(reversed(modes))
                        for mode in order:
                            setups, pids, dbs = stacks[mode]
                            result = await self.measure(http, name, shape, kind, n, waves, mode,
                                                        setups, pids, meter if dbs else None,
                                                        dbs)
                            self.results.setdefault((name, mode), []).append(result)
                            self.print(i, result)
                            for server in servers:
                                server.check()
                            await asyncio.sleep(0.5)
                self.notes["rss_after_mb"] = {s.name: procstat.rss_bytes(s.pid) / 2**20
                                              for s in servers}
        finally:
            if meter is not None:
                await meter.close()
            for server in servers:
                server.stop()
            upstream.terminate()
            upstream.wait(15)
            self.logs = [s.log for s in servers] + [OUT / "cluster-upstream.log"]
            if cluster.tmp is not None and cluster.log.exists():
                shutil.copyfile(cluster.log, OUT / "cluster-postgresql.log")
                self.logs.append(OUT / "cluster-postgresql.log")
            cluster.stop()
            shutil.rmtree(sqlite_dir, ignore_errors=True)
            self.notes["wall_s"] = time.perf_counter() - started

    async def idle(self, servers: list[Server], cluster: DurableCluster, seconds: float = 5.0
                   ) -> None:
        """CPU each process burns with no load (timers, the cluster janitor), in ms/s: what a
        slow scenario (relay1) spreads over fewer events."""
        await asyncio.sleep(1.0)
        pids = {s.name: s.pid for s in servers}
        pg_pids = [cluster.postmaster_pid, *_children(cluster.postmaster_pid)]
        before = {name: _cpu(pid) or 0.0 for name, pid in pids.items()}
        pg_before = sum(_cpu(pid) or 0.0 for pid in pg_pids)
        await asyncio.sleep(seconds)
        self.notes["idle_ms_per_s"] = {
            name: ((_cpu(pid) or 0.0) - before[name]) * 1000 / seconds
            for name, pid in pids.items()}
        self.notes["idle_ms_per_s"]["postgresql (all)"] = (
            sum(_cpu(pid) or 0.0 for pid in pg_pids) - pg_before) * 1000 / seconds
        print("idle CPU ms/s: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                            self.notes["idle_ms_per_s"].items()), flush=True)

    @staticmethod
    def step(started: float, what: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {what}", flush=True)

    async def check_postgres(self, cluster: DurableCluster) -> None:
        conn = await asyncpg.connect(cluster.admin_url)
        try:
            self.notes["pg_version"] = await conn.fetchval("SHOW server_version")
            settings = {}
            for name in (*DURABILITY, "wal_level", "shared_buffers", "max_connections",
                         "checkpoint_timeout", "max_wal_size", "wal_sync_method"):
                settings[name] = await conn.fetchval(f"SHOW {name}")
            self.notes["pg_settings"] = settings
        finally:
            await conn.close()
        wrong = [k for k in DURABILITY if settings[k] != "on"]
        if wrong:
            raise RuntimeError(f"PostgreSQL durability settings not on: {wrong}")

    async def measure(self, http: aiohttp.ClientSession, name: str, shape: str, kind: str,
                      n: int, waves: int, mode: str, setups: list[Setup], pids: list[int],
                      meter: PgMeter | None, dbs: set[str] | None) -> Result:
        if mode == "direct":
            targets = setups[0].direct_targets(shape, n)
        else:  # stream k to instance k % len(setups), each on its own session
            per = [s.aichat_targets(shape, n) for s in setups]
            targets = [per[k % len(setups)][k] for k in range(n)]

        async def load() -> list[loadgen.StreamResult]:
            if kind == "seq":
                return await loadgen.sequential(http, targets, 3 if self.quick else 10, 30)
            results: list[loadgen.StreamResult] = []
            for _ in range(waves):
                results += await loadgen.wave(http, targets, 60)
            return results

        samplers = [procstat.Sampler(pid) for pid in pids]
        if meter is not None:
            await meter.start(dbs or set())
        for sampler in samplers:
            sampler.__enter__()
        start = time.perf_counter()
        results = await load()
        elapsed = time.perf_counter() - start
        for sampler in samplers:
            sampler.__exit__(None, None, None)
        pg = await meter.stop() if meter is not None else {}
        return Result(name, mode, results, elapsed, [s.cpu for s in samplers],
                      [s.peak for s in samplers], pg)

    def print(self, i: int, result: Result) -> None:
        row = result.row()
        errors = sorted({r.error for r in result.results if r.error})
        extra = ""
        if result.pg:
            extra = (f" pg={row['pg_us_event']:.1f}us/ev (other db "
                     f"{result.pg['other'] * 1e3:.0f}ms, "
                     f"unknown {result.pg['unknown'] * 1e3:.0f}ms)")
        if len(result.cpu) > 1:
            extra += " per-instance=" + "/".join(
                f"{row[f'cpu_us_event_{k}']:.1f}" for k in range(len(result.cpu)))
        print(f"round {i + 1} {result.scenario:8} {result.mode:12} failed={row['failed']:.0f} "
              f"events={row['events']:.0f} ev/s={row['events_per_s']:.0f} "
              f"cpu={row['cpu_us_event']:.1f}us/ev{extra} ttft_p50={row['ttft_p50']:.1f}ms "
              f"ttft_p99={row['ttft_p99']:.1f}ms peak={row['peak_rss_mb']:.1f}MB"
              + (f" errors={errors}" if errors else ""), flush=True)
        for error in errors:
            self.errors.append(f"{result.scenario}/{result.mode}: {error}")

    # --- the report ---

    def scan_logs(self) -> list[str]:
        """Warnings, errors, tracebacks and non-200 access lines in the servers' stderr, and
        ERROR/FATAL/PANIC/WARNING lines in PostgreSQL's log."""
        lines: list[str] = []
        access = re.compile(r'aiohttp\.access: \S+ "(\S+ \S+)" (\d{3}) ')
        for log in self.logs:
            text = log.read_text(errors="replace").splitlines()
            counts: dict[str, int] = {}
            for line in text:
                if log.name == "cluster-postgresql.log":
                    hit = re.search(r"\b(ERROR|FATAL|PANIC|WARNING|deadlock)\b", line)
                    key = re.sub(r"^\S+ \S+ \S+ \[\d+\] ", "", line)[:200] if hit else None
                elif m := access.search(line):
                    key = f"{m.group(1)} -> {m.group(2)}" if m.group(2) != "200" else None
                elif re.search(r" (WARNING|ERROR|CRITICAL) |Traceback|Exception|Error:", line):
                    key = re.sub(r"^\S+ \S+ ", "", line)[:200]
                else:
                    key = None
                if key:
                    key = re.sub(r"\d+", "N", key) if "access" not in key else key
                    counts[key] = counts.get(key, 0) + 1
            for key, count in sorted(counts.items(), key=lambda kv: -kv[1])[:15]:
                lines.append(f"- `{log.name}`: {count}× `{key}`")
        return lines

    def report(self, command: str) -> str:
        cores = os.cpu_count()
        model = ""
        try:
            model = next(line.split(":", 1)[1].strip() for line in
                         Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        pg = self.notes.get("pg_settings", {})
        rows = {key: median_rows([m.row() for m in ms]) for key, ms in self.results.items()}
        names = list(dict.fromkeys(name for name, _ in self.results))
        lines = [
            "# aichat on SQLite vs PostgreSQL vs two instances on one PostgreSQL database", "",
            f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- command: `{command}` — wall time {self.notes.get('wall_s', 0):.0f} s "
            f"(set-up {self.notes.get('setup_s', 0):.0f} s)",
            f"- machine: {cores} cores ({model}), {platform.machine()}, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}; every "
            "process (load generator, fake upstream, aichat servers, PostgreSQL) on these "
            "cores",
            f"- rounds: {self.rounds}, the modes' order alternating; medians shown",
            f"- PostgreSQL {self.notes.get('pg_version', '?')} on 127.0.0.1 (TCP loopback, "
            "SCRAM auth), data on the local disk under /tmp, settings as shipped: "
            + ", ".join(f"{k}={v}" for k, v in pg.items())
            + "; aichat's pool: DATABASE_POOL_SIZE default (10) + 1 coordination connection "
            "per instance",
            "- SQLite as shipped by aichat: WAL, synchronous=NORMAL (a commit is not fsynced; "
            "PostgreSQL's synchronous_commit=on fsyncs the WAL at every commit). Both kept at "
            "their defaults.",
            "- aichat: bench/run.py's settings (APP_MODE=multi, precise tokenizer, access log "
            "on, BCRYPT_ROUNDS=4), plus JWT_SECRET/ENCRYPTION_KEY (shared by the instances). "
            + ("One bench user runs every stream, its cap (max_concurrent_streams) lifted by "
               "an admin PUT as in bench/run.py"
               if self.args.users == 1 else
               f"The streams are spread round-robin over {self.args.users} users (the cap, "
               "max_concurrent_streams, lifted by an admin PUT as in bench/run.py)")
            + "; each concurrent stream has its own session.",
            "- 2 instances: the streams go round-robin to the two ports (stream k to instance "
            "k mod 2), as a load balancer would.",
            "- aichat CPU = the aichat process(es); PostgreSQL CPU = the cluster's processes "
            "serving the measured database plus its background processes and postmaster "
            "(from /proc, every 100 ms); direct's CPU column is the fake upstream's (the "
            "floor).",
            "- idle CPU with no load (ms per second): " + ", ".join(
                f"{k} {v:.1f}" for k, v in self.notes.get("idle_ms_per_s", {}).items()), "",
            "## Results", "",
            "| scenario | mode | streams | failed | content events/s | TTFT p50 ms "
            "| TTFT p99 ms | aichat CPU µs/event | PostgreSQL CPU µs/event "
            "| aichat+PostgreSQL µs/event | aichat ÷ direct floor | aichat peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name in names:
            floor = rows.get((name, "direct"), {}).get("cpu_us_event")
            for mode in MODES:
                row = rows.get((name, mode))
                if row is None:
                    continue
                pgcol = "–" if mode in ("direct", "sqlite") else f"{row['pg_us_event']:.1f}"
                tot = "–" if mode in ("direct", "sqlite") else f"{row['total_us_event']:.1f}"
                ratio = "1.00" if mode == "direct" else (
                    f"{row['cpu_us_event'] / floor:.2f}×" if floor else "–")
                rss = f"{row['peak_rss_mb']:.1f}"
                if mode == "postgres x2":
                    rss = f"{row['peak_rss_mb_0']:.1f} / {row['peak_rss_mb_1']:.1f}"
                lines.append(
                    f"| {name} | {LABELS[mode]} | {row['streams']:.0f} | {row['failed']:.0f} "
                    f"| {row['events_per_s']:.0f} | {row['ttft_p50']:.1f} | {row['ttft_p99']:.1f} "
                    f"| {row['cpu_us_event']:.1f} | {pgcol} | {tot} | {ratio} | {rss} |")
        lines += ["", "## PostgreSQL ÷ SQLite, one instance (issue budget: aichat CPU per event "
                  "within 1.2×)", "",
                  "| scenario | SQLite aichat µs/event | PostgreSQL aichat µs/event | ratio "
                  "| within 1.2× | aichat+PostgreSQL ÷ SQLite |", "|---|---|---|---|---|---|"]
        for name in names:
            s, p = rows.get((name, "sqlite")), rows.get((name, "postgres"))
            if s and p:
                within = p["cpu_us_event"] / s["cpu_us_event"]
                lines.append(f"| {name} | {s['cpu_us_event']:.1f} | {p['cpu_us_event']:.1f} "
                             f"| {within:.2f}× | {'yes' if within <= 1.2 else '**no**'} "
                             f"| {p['total_us_event'] / s['cpu_us_event']:.2f}× |")
        pair = {name: rows[(name, "postgres x2")] for name in names
                if (name, "postgres x2") in rows}
        for name, row in pair.items():
            failed = [sum(1 for r in m.results if not r.ok)
                      for m in self.results[(name, "postgres x2")]]
            lines += ["", f"## {name}: two instances on one PostgreSQL database "
                      "(issue budget: 0 failures)", "",
                      f"- failures per round: {failed} (median {row['failed']:.0f}; instance "
                      f"A {row['failed_0']:.0f}, B {row['failed_1']:.0f}) — "
                      + ("**budget met**" if max(failed) == 0 else "**budget missed**"),
                      f"- content events/s: {row['events_per_s']:.0f}; TTFT p50 "
                      f"{row['ttft_p50']:.1f} ms, p99 {row['ttft_p99']:.1f} ms",
                      f"- aichat CPU per event: instance A {row['cpu_us_event_0']:.1f} µs, "
                      f"instance B {row['cpu_us_event_1']:.1f} µs, both summed "
                      f"{row['cpu_us_event']:.1f} µs per event relayed; PostgreSQL "
                      f"{row['pg_us_event']:.1f} µs; aichat+PostgreSQL "
                      f"{row['total_us_event']:.1f} µs"]
            for mode in ("sqlite", "postgres"):
                other = rows.get((name, mode))
                if other:
                    lines.append(f"- beside one instance on {LABELS[mode]}: "
                                 f"{other['failed']:.0f} failed, "
                                 f"{other['events_per_s']:.0f} events/s, TTFT p99 "
                                 f"{other['ttft_p99']:.1f} ms, aichat "
                                 f"{other['cpu_us_event']:.1f} µs/event"
                                 + (f" (+ PostgreSQL {other['pg_us_event']:.1f})"
                                    if mode == "postgres" else ""))
        lines += ["", "## Failures and logs", ""]
        lines += ([f"- stream error: {e}" for e in sorted(set(self.errors))]
                  or ["- no stream failed"])
        scan = self.scan_logs()
        lines += scan or ["- server logs (bench/out/cluster-*.log): no warning, error or "
                          "non-200 access line"]
        return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds (default 3; 1 with --quick)")
    parser.add_argument("--users", type=int, default=1,
                        help="spread the streams over this many users (default 1, as "
                             "bench/run.py: one user, its stream cap lifted)")
    parser.add_argument("--only", nargs="+", choices=("relay1", "hold100", "hold500"),
                        help="run only these scenarios")
    parser.add_argument("--out", default=str(ROOT / "bench" / "CLUSTER.md"))
    args = parser.parse_args()
    run.run_and_report(Bench(args), "bench/cluster.py", args.out)


if __name__ == "__main__":
    main()
