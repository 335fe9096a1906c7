"""Initial schema: access keys, tokens, sync tasks, ledger, statistics, outcome log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OPEN = sa.text("state IN ('pending', 'inflight')")


def upgrade() -> None:
    op.create_table(
        "access_keys",
        sa.Column("access_key", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(1024), nullable=False, index=True),
        sa.Column("secret_enc", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "auth_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(1024), nullable=False, index=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "sync_tasks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("src_cloud_type", sa.String(32), nullable=False),
        sa.Column("src_region", sa.String(100), nullable=False),
        sa.Column("src_bucket", sa.String(1024), nullable=False),
        sa.Column("dst_cloud_type", sa.String(32), nullable=False),
        sa.Column("dst_region", sa.String(100), nullable=False),
        sa.Column("dst_bucket", sa.String(1024), nullable=False),
        sa.Column("credentials_enc", sa.Text, nullable=False),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("enable_metadata_migration", sa.Boolean, nullable=False),
        sa.Column("enable_restore", sa.Boolean, nullable=False),
        sa.Column("enable_kms", sa.Boolean, nullable=False),
        sa.Column("dst_storage_policy", sa.String(32), nullable=True),
        sa.Column("app_id", sa.String(255), nullable=True),
        sa.Column("source_cdn", sa.Text, nullable=True),
        sa.Column("options", sa.Text, nullable=False, server_default="{}"),
        sa.Column("consistency_check", sa.String(32), nullable=False),
        sa.Column("object_overwrite_mode", sa.String(64), nullable=False),
        sa.Column("create_time", sa.BigInteger, nullable=False),
        sa.Column("last_start_time", sa.BigInteger, nullable=False),
        sa.Column("pending_keys", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_sync_tasks_project", "sync_tasks", ["project_id", "create_time"])
    op.create_table(
        "ledger",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), sa.ForeignKey("sync_tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("reported_generation", sa.BigInteger, nullable=False),
        sa.Column("copied_generation", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("due_at", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("pending_since", sa.BigInteger, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("task_id", "key", name="uq_ledger_task_key"),
    )
    op.create_index("ix_ledger_due", "ledger", ["due_at"], sqlite_where=OPEN, postgresql_where=OPEN)
    op.create_index("ix_ledger_task_state", "ledger", ["task_id", "state"])
    op.create_table(
        "stat_buckets",
        sa.Column("task_id", sa.String(64), sa.ForeignKey("sync_tasks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("bucket_start", sa.BigInteger, primary_key=True),
        sa.Column("request", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("success", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("failure", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("skip", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("size", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "outcome_log",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), sa.ForeignKey("sync_tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_outcome_log_task", "outcome_log", ["task_id", "id"])


def downgrade() -> None:
    for name in ("outcome_log", "stat_buckets", "ledger", "sync_tasks", "auth_tokens", "access_keys"):
        op.drop_table(name)
