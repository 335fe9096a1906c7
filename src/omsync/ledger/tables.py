"""Table definitions. The schema itself is created by the Alembic migrations next to this file;
these objects describe it for queries."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from omsync.domain.stats import LATENCY_COLUMNS

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY, PostgreSQL wants BIGINT for big ledgers.
Id = BigInteger().with_variant(Integer(), "sqlite")

access_keys = Table(
    "access_keys",
    metadata,
    Column("access_key", String(64), primary_key=True),
    Column("project_id", String(1024), nullable=False, index=True),
    Column("secret_enc", Text, nullable=False),  # the SK, encrypted: HMAC verification needs it
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

auth_tokens = Table(
    "auth_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 of the token; the token is never stored
    Column("project_id", String(1024), nullable=False, index=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

sync_tasks = Table(
    "sync_tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("project_id", String(1024), nullable=False),
    Column("status", String(16), nullable=False),
    Column("src_cloud_type", String(32), nullable=False),
    Column("src_region", String(100), nullable=False),
    Column("src_bucket", String(1024), nullable=False),
    Column("dst_cloud_type", String(32), nullable=False),
    Column("dst_region", String(100), nullable=False),
    Column("dst_bucket", String(1024), nullable=False),
    Column("credentials_enc", Text, nullable=False),  # Fernet token of {src_ak, src_sk, dst_ak, dst_sk}
    Column("description", String(255), nullable=True),
    Column("enable_metadata_migration", Boolean, nullable=False),
    Column("enable_restore", Boolean, nullable=False),
    Column("enable_kms", Boolean, nullable=False),
    Column("dst_storage_policy", String(32), nullable=True),
    Column("app_id", String(255), nullable=True),
    Column("source_cdn", Text, nullable=True),  # JSON of the non-secret CDN fields
    Column("options", Text, nullable=False, server_default="{}"),  # JSON: crypto types, kms ids
    Column("consistency_check", String(32), nullable=False),
    Column("object_overwrite_mode", String(64), nullable=False),
    Column("create_time", BigInteger, nullable=False),
    Column("last_start_time", BigInteger, nullable=False),
    Column("pending_keys", BigInteger, nullable=False, server_default="0"),
    # Throttles (omsync.domain.model.TaskLimits); NULL is unlimited.
    Column("max_concurrency", Integer, nullable=True),
    Column("max_objects_per_second", Float, nullable=True),
    Column("max_bytes_per_second", BigInteger, nullable=True),
    Index("ix_sync_tasks_project", "project_id", "create_time"),
)

# One row per (task, key): the queue and the record of every key's state (design §3).
ledger = Table(
    "ledger",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", String(64), ForeignKey("sync_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("key", LargeBinary, nullable=False),  # UTF-8 bytes of the object key, exact
    # The key as the last event sent it (URL-encoded), when that differs from ``key``; NULL:
    # sent as it is. Written into the failed object list as OMS does.
    Column("raw_key", Text, nullable=True),
    Column("generation", BigInteger, nullable=False),  # accepted occurrences so far
    Column("reported_generation", BigInteger, nullable=False),  # occurrences already given an outcome
    Column("copied_generation", BigInteger, nullable=False, server_default="0"),
    Column("state", String(16), nullable=False),  # pending | inflight | done | failed
    Column("due_at", BigInteger, nullable=False),  # ms: next attempt (pending) or lease expiry (inflight)
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(64), nullable=True),
    Column("pending_since", BigInteger, nullable=True),  # ms of the oldest unaccounted occurrence
    Column("outcome", String(16), nullable=True),
    Column("reason", String(64), nullable=True),
    Column("message", Text, nullable=True),
    Column("size", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("task_id", "key", name="uq_ledger_task_key"),
    # The claim's index: each task's open keys in due order (a claim picks per task, fairly).
    Index(
        "ix_ledger_task_due",
        "task_id",
        "due_at",
        sqlite_where=text("state IN ('pending', 'inflight')"),
        postgresql_where=text("state IN ('pending', 'inflight')"),
    ),
    Index("ix_ledger_task_state", "task_id", "state"),
)

# Outcome counts in 5-minute buckets, updated in the same transaction as the outcome.
stat_buckets = Table(
    "stat_buckets",
    metadata,
    Column("task_id", String(64), ForeignKey("sync_tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("bucket_start", BigInteger, primary_key=True),  # ms, multiple of 300,000
    Column("request", BigInteger, nullable=False, server_default="0"),
    Column("success", BigInteger, nullable=False, server_default="0"),
    Column("failure", BigInteger, nullable=False, server_default="0"),
    Column("skip", BigInteger, nullable=False, server_default="0"),
    Column("size", BigInteger, nullable=False, server_default="0"),
    # Histogram of event-to-outcome latency of final outcomes: lat_<i> counts those at most
    # LATENCY_BOUNDS_MS[i]; the last column counts the rest.
    *(Column(name, BigInteger, nullable=False, server_default="0") for name in LATENCY_COLUMNS),
)

# Final outcomes waiting to be written into the destination's object lists.
outcome_log = Table(
    "outcome_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", String(64), ForeignKey("sync_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("message", Text, nullable=True),
    Column("size", BigInteger, nullable=True),  # the object's size, when the outcome knows it
    Column("at", BigInteger, nullable=False),
    Index("ix_outcome_log_task", "task_id", "id"),
)

# Multipart uploads a copy has started and not yet completed or aborted. A process killed
# mid-copy leaves its row behind; whoever copies the key next aborts the orphan first.
open_uploads = Table(
    "open_uploads",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", String(64), ForeignKey("sync_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("bucket", String(1024), nullable=False),
    Column("upload_id", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_open_uploads_task_key", "task_id", "key"),
)

# Dashboard sessions ended by logout (omsync.web.session): a session id listed here is refused
# until its expiry, after which the row may be dropped.
revoked_sessions = Table(
    "revoked_sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),  # sha256 of the session's id
    Column("expires_at", BigInteger, nullable=False),  # seconds since the epoch
    Index("ix_revoked_sessions_expires", "expires_at"),
)
