"""The durable ledger: tables, queries (accept, claim, finish) and migrations."""

from omsync.ledger.queue import BacklogFull, Claim, Ledger, TaskNotFound

__all__ = ["BacklogFull", "Claim", "Ledger", "TaskNotFound"]
