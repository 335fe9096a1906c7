"""Reconciliation runs of sync tasks (status, counters, listing checkpoint and lease) and
per-task schedules of them (omsync.ledger.reconciliations).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COUNTERS = ("source_listed", "destination_listed", "missing", "differing", "extra", "enqueued")


def upgrade() -> None:
    op.create_table(
        "reconciliations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(64), sa.ForeignKey("sync_tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("project_id", sa.String(1024), nullable=False),
        sa.Column("prefix", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("position", sa.LargeBinary, nullable=True),
        *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in COUNTERS),
        sa.Column("report_parts", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("takeovers", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("finished_at", sa.BigInteger, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_reconciliations_task", "reconciliations", ["task_id", "started_at"])
    op.create_index("ix_reconciliations_status", "reconciliations", ["status"])
    op.create_table(
        "reconciliation_schedules",
        sa.Column("task_id", sa.String(64), sa.ForeignKey("sync_tasks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("project_id", sa.String(1024), nullable=False),
        sa.Column("prefix", sa.Text, nullable=False),
        sa.Column("interval_seconds", sa.BigInteger, nullable=False),
        sa.Column("next_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_reconciliation_schedules_next", "reconciliation_schedules", ["next_at"])


def downgrade() -> None:
    op.drop_index("ix_reconciliation_schedules_next", table_name="reconciliation_schedules")
    op.drop_table("reconciliation_schedules")
    op.drop_index("ix_reconciliations_status", table_name="reconciliations")
    op.drop_index("ix_reconciliations_task", table_name="reconciliations")
    op.drop_table("reconciliations")
