"""aichat.settings.table drives the rest: Config, the run-time settings and their checks, the
README's table and .env.example."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import pytest

from aichat.http.bodies import SYSTEM_SETTINGS
from aichat.http.errors import ApiError
from aichat.settings import docs, system, table
from aichat.settings.config import Config, ConfigError, read_dotenv

ROOT = Path(__file__).resolve().parent.parent
NOT_SETTINGS = {"max_json_body", "max_chat_body", "heartbeat_floor_ms", "checkpoint_interval_ms",
                "env_fields"}


def test_readme_table_is_current():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if docs.readme_table() not in readme:
        diff = difflib.unified_diff(readme.splitlines(), docs.with_table(readme).splitlines(),
                                    "README.md", "generated", lineterm="", n=0)
        pytest.fail("README.md's settings table is stale: run `.venv/bin/python -m "
                    "aichat.settings.docs --write README.md`\n" + "\n".join(diff))


def test_config_has_one_field_per_variable_row_with_its_default():
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    assert set(defaults) - NOT_SETTINGS == {row.key for row in table.FROM_ENV}
    for row in table.FROM_ENV:
        assert defaults[row.key] == row.default, row.key


def test_env_example_shows_the_defaults():
    assert Config.from_env(read_dotenv(ROOT / ".env.example")) == Config.from_env({})


def _edges(row: table.Setting) -> list[object]:
    if row.kind == "int":
        return [row.lo, row.hi]
    if row.kind == "bool":
        return [True, False]
    if row.kind == "choice":
        return list(row.choices)
    return ["", "10.0.0.0/8 nas.lan"]  # upstream_allowlist


@pytest.mark.parametrize("row", [r for r in table.RUNTIME if r.env], ids=lambda r: r.key)
def test_every_value_the_environment_accepts_can_be_written_back(row):
    """One range for both sources: the front end PUTs back what GET returned."""
    for value in _edges(row):
        raw = str(value).lower() if isinstance(value, bool) else str(value)
        values = system.resolve(Config.from_env({row.env[0]: raw}), {})
        assert SYSTEM_SETTINGS.parse(values)[row.key] == value
    if row.kind == "int":
        for outside in (row.lo - 1, row.hi + 1):
            with pytest.raises(ConfigError, match=row.env[0]):
                Config.from_env({row.env[0]: str(outside)})
            with pytest.raises(ApiError, match=row.key):
                SYSTEM_SETTINGS.parse({row.key: outside})


def test_allowlist_length_is_checked_from_the_environment_too():
    with pytest.raises(ConfigError, match="UPSTREAM_ALLOWLIST must be at most 2000"):
        Config.from_env({"UPSTREAM_ALLOWLIST": "a" * 2001})


def test_help_lists_every_variable_and_marks_the_run_time_ones():
    lines = docs.settings_help().splitlines()
    for row in table.FROM_ENV:
        line = next(line for line in lines if line.split()[0] == row.env[0])
        assert line.endswith(" *") == row.runtime, line


async def test_system_settings_are_the_run_time_rows(api):
    data = await api.ok("GET", "/api/settings/system", "admin")
    assert list(data) == [row.key for row in table.RUNTIME] + [
        "app_mode", "max_context_tokens", "sources"]
    assert list(data["sources"]) == [row.key for row in table.RUNTIME]
