"""Starting and stopping the sync workers inside ``serve`` or as a standalone ``worker``."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from omsync import metrics
from omsync.composition import open_services, worker_parts
from omsync.config import Settings
from omsync.engine.deletes import DeletePropagator
from omsync.engine.factory import StoreFactory
from omsync.engine.migration import MigrationRunner, stop_quietly
from omsync.engine.reconcile import Reconciler
from omsync.engine.worker import Engine
from omsync.services import Services
from omsync.supervisor import WorkerProcesses, watch_wake_pipe

log = logging.getLogger("omsync.worker")


@dataclass
class WorkerRuntime:
    """A running engine bound to its services; ``stop`` drains within the shutdown deadline."""

    services: Services
    engine: Engine
    factory: StoreFactory
    shutdown_seconds: float = 20.0
    deletes: DeletePropagator | None = None  # delete propagation of native notifications
    migrations: MigrationRunner | None = None  # lists and settles migration tasks
    reconciler: Reconciler | None = None  # drives reconciliation runs of sync tasks

    async def stop(self) -> None:
        if self.reconciler is not None:
            await self.reconciler.stop()
        await stop_quietly(self.migrations)
        if self.deletes is not None:
            await self.deletes.stop()
        await self.engine.stop(self.shutdown_seconds)
        await self.factory.close()


async def start_workers(services: Services) -> WorkerRuntime:
    """Start the engine for ``services`` and subscribe it to event notifications."""
    # Load the S3 client (awscrt) now, not inside the first copy: it takes ~0.3 s of CPU.
    import omsync.stores.s3  # noqa: F401

    parts = worker_parts(services)  # built by the composition root
    factory, engine, deletes, migrations, reconciler = (parts.factory, parts.engine, parts.deletes, parts.migrations,
                                                        parts.reconciler)
    services.listeners.append(engine)
    await engine.start()
    await deletes.start()
    if services.settings.workers > 0:
        migrations.start()
        reconciler.start()
    return WorkerRuntime(services, engine, factory, shutdown_seconds=services.settings.shutdown_seconds,
                         deletes=deletes, migrations=migrations, reconciler=reconciler)


class _ProcessRuntime:
    """Copy worker processes of ``serve``, woken by the API's event commits."""

    def __init__(self, services: Services, processes: WorkerProcesses) -> None:
        self.services = services
        self.processes = processes

    async def stop(self) -> None:
        if self.processes in self.services.listeners:
            self.services.listeners.remove(self.processes)
        await self.processes.stop(self.services.settings.shutdown_seconds)


async def start_copying(services: Services) -> WorkerRuntime | _ProcessRuntime:
    """Start copying for ``serve``: in ``settings.copy_processes`` worker processes beside this
    one, or in this process when that is 0. The result's ``stop()`` drains it."""
    count = services.settings.copy_processes
    if count == 0:
        return await start_workers(services)
    processes = WorkerProcesses(services.settings, count)
    await processes.start()
    services.listeners.append(processes)
    return _ProcessRuntime(services, processes)


async def run_worker_until_signalled(settings: Settings, signals: Iterable[signal.Signals]) -> None:
    """Run workers until one of ``signals`` arrives, then stop claiming and drain gracefully."""
    services = await open_services(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    runtime = await start_workers(services)
    # A child of ``serve``: woken through its pipe, and stopped when the API process is gone.
    watch_wake_pipe(loop, runtime.engine.notify, stop.set)
    log.info("worker started with %d copy slots", settings.workers)
    publisher = (asyncio.create_task(_publish_slots(services.gauges), name="omsync-slot-metrics")
                 if metrics.MULTIPROCESS else None)
    try:
        await stop.wait()
        log.info("stopping: finishing in-flight copies")
    finally:
        if publisher is not None:
            publisher.cancel()
        await runtime.stop()
        await services.close()


async def _publish_slots(gauges: metrics.ProcessGauges) -> None:
    """Multiprocess metrics: this worker's slots and in-flight keys, every second."""
    while True:
        try:
            gauges.publish_slots()
        except Exception:
            log.debug("publishing slot metrics failed", exc_info=True)
        await asyncio.sleep(1.0)
