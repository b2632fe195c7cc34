"""The one build step setup.cfg cannot express: ship the top-level `sql/` migrations (SQLite's,
and PostgreSQL's in `sql/postgres/`) inside the package, as `aichat/sql/`, so an installed
wheel has its schema.

`sql/` stays the one source. An editable install copies nothing: it reads the checkout's
`sql/` directly (aichat/store/db.py looks in the package first, then in the checkout).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SQL_SOURCE = Path(__file__).resolve().parent / "sql"


class BuildWithMigrations(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        migrations = sorted(SQL_SOURCE.glob("[0-9][0-9][0-9]_*.sql"))
        if not migrations:
            raise SystemExit(f"no migrations in {SQL_SOURCE}: refusing to build a package "
                             "without its schema")
        target = Path(self.build_lib) / "aichat" / "sql"
        for folder in (target, target / "postgres"):
            self.mkpath(str(folder))
        for path in migrations:
            self.copy_file(str(path), str(target / path.name))
        for path in sorted((SQL_SOURCE / "postgres").glob("[0-9][0-9][0-9]_*.sql")):
            self.copy_file(str(path), str(target / "postgres" / path.name))


setup(cmdclass={"build_py": BuildWithMigrations})
