"""Multi-process runs on PostgreSQL: fixtures for a fresh database and a cluster of processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.scale.cluster import Cluster


@pytest.fixture()
def make_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Cluster]]:
    """Build a :class:`Cluster` on this test's fresh PostgreSQL database (one database per test);
    every process it started is stopped afterwards, before the database is dropped."""
    database_url: str = request.getfixturevalue("postgres_url")
    made: list[Cluster] = []

    def make(endpoints: dict[str, str], **settings: str) -> Cluster:
        cluster = Cluster(root=tmp_path / f"cluster{len(made)}", database_url=database_url,
                          endpoints=endpoints, settings=settings)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
