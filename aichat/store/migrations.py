"""Where the numbered migrations live: `sql/` for SQLite, `sql/postgres/` for PostgreSQL.

Each backend applies the files of its folder not yet recorded in its `schema_version` table,
in order, each in its own transaction (store/sqlite.py, store/postgres.py).
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path


class MigrationsMissing(OSError):
    """The migration folder is missing, unreadable or empty: never start on a bare schema.

    An OSError, so the command line reports it like any other start-up failure (exit 1)."""


def _sql_dir() -> Path:
    """The migrations: `aichat/sql/` in an installed wheel (setup.py copies the top-level
    `sql/` there), else the checkout's top-level `sql/` (a checkout or an editable install)."""
    packaged = Path(str(importlib.resources.files("aichat").joinpath("sql")))
    checkout = Path(__file__).resolve().parent.parent.parent
    if packaged.is_dir() or not (checkout / "pyproject.toml").is_file():
        return packaged  # installed: a missing folder is reported under the package
    return checkout / "sql"


SQL_DIR = _sql_dir()
POSTGRES_DIR = SQL_DIR / "postgres"
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def migration_files(sql_dir: Path = SQL_DIR) -> list[tuple[int, Path]]:
    """The numbered migrations, in order; `MigrationsMissing` when there are none to read."""
    try:
        names = sorted(entry.name for entry in sql_dir.iterdir())
    except OSError as e:
        raise MigrationsMissing(f"cannot read the migration folder {sql_dir}: "
                                f"{e.strerror or e}") from e
    found = []
    for name in names:
        match = _MIGRATION_NAME.match(name)
        if match:
            found.append((int(match.group(1)), sql_dir / name))
    if not found:
        raise MigrationsMissing(f"no migrations (NNN_name.sql) in {sql_dir}")
    return found
