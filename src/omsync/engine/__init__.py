"""The sync engine: claims keys from the ledger, copies them between stores, records outcomes.

Depends on ``domain``, ``ledger`` and the store port; never on the HTTP API.
"""
