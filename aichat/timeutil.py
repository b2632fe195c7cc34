"""ISO 8601 UTC timestamps with milliseconds and Z, the one format the API speaks."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime) -> str:
    """`moment` in UTC as YYYY-MM-DDTHH:MM:SS.mmmZ (four-digit year even before 1000, which
    strftime's %Y does not pad). Raises OverflowError for instants outside years 1-9999 UTC."""
    m = moment.astimezone(UTC)
    return (f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:"
            f"{m.second:02d}.{m.microsecond // 1000:03d}Z")


def now_iso() -> str:
    return iso(datetime.now(UTC))


class Clock:
    """The time the quotas see (docs/api.md §9): now, unless a test has `set` another."""

    def __init__(self) -> None:
        self._fixed: datetime | None = None

    def now(self) -> datetime:
        return self._fixed if self._fixed is not None else datetime.now(UTC)

    def set(self, moment: datetime | None) -> None:
        self._fixed = moment
