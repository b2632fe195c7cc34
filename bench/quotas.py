"""The relay's CPU with per-user quotas on vs off (docs/api.md §9), in one run: bench/QUOTAS.md.

    python bench/quotas.py                 # full run: 20 rounds, ~4 minutes on a 2-core box
    python bench/quotas.py --quick         # smoke run: 2 rounds, smaller loads, ~30 s
    python bench/quotas.py --postgres      # also on a throwaway PostgreSQL cluster (as
                                           # bench/cluster.py; needs initdb/pg_ctl, asyncpg)
    python bench/quotas.py --postgres postgresql://u:p@host/empty_db   # on that database

Processes as in bench/run.py (`run.start_stack`): the fake upstream and the aichat server on
SQLite; with --postgres a second aichat server (bench/cluster.py's `Server`) on PostgreSQL.
N users each run rounds one after another in their own session, all users at once; the same
load runs with limits OFF (no user limit, no system default) and ON (the four system defaults
of §9 set far above the load, switched by an admin `PUT /api/settings/system` between the
loads), the two alternating which goes first over the rounds. Every model is priced in both,
so the difference is the limits alone: ON, each round does the quota admission (its prompt
counted, the standing read, the request counted and a `quota_holds` row inserted, in one
transaction) and its usage row's commit deletes the hold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402
import procstat  # noqa: E402
import run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 1.05  # the issue's: relay CPU per event with limits on ≤ 5 % over off
MODES = ("off", "on")
# docs/api.md §9 system defaults; ON: far above anything the load reaches. Token limits of 12
# digits or more are accepted by the PUT but read back as unset (settings/system.py
# `_from_text` keeps ints under 12 digits), so 10**10 it is.
LIMITS = {
    "default_tokens_per_day": 10**10, "default_tokens_per_month": 10**10,
    "default_requests_per_minute": 1_000_000, "default_cost_per_month": 1_000_000}
PRICES = {"inputPricePerMTok": 3, "outputPricePerMTok": 15}


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    shape: str  # the fake upstream's bench-<tokens>x<gap ms>
    users: int
    rounds: int  # per user per load, one after another


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [Scenario("long", "300x5", 8, 2), Scenario("short", "20x5", 8, 6)]
    # Short loads and many rounds: ON and OFF run seconds apart, so a burst of other work on
    # the box lands on one pair, which the median of the pairs shrugs off.
    return [Scenario("long", "300x5", 20, 2), Scenario("short", "20x5", 20, 10)]


class Setup(run.Setup):
    """An admin, priced system models, users and a session per user, scenario and mode (so
    ON and OFF rounds read histories of the same length)."""

    async def prepare(self, plan: list[Scenario]) -> None:
        self.token = await self.user("bench")  # the first user: the admin
        await self.call("PUT", "/api/settings/system", self.token,
                        json={"registration_enabled": True})
        self.users = [await self.user(f"quota{i}") for i in range(max(s.users for s in plan))]
        self.sessions: dict[tuple[str, str], list[int]] = {}
        for s in plan:
            model = await self.call("POST", "/api/models/system", self.token, json={
                "name": f"bench-{s.shape}", "apiUrl": self.stack.upstream_url,
                "apiKey": "sk-bench", **PRICES})
            for mode in MODES:
                self.sessions[(s.name, mode)] = [
                    (await self.call("POST", "/api/sessions", token, json={
                        "modelConfigId": model["id"], "title": f"{s.name} {mode}"}))["id"]
                    for token in self.users[:s.users]]

    async def limits(self, mode: str) -> None:
        values = LIMITS if mode == "on" else dict.fromkeys(LIMITS)  # null: back to unset
        await self.call("PUT", "/api/settings/system", self.token, json=values)

    async def in_force(self) -> dict[str, Any]:
        """The first user's GET /api/quota: which limits apply, what is held."""
        return (await self.call("GET", "/api/quota", self.users[0]))["limits"]

    def targets(self, s: Scenario, mode: str, rounds: int) -> list[list[loadgen.Target]]:
        """Per user, its rounds in its own session."""
        return [[loadgen.Target(f"{self.stack.base}/api/chat/stream",
                                {"sessionId": session, "content": f"question {r}"},
                                {"Authorization": f"Bearer {token}"},
                                b'"type":"content"', b'"type":"complete"')
                 for r in range(rounds)]
                for token, session in zip(self.users[:s.users], self.sessions[(s.name, mode)],
                                          strict=True)]


async def users_at_once(http: aiohttp.ClientSession,
                        per_user: list[list[loadgen.Target]]) -> list[loadgen.StreamResult]:
    async def one(targets: list[loadgen.Target]) -> list[loadgen.StreamResult]:
        return [await loadgen.stream(http, t, 60) for t in targets]
    return [r for rs in await asyncio.gather(*(one(t) for t in per_user)) for r in rs]


@dataclass
class Store:
    """One aichat server under test; PostgreSQL's CPU too when its processes are ours."""

    name: str
    setup: Setup
    pid: int
    meter: Any = None  # bench/cluster.py's PgMeter
    databases: frozenset[str] = frozenset()


@dataclass
class Result:
    store: str
    scenario: str
    mode: str
    round: int
    row: dict[str, float]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = scenarios(args.quick)
        self.rounds = args.rounds or (2 if args.quick else 20)
        self.results: list[Result] = []
        self.checks: dict[str, list[int]] = {}  # per store: tokens used after each ON load
        self.notes: dict[str, Any] = {"load_before": os.getloadavg()}

    async def run(self) -> None:
        started = time.perf_counter()
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with contextlib.AsyncExitStack() as cleanup, aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as http:
            stack = await run.start_stack(http, out)
            cleanup.callback(shutil.rmtree, stack.data_dir, True)
            for proc in (stack.upstream, stack.server):
                cleanup.callback(proc.wait, 15)
                cleanup.callback(proc.terminate)
            stores = [await self.store(http, "SQLite", stack, stack.server.pid)]
            if self.args.postgres:
                stores.append(await self.postgres(http, stack, cleanup))
            self.notes["setup_s"] = time.perf_counter() - started
            await self.measure_all(http, stores)
        self.notes["wall_s"] = time.perf_counter() - started
        self.notes["load_after"] = os.getloadavg()

    async def store(self, http: aiohttp.ClientSession, name: str, stack: Any, pid: int,
                    meter: Any = None, databases: frozenset[str] = frozenset()) -> Store:
        setup = Setup(http, stack)
        await setup.prepare(self.plan)
        for mode in MODES:  # the tokenizer loaded, the sessions past their first rounds
            await setup.limits(mode)
            await asyncio.gather(*(users_at_once(http, setup.targets(s, mode, 2))
                                   for s in self.plan))
        print(f"{name}: set up and warmed", flush=True)
        return Store(name, setup, pid, meter, databases)

    async def postgres(self, http: aiohttp.ClientSession, stack: run.Stack,
                       cleanup: contextlib.AsyncExitStack) -> Store:
        import cluster  # asyncpg and tests/pg_cluster.py: only with --postgres
        url, meter, dbs = self.args.postgres, None, frozenset[str]()
        if url == "local":
            bindir = cluster.find_bindir()
            if bindir is None:
                raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found")
            pg = cluster.DurableCluster(bindir)
            cleanup.callback(pg.stop)
            pg.start()
            await pg.create_database("bench_quotas")
            url, dbs = pg.url("bench_quotas"), frozenset({"bench_quotas"})
            meter = cluster.PgMeter(pg.postmaster_pid, pg.admin_url)
            await meter.open()
            cleanup.push_async_callback(meter.close)
        server = cluster.Server("quotas-postgres", url, stack.upstream_url)
        cleanup.callback(server.stop)
        await server.ready(http)
        return await self.store(http, "PostgreSQL", server, server.pid, meter, dbs)

    async def measure_all(self, http: aiohttp.ClientSession, stores: list[Store]) -> None:
        for i in range(self.rounds):
            order = MODES if i % 2 == 0 else MODES[::-1]
            for store in stores:
                for s in self.plan:
                    for mode in order:
                        result = await self.measure(http, store, s, mode, i)
                        self.results.append(result)
                        row = result.row
                        print(f"round {i + 1} {store.name:10} {s.name:5} {mode:3} "
                              f"failed={row['failed']:.0f} cpu={row['cpu_us_event']:.1f}us/ev "
                              f"{row['cpu_ms_stream']:.2f}ms/round pg={row['pg_us_event']:.1f}"
                              f"us/ev ttft_p50={row['ttft_p50']:.1f}ms", flush=True)

    async def measure(self, http: aiohttp.ClientSession, store: Store, s: Scenario, mode: str,
                      i: int) -> Result:
        setup = store.setup
        await setup.limits(mode)
        seen = await setup.in_force()
        if any((seen[k]["limit"] is None) != (mode == "off") for k in
               ("requestsPerMinute", "tokensPerDay", "tokensPerMonth", "costPerMonth")):
            raise RuntimeError(f"limits {mode} but GET /api/quota says {seen}")
        targets = setup.targets(s, mode, s.rounds)
        await asyncio.sleep(0.3)
        if store.meter is not None:
            await store.meter.start(set(store.databases))
        with procstat.Sampler(store.pid) as sampler:
            start = time.perf_counter()
            results = await users_at_once(http, targets)
            elapsed = time.perf_counter() - start
        pg = (await store.meter.stop())["counted"] if store.meter is not None else 0.0
        row = run.Measure(s.name, mode, results, elapsed, sampler.cpu, sampler.peak).row()
        row["pg_us_event"] = pg * 1e6 / max(1, row["events"])
        row["total_us_event"] = row["cpu_us_event"] + row["pg_us_event"]
        row["cpu_s"] = sampler.cpu
        after = await setup.in_force()
        if mode == "on":  # counted, and every hold released with its usage row
            self.checks.setdefault(store.name, []).append(after["tokensPerDay"]["used"])
            if after["tokensPerDay"]["reserved"]:
                raise RuntimeError(f"holds left after the load: {after}")
        return Result(store.name, s.name, mode, i, row)

    # --- the report ---

    def pairs(self, store: str, scenario: str) -> tuple[list[dict[str, float]],
                                                        list[dict[str, float]]]:
        """(OFF rows, ON rows), by round."""
        rows = {(r.mode, r.round): r.row for r in self.results
                if r.store == store and r.scenario == scenario}
        return ([rows[("off", i)] for i in range(self.rounds)],
                [rows[("on", i)] for i in range(self.rounds)])

    def report(self, command: str) -> str:
        stores = list(dict.fromkeys(r.store for r in self.results))
        with_pg = any(r.row["pg_us_event"] for r in self.results)
        lines = [
            "# aichat relay CPU with per-user quotas on vs off", "",
            f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- command: `{command}` — wall time {self.notes['wall_s']:.0f} s (set-up and "
            f"warm-up {self.notes['setup_s']:.0f} s)",
            f"- machine: {os.cpu_count()} cores ({cpu_model()}), {platform.machine()}, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}; the load "
            "generator, the fake upstream and aichat share these cores",
            "- load average (1 min) at start / end: " + " / ".join(
                f"{self.notes[k][0]:.2f}" for k in ("load_before", "load_after"))
            + " (another job may be using the box: ON and OFF run back to back in every round, "
            "so both see the same background)",
            f"- rounds: {self.rounds}, OFF/ON order alternating; medians shown; aichat as in "
            "bench/run.py (precise tokenizer, access log on), SQLite as shipped (WAL, "
            "synchronous=NORMAL)",
            "- OFF: no user limit, no system default (max_concurrent_streams only, as always). "
            "ON: `PUT /api/settings/system` " + ", ".join(f"`{k}={v}`" for k, v in LIMITS.items())
            + ", checked through `GET /api/quota` before each load. After each ON load the "
            "first user's `tokensPerDay` had `reserved` 0 (every hold released) and `used` "
            "growing (" + "; ".join(f"{k}: {v[0]} → {v[-1]}" for k, v in self.checks.items())
            + ")",
            f"- every model priced ({PRICES['inputPricePerMTok']} / "
            f"{PRICES['outputPricePerMTok']} per M tokens) in both modes; the usage trigger "
            "(per-day counters) runs in both",
            "- load: " + "; ".join(
                f"**{s.name}** = {s.users} users at once, each {s.rounds} rounds one after "
                f"another in its own session, {s.shape.split('x')[0]}-token replies "
                f"{s.shape.split('x')[1]} ms apart" for s in self.plan)
            + ". Each user has one session per scenario and mode, so ON and OFF rounds read "
            "histories of the same length (2 warm-up rounds each before the first load).",
            "- CPU: utime+stime of the aichat process during the load (from /proc) ÷ content "
            "events relayed (µs/event) or ÷ rounds (ms/round); /proc counts in "
            f"{1000 / os.sysconf('SC_CLK_TCK'):.0f} ms ticks, and the smallest load used "
            f"{min(r.row['cpu_s'] for r in self.results):.2f} s, so ±1 tick is "
            f"{100 / os.sysconf('SC_CLK_TCK') / min(r.row['cpu_s'] for r in self.results):.1f}"
            " % at most"
            + ("; PostgreSQL: its processes serving the database plus background ones "
               "(bench/cluster.py's meter)" if with_pg else ""), "",
            "## Results", "",
            "| store | scenario | mode | chat rounds per load | failed | content events/s "
            "| TTFT p50 ms | TTFT p99 ms | aichat CPU µs/event | aichat CPU ms/round "
            + ("| PostgreSQL CPU µs/event " if with_pg else "") + "| peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if with_pg else "") + "---|"]
        for store in stores:
            for s in self.plan:
                for mode, rows in zip(MODES, self.pairs(store, s.name), strict=True):
                    m = run.median_rows(rows)
                    lines.append(
                        f"| {store} | {s.name} | {mode.upper()} | {m['streams']:.0f} "
                        f"| {m['failed']:.0f} | {m['events_per_s']:.0f} | {m['ttft_p50']:.1f} "
                        f"| {m['ttft_p99']:.1f} | {m['cpu_us_event']:.1f} "
                        f"| {m['cpu_ms_stream']:.3f} "
                        + pg_cell(f"{m['pg_us_event']:.1f}", store, with_pg)
                        + f"| {m['peak_rss_mb']:.1f} |")
        lines += ["", f"## ON ÷ OFF (issue budget: aichat CPU per event ≤ {BUDGET:.2f}×)", "",
                  "| store | scenario | OFF µs/event | ON µs/event | ON ÷ OFF (medians) "
                  "| ON ÷ OFF (all rounds pooled) | per-round ON ÷ OFF: median [min – max] "
                  "| rounds ON > OFF | extra CPU per round "
                  + ("| ON ÷ OFF aichat+PostgreSQL " if with_pg else "") + "| within budget |",
                  "|---|---|---|---|---|---|---|---|---|" + ("---|" if with_pg else "") + "---|"]
        noise = []
        for store in stores:
            for s in self.plan:
                off, on = self.pairs(store, s.name)
                a, b = run.median_rows(off), run.median_rows(on)
                ratio = b["cpu_us_event"] / a["cpu_us_event"]
                pooled = pooled_us_event(on) / pooled_us_event(off)
                each = [y["cpu_us_event"] / x["cpu_us_event"]
                        for x, y in zip(off, on, strict=True)]
                up, down = sum(r > 1 for r in each), sum(r < 1 for r in each)
                spread, p = max(each) - min(each), sign_test(up, down)
                if spread > abs(ratio - 1):
                    noise.append(
                        f"- {store} {s.name}: the per-round ratios spread over {spread:.3f} "
                        f"(max − min), more than ON differs from OFF ({ratio - 1:+.3f}); "
                        + (f"yet ON cost more in {up} of {up + down} rounds (sign test p = "
                           f"{p:.2g}): the direction is clear, its size is not"
                           if p < 0.05 else
                           f"ON cost more in {up} of {up + down} rounds (sign test p = "
                           f"{p:.2g}): the difference is within this run's noise"))
                extra = (b["cpu_ms_stream"] - a["cpu_ms_stream"]) * 1000
                total = pg_cell(f"{b['total_us_event'] / a['total_us_event']:.3f}×", store,
                                with_pg)
                lines.append(
                    f"| {store} | {s.name} | {a['cpu_us_event']:.1f} | {b['cpu_us_event']:.1f} "
                    f"| {ratio:.3f}× | {pooled:.3f}× | {statistics.median(each):.3f}× "
                    f"[{min(each):.3f} – {max(each):.3f}] | {up}/{len(each)} "
                    f"| {extra:+.0f} µs {total}| {'yes' if ratio <= BUDGET else '**no**'} |")
        lines += ["", "Noise:" if noise else
                  "Noise: every difference is wider than the spread of its per-round ratios.",
                  *([""] + noise if noise else [])]
        return "\n".join(lines) + "\n"


def pooled_us_event(rows: list[dict[str, float]]) -> float:
    return sum(r["cpu_s"] for r in rows) * 1e6 / sum(r["events"] for r in rows)


def sign_test(up: int, down: int) -> float:
    """Two-sided p of `up` rounds above and `down` below if neither mode costs more."""
    n = up + down
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(up, down) + 1)) / 2**n
    return min(1.0, 2 * tail)


def pg_cell(text: str, store: str, shown: bool) -> str:
    """A PostgreSQL column's cell (none for a run without one; a dash on SQLite's rows)."""
    return "" if not shown else f"| {text if store == 'PostgreSQL' else '–'} "


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds (default 20; 2 with --quick)")
    parser.add_argument("--postgres", nargs="?", const="local", default=None, metavar="URL",
                        help="also measure aichat on PostgreSQL: a throwaway cluster "
                             "(its CPU measured too), or the empty database at URL")
    parser.add_argument("--out", default=str(ROOT / "bench" / "QUOTAS.md"))
    args = parser.parse_args()
    run.run_and_report(Bench(args), "bench/quotas.py", args.out)


if __name__ == "__main__":
    main()
