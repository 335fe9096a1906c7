"""Per-task limits (concurrency, objects/s, bytes/s) and the per-task due index of fair claims.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OPEN = sa.text("state IN ('pending', 'inflight')")


def upgrade() -> None:
    with op.batch_alter_table("sync_tasks") as batch:
        batch.add_column(sa.Column("max_concurrency", sa.Integer, nullable=True))
        batch.add_column(sa.Column("max_objects_per_second", sa.Float, nullable=True))
        batch.add_column(sa.Column("max_bytes_per_second", sa.BigInteger, nullable=True))
    op.create_index("ix_ledger_task_due", "ledger", ["task_id", "due_at"], sqlite_where=OPEN, postgresql_where=OPEN)
    op.drop_index("ix_ledger_due", table_name="ledger")


def downgrade() -> None:
    op.create_index("ix_ledger_due", "ledger", ["due_at"], sqlite_where=OPEN, postgresql_where=OPEN)
    op.drop_index("ix_ledger_task_due", table_name="ledger")
    with op.batch_alter_table("sync_tasks") as batch:
        batch.drop_column("max_bytes_per_second")
        batch.drop_column("max_objects_per_second")
        batch.drop_column("max_concurrency")
