"""What the engine needs to get stores for a task; :class:`~omsync.engine.factory.StoreFactory`
is the implementation, tests may supply in-memory ones."""

from __future__ import annotations

from typing import Protocol

from omsync.domain.model import TaskSpec
from omsync.stores.base import ObjectStore


class StoreProvider(Protocol):
    """Stores for the two sides of a task.

    Both methods raise ``StoreError`` (e.g. INVALID ``invalid_endpoint``) when the side cannot
    be reached as configured. When source and destination share endpoint and credentials the
    *same* store object is returned for both, which is how the copier knows a server-side copy
    is possible.
    """

    async def source(self, spec: TaskSpec) -> ObjectStore: ...

    async def destination(self, spec: TaskSpec) -> ObjectStore: ...
