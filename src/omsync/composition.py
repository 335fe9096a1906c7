"""The composition root: everything ``omsync serve`` and ``omsync worker`` run is built here
from :class:`~omsync.config.Settings`, and this is the only module that picks concrete
implementations.

- :func:`open_services`: the database (migrated), the ledger, the repositories, the secret box
  and the process's metric gauges (:class:`~omsync.metrics.ProcessGauges`);
- :func:`store_factory`: stores for task sides (S3 through provider profiles, Azure, local
  directories), each timed for the metrics. Whether a task's copies are server-side is decided
  there explicitly: both sides resolve to the same endpoint URL with the same credentials
  (:meth:`~omsync.engine.factory.StoreFactory.server_side`);
- :func:`build_engine`: the engine with its copier (copy limits), retry policy, throttles and
  restore handler, each given only the settings it uses;
- :func:`worker_parts`: what a worker process runs: the store factory, the engine, delete
  propagation, the migration-task runner and the reconciler (started by :mod:`omsync.runtime`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from omsync import metrics
from omsync.config import Settings
from omsync.db import Database
from omsync.engine.copier import Copier, CopyLimits
from omsync.engine.deletes import DeletePropagator
from omsync.engine.factory import StoreFactory
from omsync.engine.migration import MigrationRunner
from omsync.engine.ports import StoreProvider
from omsync.engine.reconcile import Reconciler
from omsync.engine.restore import RestoreHandler
from omsync.engine.retry import RetryPolicy
from omsync.engine.throttle import Throttles
from omsync.engine.worker import Engine, EngineConfig, new_owner_id
from omsync.ledger.migrate import upgrade
from omsync.ledger.migration_tasks import MigrationRepository
from omsync.ledger.queue import Ledger
from omsync.ledger.reconciliations import Reconciliations
from omsync.ledger.restores import Restores
from omsync.ledger.tasks import KeyRepository, TaskRepository
from omsync.secrets import SecretBox
from omsync.services import Services

__all__ = ["WorkerParts", "build_engine", "engine_config", "open_services", "store_factory", "worker_parts"]


async def open_services(settings: Settings, *, migrate: bool = True) -> Services:
    """Open the database (bringing its schema up to date when ``migrate``), the ledger and the
    repositories of one process."""
    url = settings.resolved_database_url
    if migrate:
        await asyncio.to_thread(upgrade, url)
    db = Database(url)
    box = SecretBox.from_settings(settings)
    return Services(
        settings=settings,
        db=db,
        box=box,
        ledger=Ledger(db, max_pending_per_task=settings.max_pending_per_task),
        tasks=TaskRepository(db, box, max_tasks_per_project=settings.max_tasks_per_project),
        keys=KeyRepository(db, box),
        gauges=metrics.ProcessGauges(),
        store_factory=store_factory,
    )


def store_factory(settings: Settings) -> StoreFactory:
    """The stores of task sides (``endpoints``, ``fs_roots``, ``store_timeout_seconds``, pool
    sizes from ``workers`` × ``part_concurrency``, ``server_side_copy``); close it after use."""
    return StoreFactory(settings)


def engine_config(settings: Settings) -> EngineConfig:
    """What the engine's loops read from the settings."""
    return EngineConfig(
        workers=settings.workers,
        lease_seconds=settings.lease_seconds,
        poll_interval_seconds=settings.poll_interval_seconds,
        object_list_interval_seconds=settings.object_list_interval_seconds,
    )


def build_engine(settings: Settings, services: Services, stores: StoreProvider, *, owner: str | None = None,
                 copier: Copier | None = None, retry: RetryPolicy | None = None,
                 object_lists: bool = True) -> Engine:
    """The copy engine over ``services``' ledger with ``stores``; ``copier`` and ``retry``
    (built from ``settings`` when not given) may be replaced, e.g. by tests with small limits."""
    owner = owner or new_owner_id()
    return Engine(
        engine_config(settings), services.db, services.ledger, services.tasks, stores,
        copier=copier or Copier(CopyLimits.from_settings(settings)),
        retry=retry or RetryPolicy.from_settings(settings),
        restorer=RestoreHandler(settings, Restores(services.db), owner),
        throttles=Throttles(),
        gauges=services.gauges,
        owner=owner,
        object_lists=object_lists,
    )


@dataclass
class WorkerParts:
    """What a worker process runs, built and not started."""

    factory: StoreFactory
    engine: Engine
    deletes: DeletePropagator
    migrations: MigrationRunner
    reconciler: Reconciler


def worker_parts(services: Services) -> WorkerParts:
    """The store factory, the engine, delete propagation, the migration-task runner and the
    reconciler of a worker process, sharing one store factory and one lease owner."""
    settings = services.settings
    factory = store_factory(settings)
    engine = build_engine(settings, services, factory)
    deletes = DeletePropagator(settings, services.db, services.tasks, factory, engine.owner)
    migrations = MigrationRunner(settings, MigrationRepository(services.db, services.box), services.tasks,
                                 factory, engine.owner, engine.notify)
    reconciler = Reconciler(settings, Reconciliations(services.db), services.ledger, services.tasks,
                            factory, engine.owner, engine.notify)
    return WorkerParts(factory=factory, engine=engine, deletes=deletes, migrations=migrations, reconciler=reconciler)
