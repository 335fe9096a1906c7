"""The composition root: builds database, repositories, stores and engine from Settings."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from omsync import metrics
from omsync.config import Settings
from omsync.db import Database
from omsync.engine.factory import StoreFactory
from omsync.ledger.migrate import upgrade
from omsync.ledger.queue import Ledger
from omsync.ledger.tasks import KeyRepository, TaskRepository
from omsync.secrets import SecretBox


class Notifier(Protocol):
    def notify(self) -> None: ...


@dataclass
class Services:
    """Everything a process needs, built once from Settings."""

    settings: Settings
    db: Database
    box: SecretBox
    ledger: Ledger
    tasks: TaskRepository
    keys: KeyRepository
    listeners: list[Notifier] = field(default_factory=list)
    _check_stores: StoreFactory | None = None

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = True) -> Services:
        """Open the database (bringing its schema up to date when ``migrate``) and repositories."""
        url = settings.resolved_database_url
        if migrate:
            await asyncio.to_thread(upgrade, url)
        db = Database(url)
        box = SecretBox.from_settings(settings)
        return cls(
            settings=settings,
            db=db,
            box=box,
            ledger=Ledger(db, max_pending_per_task=settings.max_pending_per_task),
            tasks=TaskRepository(db, box, max_tasks_per_project=settings.max_tasks_per_project),
            keys=KeyRepository(db, box),
        )

    async def redrive(self, task_id: str, keys: Sequence[str] | None = None) -> int:
        """Re-drive a task's failed keys (all, or those named): counted, then workers woken.
        Raises ``TaskNotFound``. Returns how many keys were re-driven."""
        count = await self.ledger.retry_failed(task_id, keys)
        metrics.keys_redriven(task_id, count)
        if count:
            self.work_arrived()
        return count

    def work_arrived(self) -> None:
        """Wake in-process workers after events were committed."""
        for listener in self.listeners:
            listener.notify()

    @property
    def check_stores(self) -> StoreFactory:
        """Stores the API uses to check a new task's buckets (built on first use)."""
        if self._check_stores is None:
            self._check_stores = StoreFactory(self.settings)
        return self._check_stores

    async def close(self) -> None:
        if self._check_stores is not None:
            await self._check_stores.close()
            self._check_stores = None
        await self.db.close()
