"""omsync: object-storage synchronization service, wire-compatible with the OMS v2 sync-task API."""

__version__ = "0.1.0"
