"""System settings: typed values from the system_settings table, else the environment default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from aichat.upstream import netpolicy
from aichat.settings.config import Config
from aichat.http.errors import ApiError
from aichat.store import settings as store
from aichat.store.db import Database, Reader


@dataclass(frozen=True, slots=True)
class Spec:
    kind: str  # "bool", "int", "text" or "choice"
    default: Callable[[Config], Any]
    lo: int = 0
    hi: int = 0
    choices: tuple[str, ...] = ()
    check: Callable[[str], Any] | None = None  # extra validation of a text value


SPECS: dict[str, Spec] = {
    "registration_enabled": Spec("bool", lambda c: c.app_mode == "multi"),
    "brand_text": Spec("text", lambda c: "AIChat", 1, 40),
    "sse_heartbeat_interval_ms": Spec("int", lambda c: c.sse_heartbeat_interval_ms, 1000, 600000),
    "provider_max_idle_ms": Spec("int", lambda c: c.provider_max_idle_ms, 0, 3600000),
    "provider_timeout_ms": Spec("int", lambda c: c.provider_timeout_ms, 10000, 3600000),
    "usage_emit": Spec("bool", lambda c: c.usage_emit),
    "usage_provider_only": Spec("bool", lambda c: c.usage_provider_only),
    "upstream_url_policy": Spec("choice", lambda c: c.upstream_url_policy or (
        "public_only" if c.app_mode == "multi" else "any"), choices=netpolicy.POLICIES),
    "upstream_allowlist": Spec("text", lambda c: c.upstream_allowlist, 0, 2000,
                               check=netpolicy.parse_allowlist),
    "max_concurrent_streams": Spec("int", lambda c: c.max_concurrent_streams, 1, 10000),
}


def _from_text(spec: Spec, raw: str) -> Any:
    """A stored value, or None when it is unusable (then the default applies)."""
    if spec.kind == "bool":
        return {"true": True, "false": False}.get(raw.strip().lower())
    if spec.kind == "int":
        text = raw.strip()
        return int(text) if text.isascii() and text.isdigit() and len(text) < 12 else None
    if spec.kind == "choice":
        return raw if raw in spec.choices else None
    return raw


def _to_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def resolve(config: Config, stored: dict[str, str]) -> dict[str, Any]:
    values = {}
    for key, spec in SPECS.items():
        value = _from_text(spec, stored[key]) if key in stored else None
        values[key] = spec.default(config) if value is None else value
    return values


async def load(db: Reader, config: Config) -> dict[str, Any]:
    return resolve(config, await store.system_values(db))


def validate_update(body: dict[str, Any]) -> dict[str, str]:
    """Known keys from a partial update, checked and turned into stored text; others ignored."""
    updates = {}
    for key, spec in SPECS.items():
        value = body.get(key)
        if value is None:  # absent or null: left as it is
            continue
        if spec.kind == "bool" and not isinstance(value, bool):
            raise ApiError(400, f"{key} must be true or false")
        if spec.kind == "int" and (type(value) is not int or not spec.lo <= value <= spec.hi):
            raise ApiError(400, f"{key} must be an integer from {spec.lo} to {spec.hi}")
        if spec.kind == "choice" and value not in spec.choices:
            raise ApiError(400, f"{key} must be one of: {', '.join(spec.choices)}")
        if spec.kind == "text":
            if not isinstance(value, str) or not spec.lo <= len(value) <= spec.hi or (
                    spec.lo > 0 and not value.strip()):
                blank = " and not blank" if spec.lo > 0 else ""
                raise ApiError(400, f"{key} must be {spec.lo}-{spec.hi} characters{blank}")
            if spec.check is not None:
                try:
                    spec.check(value)
                except ValueError as e:
                    raise ApiError(400, f"{key}: {e}") from None
        updates[key] = _to_text(value)
    return updates


async def seed(db: Database, config: Config) -> None:
    async with db.transaction() as tx:
        await store.insert_system_default(
            tx, "registration_enabled", "true" if config.app_mode == "multi" else "false")


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """The five streaming values, read fresh for every round."""

    heartbeat_s: float
    max_idle_s: float | None
    timeout_s: float
    usage_emit: bool
    usage_provider_only: bool
    policy: netpolicy.NetPolicy
    max_streams: int


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
    )
