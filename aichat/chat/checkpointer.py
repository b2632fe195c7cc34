"""Checkpointing running rounds: one write a second for all of them, never one per token."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aichat.store import checkpoints
from aichat.store.db import Database

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(self, db: Database, registry: Any, interval_s: float) -> None:
        self._db = db
        self._registry = registry
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="round-checkpointer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.flush()
            except Exception:  # a full disk must not end checkpointing for good
                log.exception("could not checkpoint running rounds")

    async def flush(self) -> int:
        """Save every running round whose text grew since its last checkpoint."""
        rows = [row for round_ in self._registry.rounds()
                if (row := round_.checkpoint_row()) is not None]
        if rows:
            cluster = self._registry.cluster
            await self._db.run(checkpoints.save, rows, cluster.instance if cluster else 0)
        return len(rows)
