"""Open multipart uploads (crash cleanup) and the last event-to-outcome latency per key.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "open_uploads",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), sa.ForeignKey("sync_tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("bucket", sa.String(1024), nullable=False),
        sa.Column("upload_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_open_uploads_task_key", "open_uploads", ["task_id", "key"])
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("latency_ms", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("latency_ms")
    op.drop_table("open_uploads")
