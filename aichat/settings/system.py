"""System settings: typed values from the system_settings table, else the environment default.

Which settings these are, their kinds and ranges: the rows of aichat.settings.table marked
`runtime`; PUT /api/settings/system checks them with aichat.http.bodies.SYSTEM_SETTINGS.

Every row of system_settings is an admin's choice: nothing is stored at start (sql/008), so a
value nobody chose follows the environment and APP_MODE, and deleting its row (PUT `null`)
returns it there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from aichat.settings.config import Config
from aichat.settings.table import RUNTIME, Setting, runtime_default
from aichat.store import prices
from aichat.store import settings as store
from aichat.store.db import Reader
from aichat.upstream import netpolicy

SOURCES = ("default", "env", "admin")  # where a value comes from, as GET names it


def _from_text(row: Setting, raw: str) -> Any:
    """A stored value, or None when it is unusable (then the default applies)."""
    if row.kind == "bool":
        return {"true": True, "false": False}.get(raw.strip().lower())
    if row.kind == "int":
        text = raw.strip()
        return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None
    if row.kind == "choice":
        return raw if raw in row.choices else None
    if row.kind == "money":
        try:
            value = float(raw)
        except ValueError:
            return None
        return int(value) if value.is_integer() else value
    return raw


def _to_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _resolved(config: Config, stored: dict[str, str]) -> Iterator[tuple[str, Any, str]]:
    """Each run-time setting's key, value and source: `admin` (a usable stored value), else
    `env` (its variable was set) or `default`."""
    for row in RUNTIME:
        value = _from_text(row, stored[row.key]) if row.key in stored else None
        if value is not None:
            yield row.key, value, "admin"
        else:
            source = "env" if row.key in config.env_fields else "default"
            yield row.key, runtime_default(row, config), source


def resolve(config: Config, stored: dict[str, str]) -> dict[str, Any]:
    return {key: value for key, value, _ in _resolved(config, stored)}


async def load(db: Reader, config: Config) -> dict[str, Any]:
    return resolve(config, await store.system_values(db))


async def load_with_sources(db: Reader, config: Config) -> tuple[dict[str, Any], dict[str, str]]:
    """The values and, by key, where each comes from (SOURCES)."""
    resolved = list(_resolved(config, await store.system_values(db)))
    return ({key: value for key, value, _ in resolved},
            {key: source for key, _, source in resolved})


def to_stored(values: dict[str, Any]) -> dict[str, str]:
    """Checked values of a partial update (aichat.http.bodies.SYSTEM_SETTINGS) as stored text;
    None (absent, or null: see `SYSTEM_SETTINGS.nulls`) stores nothing."""
    return {key: _to_text(value) for key, value in values.items() if value is not None}


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
    # The default limits (None: unlimited), docs/api.md §9; cost in billionths.
    requests_per_minute: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    cost_per_month_nanos: int | None = None
    currency: str = "USD"
    outlive_client: bool = True  # on_disconnect: a chat stream's round outlives its client


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
        requests_per_minute=values["default_requests_per_minute"],
        tokens_per_day=values["default_tokens_per_day"],
        tokens_per_month=values["default_tokens_per_month"],
        cost_per_month_nanos=_nanos(values["default_cost_per_month"]),
        currency=values["currency"],
        outlive_client=values["on_disconnect"] == "continue",
    )


def _nanos(amount: int | float | None) -> int | None:
    return None if amount is None else prices.to_micros(amount) * 1000
