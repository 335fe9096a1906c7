"""OMS migration tasks and their listing checkpoints.

A migration task is a ``sync_tasks`` row (so the ledger, claims, limits, retries and outcomes
apply unchanged) plus one ``migration_tasks`` row holding what only migrations have: the OMS
numeric id, the task type and what it lists, ``save_prefix``, the listing checkpoint and lease,
the numeric status and the run times.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "migration_tasks",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("sync_task_id", sa.String(64), sa.ForeignKey("sync_tasks.id", ondelete="CASCADE"),
                  nullable=False, unique=True),
        sa.Column("project_id", sa.String(1024), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("task_type", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("sources", sa.Text, nullable=False),
        sa.Column("list_file", sa.Text, nullable=True),
        sa.Column("save_prefix", sa.Text, nullable=False, server_default=""),
        sa.Column("migrate_since", sa.BigInteger, nullable=True),
        sa.Column("bandwidth_policy", sa.Text, nullable=False, server_default="[]"),
        sa.Column("enable_failed_object_recording", sa.Boolean, nullable=False),
        sa.Column("group_id", sa.String(64), nullable=True),
        sa.Column("list_index", sa.Integer, nullable=False, server_default="0"),
        sa.Column("list_after", sa.LargeBinary, nullable=True),
        sa.Column("list_offset", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("list_done", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("list_owner", sa.String(64), nullable=True),
        sa.Column("list_lease_until", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("listed_num", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("listed_size", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("since_skipped_num", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_msg", sa.Text, nullable=True),
        sa.Column("create_time", sa.BigInteger, nullable=False),
        sa.Column("start_time", sa.BigInteger, nullable=True),
        sa.Column("end_time", sa.BigInteger, nullable=True),
        sa.Column("run_ms", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("run_started", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_migration_tasks_project", "migration_tasks", ["project_id", "create_time"])
    op.create_index("ix_migration_tasks_status", "migration_tasks", ["status"])


def downgrade() -> None:
    op.drop_index("ix_migration_tasks_status", table_name="migration_tasks")
    op.drop_index("ix_migration_tasks_project", table_name="migration_tasks")
    op.drop_table("migration_tasks")
