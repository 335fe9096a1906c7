"""The ledger tests' fixtures (both database backends) for the notification tables."""

from tests.ledger.conftest import database_url, services  # noqa: F401
