"""Starting and stopping the sync workers inside ``serve`` or as a standalone ``worker``."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from omsync.config import Settings
from omsync.engine.factory import StoreFactory
from omsync.engine.worker import Engine
from omsync.services import Services

log = logging.getLogger("omsync.worker")


@dataclass
class WorkerRuntime:
    """A running engine bound to its services; ``stop`` drains within the shutdown deadline."""

    services: Services
    engine: Engine
    factory: StoreFactory
    shutdown_seconds: float = 20.0

    async def stop(self) -> None:
        await self.engine.stop(self.shutdown_seconds)
        await self.factory.close()


async def start_workers(services: Services) -> WorkerRuntime:
    """Start the engine for ``services`` and subscribe it to event notifications."""
    factory = StoreFactory(services.settings)
    engine = Engine(services.settings, services.db, services.ledger, services.tasks, factory)
    services.listeners.append(engine)
    await engine.start()
    return WorkerRuntime(services, engine, factory, shutdown_seconds=services.settings.shutdown_seconds)


async def run_worker_until_signalled(settings: Settings, signals: Iterable[signal.Signals]) -> None:
    """Run workers until one of ``signals`` arrives, then stop claiming and drain gracefully."""
    services = await Services.open(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    runtime = await start_workers(services)
    log.info("worker started with %d copy slots", settings.workers)
    try:
        await stop.wait()
        log.info("stopping: finishing in-flight copies")
    finally:
        await runtime.stop()
        await services.close()
