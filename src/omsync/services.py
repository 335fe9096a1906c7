"""The services of one process (database, ledger, repositories, metric gauges), as built by
the composition root, :mod:`omsync.composition`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from omsync import metrics
from omsync.config import Settings
from omsync.db import Database
from omsync.engine.factory import StoreFactory
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
    gauges: metrics.ProcessGauges
    # How stores are made for the API's bucket checks (the composition root's choice).
    store_factory: Callable[[Settings], StoreFactory]
    listeners: list[Notifier] = field(default_factory=list)

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = True) -> Services:
        """Open the database (bringing its schema up to date when ``migrate``) and repositories:
        :func:`omsync.composition.open_services`."""
        from omsync.composition import open_services

        return await open_services(settings, migrate=migrate)

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

    @contextlib.asynccontextmanager
    async def checking_stores(self) -> AsyncIterator[StoreFactory]:
        """Stores for one request's bucket checks (task creation, pre-checks), closed after it:
        such requests name any keys a caller likes, which must not pile up in a cache that
        lives as long as the process."""
        stores = self.store_factory(self.settings)
        try:
            yield stores
        finally:
            await stores.close()

    async def close(self) -> None:
        await self.db.close()
