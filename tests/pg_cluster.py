"""A throwaway PostgreSQL cluster for tests: initdb + pg_ctl in a temp folder, nothing shared.

The server listens on 127.0.0.1 only (a free port) plus a unix socket in its own folder, with
password (SCRAM) auth for one superuser, so tests reach it exactly as the app would reach a real
one. Durability is off (fsync, synchronous_commit, full_page_writes): the data is thrown away.
PostgreSQL refuses to run as root, so as root the binaries run as the `postgres` OS user.
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import asyncpg

SUPERUSER = "aichat_test"
OS_USER = "postgres"  # who runs the server when we are root
START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
LOG_TAIL_LINES = 30


def find_bindir() -> Path | None:
    """The folder holding initdb/pg_ctl: Debian keeps them off PATH, in a versioned folder."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    versioned = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versioned, key=_version_key, reverse=True)]
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()),
                None)


def _version_key(bindir: str) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,): numeric, so 10 sorts after 9."""
    version = Path(bindir).parent.name
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _free_port() -> int:
    """A port nobody listens on now (the OS picks it); PostgreSQL binds it moments later."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(args: list[str]) -> list[str]:
    """The command as the `postgres` OS user when we are root, else unchanged."""
    if os.geteuid() != 0:
        return args
    if shutil.which("runuser"):
        return ["runuser", "-u", OS_USER, "--", *args]
    return ["su", OS_USER, "-s", "/bin/sh", "-c", shlex.join(args)]


def _ident(name: str) -> str:
    """A quoted SQL identifier (CREATE/DROP DATABASE take no parameters)."""
    return '"' + name.replace('"', '""') + '"'


class Cluster:
    """One initdb'd cluster in a temp folder; `start()` it, `stop()` removes every trace."""

    def __init__(self, bindir: Path | None = None, base_dir: str = "/tmp") -> None:
        """`base_dir`: a short path (the unix socket's must fit 107 bytes) that `postgres` can
        traverse. A tmpfs (/dev/shm) made CREATE DATABASE ~10x faster than ext4 here, but
        Docker gives it 64 MB by default, so it is opt-in."""
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL binaries not found")
        self.base_dir = base_dir
        self.password = secrets.token_urlsafe(24)
        self.port = 0
        self.tmp: Path | None = None

    @property
    def admin_url(self) -> str:
        """The maintenance database, for CREATE/DROP DATABASE."""
        return self.url("postgres")

    def url(self, dbname: str) -> str:
        return (f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}"
                f"@127.0.0.1:{self.port}/{quote(dbname, safe='')}")

    def start(self) -> None:
        """initdb and start; on failure nothing is left behind and the error quotes the log."""
        self.tmp = Path(tempfile.mkdtemp(prefix="aichat-pg-", dir=self.base_dir))
        atexit.register(self.stop)  # a crashed test run must not leave a server behind
        try:
            self._init()
            self.port = _free_port()
            self._pg_ctl("start", "-l", str(self.log), "-o", self._server_options())
        except BaseException:
            self.stop()
            raise

    def restart(self) -> None:
        """Restart in place (same port and data), for tests of reconnecting after a restart."""
        self._pg_ctl("restart", "-m", "fast", "-l", str(self.log), "-o", self._server_options())

    def stop(self) -> None:
        """Stop at once (the data is thrown away) and delete the folder; safe to call twice."""
        if self.tmp is None:
            return
        atexit.unregister(self.stop)
        tmp, self.tmp = self.tmp, None
        if (tmp / "data" / "postmaster.pid").exists():
            subprocess.run(_as_server_user([str(self.bindir / "pg_ctl"), "stop", "-D",
                                            str(tmp / "data"), "-m", "immediate", "-w"]),
                           cwd=tmp, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    async def create_database(self, name: str, template: str | None = None) -> None:
        sql = f"CREATE DATABASE {_ident(name)}"
        if template:
            sql += f" TEMPLATE {_ident(template)}"
        await self._admin(sql)

    async def drop_database(self, name: str) -> None:
        """FORCE: a test may leave connections open; they must not keep the database alive."""
        await self._admin(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    @property
    def data(self) -> Path:
        assert self.tmp is not None, "cluster not started"
        return self.tmp / "data"

    @property
    def log(self) -> Path:
        assert self.tmp is not None, "cluster not started"
        return self.tmp / "server.log"

    def _init(self) -> None:
        """initdb with a password file (never on a command line); as root the folder belongs
        to `postgres`. --no-sync: like fsync=off, the data is thrown away."""
        assert self.tmp is not None
        (self.tmp / "sock").mkdir()
        pwfile = self.tmp / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            self.tmp.chmod(0o755)  # mkdtemp makes it 0700; postgres must traverse it
            for path in (self.tmp, self.tmp / "sock", pwfile):
                shutil.chown(path, OS_USER, OS_USER)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "scram-sha-256",
                  "--pwfile", str(pwfile), "-E", "UTF8", "--locale=C", "--no-sync")
        pwfile.unlink()

    def _server_options(self) -> str:
        assert self.tmp is not None
        return shlex.join(["-c", "listen_addresses=127.0.0.1", "-p", str(self.port),
                           "-k", str(self.tmp / "sock"), "-c", "fsync=off",
                           "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                           "-c", "max_connections=200"])

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run("pg_ctl", action, "-D", str(self.data), "-w", "-t", str(START_TIMEOUT), *args)

    def _run(self, program: str, *args: str) -> None:
        """Run a PostgreSQL binary (cwd: our folder, which `postgres` can enter); raise with
        its output and the server log's tail when it fails."""
        assert self.tmp is not None
        cmd = _as_server_user([str(self.bindir / program), *args])
        out = subprocess.run(cmd, cwd=self.tmp, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError(f"{program} {args[0]} failed ({out.returncode}):\n"
                               f"{out.stdout}{out.stderr}\n--- server log ---\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join(lines[-LOG_TAIL_LINES:])
