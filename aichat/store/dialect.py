"""The one place SQLite and PostgreSQL SQL differ at run time.

Store queries are SQLite's dialect restricted to what PostgreSQL also accepts, with two
exceptions rewritten here for PostgreSQL: `?` placeholders become `$1, $2, ...`, and `NOW`
(the current time as ISO-8601 text, the form every timestamp column holds on both) becomes
the schema's `aichat_now()` (sql/postgres/001_init.sql). Everything else that differs (the
schema, advisory locks, LISTEN/NOTIFY) lives in PostgreSQL-only modules and migrations.
"""

from __future__ import annotations

import functools

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
POSTGRES_NOW = "aichat_now()"


@functools.lru_cache(maxsize=2048)  # queries come from code, not from clients: a bounded set
def postgres(sql: str) -> str:
    """`sql` for PostgreSQL; `?` inside quotes ('text', "name") is left alone."""
    sql = sql.replace(NOW, POSTGRES_NOW)
    out, number, quote = [], 0, ""
    for char in sql:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "?":
            number += 1
            out.append(f"${number}")
            continue
        out.append(char)
    return "".join(out)
