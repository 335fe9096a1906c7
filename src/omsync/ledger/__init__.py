"""The durable ledger: tables, queries (accept, claim, finish) and migrations."""

# kms_keys, notifications, reconciliations and restores define tables of their own: imported here so that
# ``tables.metadata`` describes the whole schema whichever ledger module is imported first.
from omsync.ledger import kms_keys, notifications, reconciliations, restores  # noqa: F401
from omsync.ledger.queue import BacklogFull, Claim, Ledger, TaskNotFound

__all__ = ["BacklogFull", "Claim", "Ledger", "TaskNotFound"]
