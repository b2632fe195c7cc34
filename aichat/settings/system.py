"""System settings: typed values from the system_settings table, else the environment default.

Which settings these are, their kinds and ranges: the rows of aichat.settings.table marked
`runtime`; PUT /api/settings/system checks them with aichat.http.bodies.SYSTEM_SETTINGS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aichat.settings.config import Config
from aichat.settings.table import BY_KEY, RUNTIME, Setting, runtime_default
from aichat.store import settings as store
from aichat.store.db import Database, Reader
from aichat.upstream import netpolicy


def _from_text(row: Setting, raw: str) -> Any:
    """A stored value, or None when it is unusable (then the default applies)."""
    if row.kind == "bool":
        return {"true": True, "false": False}.get(raw.strip().lower())
    if row.kind == "int":
        text = raw.strip()
        return int(text) if text.isascii() and text.isdigit() and len(text) < 12 else None
    if row.kind == "choice":
        return raw if raw in row.choices else None
    return raw


def _to_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def resolve(config: Config, stored: dict[str, str]) -> dict[str, Any]:
    values = {}
    for row in RUNTIME:
        value = _from_text(row, stored[row.key]) if row.key in stored else None
        values[row.key] = runtime_default(row, config) if value is None else value
    return values


async def load(db: Reader, config: Config) -> dict[str, Any]:
    return resolve(config, await store.system_values(db))


def to_stored(values: dict[str, Any]) -> dict[str, str]:
    """Checked values of a partial update (aichat.http.bodies.SYSTEM_SETTINGS) as stored text;
    None (absent or null) leaves a setting as it is."""
    return {key: _to_text(value) for key, value in values.items() if value is not None}


async def seed(db: Database, config: Config) -> None:
    """Store registration_enabled's value by APP_MODE unless one is stored: an admin's choice
    survives restarts."""
    value = runtime_default(BY_KEY["registration_enabled"], config)
    async with db.transaction() as tx:
        await store.insert_system_default(tx, "registration_enabled", _to_text(value))


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """The run-time settings a round uses, read fresh for every round."""

    heartbeat_s: float
    max_idle_s: float | None
    timeout_s: float
    usage_emit: bool
    usage_provider_only: bool
    policy: netpolicy.NetPolicy
    max_streams: int
    max_reply_chars: int
    max_line_bytes: int


def stream_settings(config: Config, values: dict[str, Any]) -> StreamSettings:
    idle = values["provider_max_idle_ms"]
    return StreamSettings(
        heartbeat_s=max(config.heartbeat_floor_ms, values["sse_heartbeat_interval_ms"]) / 1000,
        max_idle_s=idle / 1000 if idle > 0 else None,
        timeout_s=values["provider_timeout_ms"] / 1000,
        usage_emit=values["usage_emit"],
        usage_provider_only=values["usage_provider_only"],
        policy=netpolicy.NetPolicy.from_settings(values["upstream_url_policy"],
                                                 values["upstream_allowlist"]),
        max_streams=values["max_concurrent_streams"],
        max_reply_chars=values["max_reply_chars"],
        max_line_bytes=config.max_upstream_line_bytes,
    )
