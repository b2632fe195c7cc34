"""`backup` and `rotate-key` on PostgreSQL: backup is pg_dump's custom archive (pg_restore
reads and restores it) with the password never on a command line nor in any output; rotate-key
re-encrypts every stored API key in one transaction, and refuses what it cannot do safely."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from aichat.app import create_app
from aichat.cli import maintenance, pgtools
from aichat.cli.maintenance import MaintenanceError
from aichat.security.crypto import DecryptError, KeyCipher, model_aad
from aichat.settings.config import Config, ConfigError, env_names

from .conftest import PG_SECRETS, make_config
from .helpers import Api, Chat

ROOT = Path(__file__).resolve().parent.parent
OLD_KEY = PG_SECRETS["encryption_key"]
NEW_KEY = "a-new-key-the-operator-chose-for-postgres-0123"
KEYS = {"alice": "sk-alice-PGROTATE-0001", "bob": "sk-bob-PGROTATE-0002",
        "system": "sk-system-PGROTATE-0003"}


def run_cli(config: Config, *args: str, path: str | None = None,
            **env_extra: str) -> subprocess.CompletedProcess:
    """server.py as an operator runs it: the app's settings in the environment, nothing else
    of ours (no PGPASSWORD: the password is in the URL)."""
    env = {k: v for k, v in os.environ.items()
           if k not in env_names() and k not in ("NEW_ENCRYPTION_KEY", "PGPASSWORD")}
    env.update(DATABASE_URL=config.database_path, JWT_SECRET=config.jwt_secret or "",
               ENCRYPTION_KEY=config.encryption_key or "", **env_extra)
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, str(ROOT / "server.py"), "--env-file", "/nonexistent",
                           *args], env=env, capture_output=True, text=True, timeout=60)


async def start_pg(aiohttp_client, tmp_path: Path, url: str, **overrides) -> Api:
    config = make_config(tmp_path, database_path=url, app_mode="multi",
                         **{**PG_SECRETS, **overrides})
    return Api(await aiohttp_client(create_app(config)), config)


async def build(api: Api, upstream) -> dict[str, dict]:
    """Three models with keys (alice's, bob's, a system one) and a session on each."""
    admin = await api.register("admin", "adminpass1")
    alice, bob = await api.register("alice"), await api.register("bob")

    def body(key: str, name: str = "fake-model") -> dict:
        return {"name": name, "apiUrl": upstream.url, "apiKey": key}

    made = {"alice": await api.ok("POST", "/api/models", alice, json=body("sk-alice-OLD")),
            "bob": await api.ok("POST", "/api/models", bob, json=body(KEYS["bob"])),
            "system": await api.ok("POST", "/api/models/system", admin,
                                   json=body(KEYS["system"]))}
    await api.ok("PUT", f"/api/models/{made['alice']['id']}", alice,
                 json={"apiKey": KEYS["alice"]})
    for name, user in (("alice", alice), ("bob", bob), ("system", alice)):
        session = await api.ok("POST", "/api/sessions", user,
                               json={"modelConfigId": made[name]["id"], "title": name})
        made[name]["session"] = session["id"]
    return made


async def stored(url: str) -> dict[int, str]:
    conn = await asyncpg.connect(url)
    try:
        return {r["id"]: r["api_key"] for r in await conn.fetch(
            "SELECT id, api_key FROM model_configs")}
    finally:
        await conn.close()


def fake_pg_dump(folder: Path, script: str) -> Path:
    folder.mkdir(parents=True)
    program = folder / "pg_dump"
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(0o755)
    return folder


def pg_restore(cluster, *args: str) -> str:
    env = dict(os.environ, PGPASSWORD=cluster.password)
    return subprocess.run([str(cluster.bindir / "pg_restore"), *args], env=env,
                          capture_output=True, text=True, check=True).stdout


# --- backup ---

async def test_backup_is_a_pg_dump_archive_that_restores(pg_url, pg_cluster, aiohttp_client,
                                                         upstream, tmp_path):
    api = await start_pg(aiohttp_client, tmp_path, pg_url)
    made = await build(api, upstream)  # the app keeps running: pg_dump reads one snapshot
    # pg_dump behind a wrapper that records what it was given.
    log = tmp_path / "pg_dump.log"
    real = pg_cluster.bindir / "pg_dump"
    wrapper = fake_pg_dump(tmp_path / "bin", f"""printf '%s\\n' "$@" >> {log}
[ -n "$PGPASSWORD" ] && echo "PGPASSWORD set" >> {log}
exec {real} "$@"
""")
    target = tmp_path / "aichat.dump"

    result = run_cli(api.config, "backup", str(target), path=f"{wrapper}:{os.environ['PATH']}")

    assert result.returncode == 0, result.stderr
    assert "pg_dump custom archive" in result.stdout
    assert f"pg_restore -d <url> {target}" in result.stdout
    assert "ENCRYPTION_KEY (set in the environment)" in result.stdout
    given = log.read_text()
    assert "--format=custom" in given and "PGPASSWORD set" in given
    for secret in (pg_cluster.password, OLD_KEY, PG_SECRETS["jwt_secret"]):
        assert secret not in result.stdout + result.stderr + given
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    listing = pg_restore(pg_cluster, "--list", str(target))
    assert "TABLE DATA public model_configs" in listing
    assert "TABLE DATA public live_rounds" not in listing  # running processes' state

    copy = pg_url.rsplit("/", 1)[1] + "_restored"
    await pg_cluster.create_database(copy)
    try:
        bare = pgtools.split_password(pg_cluster.url(copy))[0]
        pg_restore(pg_cluster, "--no-owner", "-d", bare, str(target))
        restored = await stored(pg_cluster.url(copy))
    finally:
        await pg_cluster.drop_database(copy)
    assert restored == await stored(pg_url)
    cipher = KeyCipher(OLD_KEY)
    assert {cipher.decrypt(restored[m["id"]], model_aad(m["id"])) for m in made.values()} == \
        set(KEYS.values())


async def test_backup_refuses_an_existing_path(pg_url, tmp_path):
    config = make_config(tmp_path, database_path=pg_url, **PG_SECRETS)
    target = tmp_path / "exists.dump"
    target.write_bytes(b"precious")
    with pytest.raises(MaintenanceError, match="already exists"):
        maintenance.backup(config, str(target))
    assert target.read_bytes() == b"precious"


async def test_without_pg_dump_it_says_what_to_install(pg_url, tmp_path, monkeypatch):
    config = make_config(tmp_path, database_path=pg_url, **PG_SECRETS)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pgtools, "VERSIONED_BINDIRS", str(tmp_path / "none" / "*" / "bin"))
    with pytest.raises(MaintenanceError, match="pg_dump was not found.*postgresql-client"):
        maintenance.backup(config, str(tmp_path / "x.dump"))
    assert not (tmp_path / "x.dump").exists()


def test_pg_dump_is_looked_for_on_path_then_in_the_newest_versioned_folder(tmp_path,
                                                                           monkeypatch):
    for version in ("9.6", "10", "15"):
        fake_pg_dump(tmp_path / "lib" / version / "bin", "exit 0\n")
    monkeypatch.setattr(pgtools, "VERSIONED_BINDIRS", str(tmp_path / "lib" / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert pgtools.find_program("pg_dump") == tmp_path / "lib" / "15" / "bin" / "pg_dump"
    on_path = fake_pg_dump(tmp_path / "path", "exit 0\n")
    monkeypatch.setenv("PATH", str(on_path))
    assert pgtools.find_program("pg_dump") == on_path / "pg_dump"


async def test_an_older_pg_dump_is_reported_with_its_own_words(pg_url, pg_cluster, tmp_path):
    config = make_config(tmp_path, database_path=pg_url, **PG_SECRETS)
    older = fake_pg_dump(tmp_path / "bin", """
[ "$1" = --version ] && echo "pg_dump (PostgreSQL) 13.2" && exit
echo "pg_dump: error: aborting because of server version mismatch" >&2
echo "pg_dump: detail: server version: 16.4; pg_dump version: 13.2" >&2
exit 1
""")
    target = tmp_path / "x.dump"
    result = run_cli(config, "backup", str(target), path=str(older))
    assert result.returncode == 1
    assert "server version mismatch" in result.stderr
    assert "pg_dump (PostgreSQL) 13.2 is older than the server" in result.stderr
    assert "apt-get install postgresql-client-16" in result.stderr
    assert pg_cluster.password not in result.stdout + result.stderr
    assert not target.exists()


def test_the_password_is_split_off_for_pgpassword():
    split = pgtools.split_password
    assert split("postgresql://u:p%40ss@h:5/db?sslmode=require") == (
        "postgresql://u@h:5/db?sslmode=require", "p@ss")
    assert split("postgres://u@h/db?password=secret1&x=1") == ("postgres://u@h/db?x=1", "secret1")
    assert split("postgresql://h/db") == ("postgresql://h/db", None)
    assert split("postgresql://u:pw@h/db?options=-c%20a%3Db+c&password=x") == (
        "postgresql://u@h/db?options=-c%20a%3Db+c", "pw")
    assert pgtools.label("postgresql://u:pw12@h/db?password=secret1&ssl=on") == \
        "postgresql://u:***@h/db?ssl=on&password=***"
    url = "postgresql://u:pw12@h/db?password=secret1"
    assert pgtools.hide(f"failed: {url} pw12", url) == \
        "failed: postgresql://u:***@h/db?password=*** ***"
    assert pgtools.hide("port 5432", "postgresql://h:5432/db") == "port 5432"


# --- rotate-key ---

async def test_rotate_key_on_postgresql(pg_url, pg_cluster, aiohttp_client, upstream, tmp_path):
    api = await start_pg(aiohttp_client, tmp_path, pg_url)
    made = await build(api, upstream)
    await api.client.close()  # every instance stopped, as rotate-key asks
    before = await stored(pg_url)

    refused = run_cli(api.config, "rotate-key")
    assert refused.returncode == 2 and "--new-key" in refused.stderr
    assert await stored(pg_url) == before

    result = run_cli(api.config, "rotate-key", NEW_ENCRYPTION_KEY=NEW_KEY)
    assert result.returncode == 0, result.stderr
    assert "Re-encrypted 3 stored API key(s)" in result.stdout
    assert "Set ENCRYPTION_KEY" in result.stdout and "VACUUM" not in result.stdout
    for secret in (NEW_KEY, OLD_KEY, pg_cluster.password):
        assert secret not in result.stdout + result.stderr
    rows, old, new = await stored(pg_url), KeyCipher(OLD_KEY), KeyCipher(NEW_KEY)
    assert rows.keys() == before.keys()
    for name, plaintext in KEYS.items():
        model_id = made[name]["id"]
        assert new.decrypt(rows[model_id], model_aad(model_id)) == plaintext
        with pytest.raises(DecryptError):
            old.decrypt(rows[model_id], model_aad(model_id))

    # An app with the new key uses each model's own key upstream; tokens still work.
    api2 = await start_pg(aiohttp_client, tmp_path, pg_url, encryption_key=NEW_KEY)
    for name, owner in (("alice", "alice"), ("bob", "bob"), ("system", "alice")):
        chat = Chat(api2, upstream, api.users[owner], made[name], made[name]["session"])
        assert (await chat.stream(f"hi from {owner}")).types()[-1] == "complete"
        assert upstream.requests[-1].headers["Authorization"] == f"Bearer {KEYS[name]}"


async def test_rotate_key_refuses_while_an_instance_runs(pg_url, aiohttp_client, upstream,
                                                         tmp_path):
    api = await start_pg(aiohttp_client, tmp_path, pg_url)
    await build(api, upstream)
    before = await stored(pg_url)
    with pytest.raises(MaintenanceError, match=r"aichat is running on postgresql://"
                                               r"aichat_test:\*\*\*@.*stop every instance"):
        await asyncio.to_thread(maintenance.rotate_key, api.config, NEW_KEY)
    assert await stored(pg_url) == before


async def test_rotate_key_refusals_change_nothing(pg_url, aiohttp_client, upstream, tmp_path):
    api = await start_pg(aiohttp_client, tmp_path, pg_url)
    made = await build(api, upstream)
    await api.client.close()
    bob = made["bob"]["id"]
    foreign = KeyCipher("some-other-key-that-is-long-enough-0123456")
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("UPDATE model_configs SET api_key = $1 WHERE id = $2",
                           foreign.encrypt("sk-foreign", model_aad(bob)), bob)
    finally:
        await conn.close()
    before = await stored(pg_url)

    with pytest.raises(MaintenanceError, match=rf"1 of 3 .* \(model ids {bob}\); nothing"):
        await asyncio.to_thread(maintenance.rotate_key, api.config, NEW_KEY)
    unset = dataclasses.replace(api.config, encryption_key=None)
    with pytest.raises(ConfigError, match="ENCRYPTION_KEY is not set: with PostgreSQL"):
        maintenance.rotate_key(unset, NEW_KEY)
    with pytest.raises(ConfigError, match="too short"):
        maintenance.rotate_key(api.config, "short")
    with pytest.raises(ConfigError, match="current key"):
        maintenance.rotate_key(api.config, OLD_KEY)
    assert await stored(pg_url) == before
