"""Native change notifications: webhook secrets, per-key sequencers, pending deletes.

``notify_webhooks`` holds the sha256 of each task's webhook secret, ``notify_sequencers`` the
highest sequencer seen per (task, key), ``notify_deletes`` the deletes waiting for their grace
delay (leased by workers), ``notify_delete_state`` the per-task breaker and counters, and
``notify_delete_log`` delete outcomes waiting for the object lists.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _task_fk() -> sa.ForeignKey:
    return sa.ForeignKey("sync_tasks.id", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "notify_webhooks",
        sa.Column("task_id", sa.String(64), _task_fk(), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "notify_sequencers",
        sa.Column("task_id", sa.String(64), _task_fk(), primary_key=True),
        sa.Column("key", sa.LargeBinary, primary_key=True),
        sa.Column("sequencer", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "notify_deletes",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), _task_fk(), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("sequencer", sa.String(64), nullable=True),
        sa.Column("generation", sa.Integer, nullable=False, server_default="1"),
        sa.Column("due_at", sa.BigInteger, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("task_id", "key", name="uq_notify_deletes_task_key"),
    )
    op.create_index("ix_notify_deletes_due", "notify_deletes", ["due_at"])
    op.create_table(
        "notify_delete_state",
        sa.Column("task_id", sa.String(64), _task_fk(), primary_key=True),
        sa.Column("window_start", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("window_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tripped_at", sa.BigInteger, nullable=True),
        sa.Column("tripped_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("deleted", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("kept", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("failed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("discarded", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "notify_delete_log",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), _task_fk(), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_notify_delete_log_task", "notify_delete_log", ["task_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_notify_delete_log_task", table_name="notify_delete_log")
    op.drop_table("notify_delete_log")
    op.drop_table("notify_delete_state")
    op.drop_index("ix_notify_deletes_due", table_name="notify_deletes")
    op.drop_table("notify_deletes")
    op.drop_table("notify_sequencers")
    op.drop_table("notify_webhooks")
