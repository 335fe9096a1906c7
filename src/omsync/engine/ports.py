"""What the engine needs to get stores for a task; :class:`~omsync.engine.factory.StoreFactory`
is the implementation, tests may supply in-memory ones."""

from __future__ import annotations

from typing import Protocol

from omsync.domain.model import TaskSpec
from omsync.stores.base import ObjectStore


class StoreProvider(Protocol):
    """Stores for the two sides of a task.

    Every method raises ``StoreError`` (e.g. INVALID ``invalid_endpoint``) when a side cannot
    be reached as configured.
    """

    async def source(self, spec: TaskSpec) -> ObjectStore: ...

    async def destination(self, spec: TaskSpec) -> ObjectStore: ...

    def server_side(self, spec: TaskSpec) -> bool:
        """Whether the destination store can copy from the source bucket itself (same endpoint
        and credentials): then copies are server-side, else streamed."""
        ...
