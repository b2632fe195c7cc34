"""The audit log's retention: events older than the run-time setting `audit_retention_days`
are deleted at start and then hourly (docs/api.md, "Audit log").

`sweep` is a plain call (tests give it the moment); `audit_sweep_ctx` runs it in the
background for the app's lifetime (app.cleanup_ctx). With several instances on PostgreSQL
each sweeps; a sweep that finds nothing old costs one indexed read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import AsyncIterator

from aiohttp import web

from aichat.http.appkeys import clock_key, config_key, db_key
from aichat.settings import system as settings
from aichat.store import audit
from aichat.timeutil import iso

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 3600.0
BATCH_ROWS = 1000  # per transaction, so a long backlog never holds the writer for long


async def sweep(app: web.Application, now: datetime | None = None) -> int:
    """Delete the events older than the retention at `now` (default: the app's clock); the
    number deleted."""
    db = app[db_key]
    days = (await settings.load(db, app[config_key]))["audit_retention_days"]
    cutoff = iso((now or app[clock_key].now()) - timedelta(days=days))
    removed = 0
    while True:
        async with db.transaction() as tx:
            count = await audit.delete_before(tx, cutoff, BATCH_ROWS)
        removed += count
        if count < BATCH_ROWS:
            return removed


async def _sweep_hourly(app: web.Application) -> None:
    while True:
        try:
            removed = await sweep(app)
            if removed:
                log.info("audit log: deleted %d event(s) past the retention", removed)
        except Exception:  # the database away for a moment: the next hour tries again
            log.exception("audit log sweep failed")
        await asyncio.sleep(SWEEP_EVERY_S)


async def audit_sweep_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_sweep_hourly(app), name="audit sweep")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
