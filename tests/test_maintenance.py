"""Operator commands on databases the real app wrote: `rotate-key` re-encrypts every stored API
key in one transaction (and the keys still work for chat rounds), changes nothing when it
refuses, survives a crash at its one non-atomic step; `backup` copies a live database."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import stat
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from aichat.cli import maintenance
from aichat.settings.config import Config, ConfigError, env_names
from aichat.cli.maintenance import MaintenanceError, backup, rotate_key
from aichat.security.crypto import DecryptError, KeyCipher, model_aad

from .helpers import Api, Chat

ROOT = Path(__file__).resolve().parent.parent
ENV_KEY = "an-encryption-key-from-the-environment-0123"
GIVEN_KEY = "a-new-key-chosen-by-the-operator-0123456789"
KEYS = {"alice": "sk-alice-ROTATE-0001", "bob": "sk-bob-ROTATE-0002",
        "system": "sk-system-ROTATE-0003"}


@dataclass
class World:
    """An app that was used and then stopped: three models (alice's, bob's, a system one), a
    session on each, and every ciphertext the old key ever wrote (replaced and deleted ones
    too)."""

    api: Api
    models: dict[str, dict]
    sessions: dict[str, int]
    old_ciphertexts: set[str]

    @property
    def config(self) -> Config:
        return self.api.config

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir


def stored(config: Config) -> dict[int, str]:
    with closing(sqlite3.connect(config.database_path)) as conn:
        return dict(conn.execute("SELECT id, api_key FROM model_configs"))


def raw_database(config: Config) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(config.data_dir.glob("app.db*")))


async def build(start, upstream, **overrides) -> World:
    api = await start(app_mode="multi", **overrides)
    admin = await api.register("admin", "adminpass1")
    alice, bob = await api.register("alice"), await api.register("bob")

    def body(key: str, name: str = "fake-model") -> dict:
        return {"name": name, "apiUrl": upstream.url, "apiKey": key}

    models = {"alice": await api.ok("POST", "/api/models", alice, json=body("sk-alice-OLD-0000")),
              "bob": await api.ok("POST", "/api/models", bob, json=body(KEYS["bob"])),
              "system": await api.ok("POST", "/api/models/system", admin,
                                     json=body(KEYS["system"]))}
    doomed = await api.ok("POST", "/api/models", bob, json=body("sk-bob-DELETED-0009", "other"))
    old = set(stored(api.config).values())
    await api.ok("PUT", f"/api/models/{models['alice']['id']}", alice,
                 json={"apiKey": KEYS["alice"]})
    old |= set(stored(api.config).values())
    assert len(old) == 5
    deleted = stored(api.config)[doomed["id"]]
    sessions = {}
    for name, user in (("alice", alice), ("bob", bob), ("system", alice)):
        session = await api.ok("POST", "/api/sessions", user,
                               json={"modelConfigId": models[name]["id"], "title": name})
        sessions[name] = session["id"]
    await api.client.close()  # the server is stopped, as rotate-key asks
    # Deleted as by a server whose SQLite keeps freed bytes (secure_delete off, SQLite's own
    # default; Debian's build zeroes them), so the file holds a value nothing refers to.
    with closing(sqlite3.connect(api.config.database_path)) as conn:
        conn.execute("PRAGMA secure_delete = OFF")
        conn.execute("DELETE FROM model_configs WHERE id = ?", (doomed["id"],))
        conn.commit()
    world = World(api, models, sessions, old)
    assert deleted in residue(world)
    return world


def residue(world: World) -> set[str]:
    raw = raw_database(world.config)
    return {c for c in world.old_ciphertexts if c.encode() in raw}


def assert_rotated(world: World, old_key: str, new_key: str) -> None:
    """Every stored key decrypts with the new key to its original; the old key decrypts
    nothing, and no ciphertext it wrote is left anywhere in the files."""
    old, new = KeyCipher(old_key), KeyCipher(new_key)
    rows = stored(world.config)
    assert rows == {world.models[n]["id"]: rows[world.models[n]["id"]] for n in KEYS}
    for name, plaintext in KEYS.items():
        model_id = world.models[name]["id"]
        assert new.decrypt(rows[model_id], model_aad(model_id)) == plaintext
        with pytest.raises(DecryptError):
            old.decrypt(rows[model_id], model_aad(model_id))
    assert not residue(world)


async def assert_rounds_use_the_keys(world: World, start, upstream, **overrides) -> None:
    """An app on the rotated data streams a round on each model with that model's key; the
    users' old tokens still work (rotate-key leaves JWT_SECRET alone)."""
    api = await start(app_mode="multi", **overrides)
    users = world.api.users
    for name, owner in (("alice", "alice"), ("bob", "bob"), ("system", "alice")):
        chat = Chat(api, upstream, users[owner], world.models[name], world.sessions[name])
        reader = await chat.stream(f"Hello from {owner}")
        assert reader.types()[-1] == "complete", reader.events
        assert reader.text() == "Hello, world!"
        assert upstream.requests[-1].headers["Authorization"] == f"Bearer {KEYS[name]}"


# --- rotate-key ---

async def test_rotate_key_with_the_key_file(start, upstream, capsys):
    world = await build(start, upstream)
    key_file = world.data_dir / "encryption_key"
    jwt_file = world.data_dir / "jwt_secret"
    old_key, jwt_secret = key_file.read_text().strip(), jwt_file.read_text()
    assert world.old_ciphertexts & set(stored(world.config).values())

    new_key = rotate_key(world.config, None)

    out = capsys.readouterr().out
    assert "Re-encrypted 3 stored API key(s)" in out and new_key not in out
    assert len(new_key) >= 43 and new_key != old_key
    assert key_file.read_text() == new_key + "\n"  # the old key's content is gone
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (world.data_dir / "encryption_key.new").exists()
    assert jwt_file.read_text() == jwt_secret
    assert_rotated(world, old_key, new_key)
    await assert_rounds_use_the_keys(world, start, upstream)


async def test_rotate_key_from_the_environment_needs_the_operators_new_key(start, upstream,
                                                                         capsys):
    """A generated key printed after the commit could be lost (`| head`), and every stored
    provider key with it: with ENCRYPTION_KEY in the environment the operator brings one."""
    world = await build(start, upstream, encryption_key=ENV_KEY)
    with pytest.raises(ConfigError, match="--new-key"):
        rotate_key(world.config, None)
    rows, same = stored(world.config), KeyCipher(ENV_KEY)  # nothing changed
    assert {same.decrypt(value, model_aad(model_id)) for model_id, value in rows.items()} == \
        set(KEYS.values())
    new_key = "operator-chosen-key-" + "x" * 20

    assert rotate_key(world.config, new_key) == new_key

    assert not list(world.data_dir.glob("encryption_key*"))  # no file written
    assert_rotated(world, ENV_KEY, new_key)
    await assert_rounds_use_the_keys(world, start, upstream, encryption_key=new_key)
    rotated = dataclasses.replace(world.config, encryption_key=new_key)
    assert rotate_key(rotated, GIVEN_KEY) == GIVEN_KEY
    out = capsys.readouterr().out
    assert GIVEN_KEY not in out and "--new-key" in out
    assert_rotated(world, new_key, GIVEN_KEY)
    await assert_rounds_use_the_keys(world, start, upstream, encryption_key=GIVEN_KEY)


async def test_a_value_that_does_not_decrypt_aborts_and_changes_nothing(start, upstream):
    world = await build(start, upstream)
    bob_id = world.models["bob"]["id"]
    foreign = KeyCipher("some-other-key-that-is-long-enough-0123456")
    with closing(sqlite3.connect(world.config.database_path)) as conn:
        conn.execute("UPDATE model_configs SET api_key = ? WHERE id = ?",
                     (foreign.encrypt("sk-foreign", model_aad(bob_id)), bob_id))
        conn.commit()
    key_file = world.data_dir / "encryption_key"
    rows, key = stored(world.config), key_file.read_text()

    with pytest.raises(MaintenanceError, match=rf"1 of 3 .* \(model ids {bob_id}\); nothing"):
        rotate_key(world.config, None)
    wrong = dataclasses.replace(world.config, encryption_key="not-the-key-the-values-are-under-0")
    with pytest.raises(MaintenanceError, match="3 of 3 .* ENCRYPTION_KEY"):
        rotate_key(wrong, GIVEN_KEY)

    assert stored(world.config) == rows and key_file.read_text() == key
    assert sorted(p.name for p in world.data_dir.iterdir() if p.name.startswith("encr")) == [
        "encryption_key"]


async def test_bad_new_keys_are_refused(start, upstream):
    world = await build(start, upstream)
    rows = stored(world.config)
    current = (world.data_dir / "encryption_key").read_text().strip()
    with pytest.raises(ConfigError, match="too short"):
        rotate_key(world.config, "short")
    with pytest.raises(ConfigError, match="current key"):
        rotate_key(world.config, current)
    assert stored(world.config) == rows


async def test_a_leftover_from_before_the_commit_is_refused_until_deleted(start, upstream):
    world = await build(start, upstream)
    leftover = world.data_dir / "encryption_key.new"
    leftover.write_text("a-key-that-never-made-it-into-the-database-0\n")
    rows = stored(world.config)

    with pytest.raises(MaintenanceError, match="not committed.*Delete") as refused:
        rotate_key(world.config, None)
    assert str(leftover) in str(refused.value)
    assert stored(world.config) == rows and leftover.exists()

    leftover.unlink()  # what the message says to do
    old_key = (world.data_dir / "encryption_key").read_text().strip()
    assert_rotated(world, old_key, rotate_key(world.config, None))


async def test_a_crash_after_the_commit_is_finished_by_moving_the_new_file(start, upstream,
                                                                           monkeypatch):
    world = await build(start, upstream)
    key_file = world.data_dir / "encryption_key"
    leftover = world.data_dir / "encryption_key.new"
    old_key = key_file.read_text().strip()

    def crash(src, dst):
        raise OSError("simulated power cut")

    with monkeypatch.context() as patched:
        patched.setattr(maintenance.os, "replace", crash)
        with pytest.raises(OSError, match="power cut"):
            rotate_key(world.config, GIVEN_KEY)
    # Committed, with the new key safely on disk beside the old one.
    assert leftover.read_text() == GIVEN_KEY + "\n"
    assert stat.S_IMODE(leftover.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == old_key
    rows = stored(world.config)

    with pytest.raises(MaintenanceError, match="was committed.*Finish it with `mv "):
        rotate_key(world.config, None)
    assert stored(world.config) == rows

    os.replace(leftover, key_file)  # the `mv` the message gives
    assert_rotated(world, old_key, GIVEN_KEY)
    await assert_rounds_use_the_keys(world, start, upstream)


# --- backup ---

async def test_backup_of_a_running_app_is_consistent_and_complete(start, upstream, tmp_path,
                                                                  capsys):
    world_api = await start(app_mode="multi")
    api, config = world_api, world_api.config
    admin = await api.register("admin", "adminpass1")
    alice = await api.register("alice")
    model = await api.ok("POST", "/api/models", alice, json={
        "name": "fake-model", "apiUrl": upstream.url, "apiKey": KEYS["alice"]})
    session = await api.ok("POST", "/api/sessions", alice,
                           json={"modelConfigId": model["id"], "title": "kept"})
    chat = Chat(api, upstream, alice, model, session["id"])
    assert (await chat.stream("remember me")).types()[-1] == "complete"
    assert (config.data_dir / "app.db-wal").stat().st_size > 0  # the live data is in the WAL
    target = tmp_path / "backups" / "app-copy.db"
    target.parent.mkdir()

    async def writes() -> None:
        for i in range(10):
            await api.ok("POST", "/api/sessions", alice,
                          json={"modelConfigId": model["id"], "title": f"during {i}"})

    # The copy runs on a thread while the app keeps writing: it is one snapshot.
    await asyncio.gather(asyncio.to_thread(backup, config, str(target)), writes())

    out = capsys.readouterr().out
    assert str(target) in out
    assert str(config.data_dir / "encryption_key") in out and "jwt_secret" in out
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with closing(sqlite3.connect(f"file:{target}?mode=ro", uri=True)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        users = [r[0] for r in copy.execute("SELECT username FROM users ORDER BY id")]
        models = copy.execute("SELECT id, api_key FROM model_configs").fetchall()
        titles = [r[0] for r in copy.execute("SELECT title FROM chat_sessions ORDER BY id")]
        messages = [r[0] for r in copy.execute("SELECT content FROM messages ORDER BY id")]
    assert users == ["admin", "alice"]
    cipher = KeyCipher((config.data_dir / "encryption_key").read_text().strip())
    assert [cipher.decrypt(key, model_aad(mid)) for mid, key in models] == [KEYS["alice"]]
    assert titles[0] == "kept" and titles[1:] == [f"during {i}" for i in range(len(titles) - 1)]
    assert messages == ["remember me", "Hello, world!"]
    # The app is unaffected.
    assert len(await api.ok("GET", "/api/users", admin)) >= 2


async def test_backup_refuses_an_existing_file(start, tmp_path):
    api = await start()
    await api.register("owner", "ownerpass1")
    target = tmp_path / "exists.db"
    target.write_bytes(b"precious")
    with pytest.raises(MaintenanceError, match="already exists"):
        backup(api.config, str(target))
    assert target.read_bytes() == b"precious"
    with pytest.raises(MaintenanceError, match="cannot create"):
        backup(api.config, str(tmp_path / "no-such-folder" / "x.db"))


# --- the commands, as an operator runs them ---

def run_server(config: Config, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in env_names() and k != "NEW_ENCRYPTION_KEY"}
    env.update({"DATABASE_URL": config.database_path, **env_extra})
    return subprocess.run([sys.executable, str(ROOT / "server.py"), "--env-file", "/nonexistent",
                           *args], env=env, capture_output=True, text=True, timeout=30)


async def test_server_py_backup_and_rotate_key(start, upstream, tmp_path):
    world = await build(start, upstream)
    old_key = (world.data_dir / "encryption_key").read_text().strip()
    target = tmp_path / "copy.db"

    result = run_server(world.config, "backup", str(target))
    assert result.returncode == 0, result.stderr
    assert "encryption_key" in result.stdout and target.is_file()
    with closing(sqlite3.connect(target)) as copy:
        assert copy.execute("SELECT COUNT(*) FROM model_configs").fetchone() == (3,)

    result = run_server(world.config, "rotate-key", NEW_ENCRYPTION_KEY=GIVEN_KEY)
    assert result.returncode == 0, result.stderr
    assert "Re-encrypted 3" in result.stdout and GIVEN_KEY not in result.stdout
    assert (world.data_dir / "encryption_key").read_text().strip() == GIVEN_KEY
    assert_rotated(world, old_key, GIVEN_KEY)

    result = run_server(world.config, "rotate-key", PORT="abc")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PORT" in lines[0]
    assert (world.data_dir / "encryption_key").read_text().strip() == GIVEN_KEY
