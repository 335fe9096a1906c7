"""Shared fixtures. Real servers are started once per session, on 127.0.0.1 free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures: one PostgreSQL per run)
from tests.servers import S3Server, start_moto, start_seaweedfs


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    """A moto S3 server (any credentials accepted)."""
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed_s3() -> Iterator[S3Server]:
    """A SeaweedFS ``weed mini`` S3 gateway that checks SigV4 against its credentials."""
    server = start_seaweedfs()
    try:
        yield server
    finally:
        server.stop()
