"""Open multipart uploads (crash cleanup) and an event-to-outcome latency histogram per bucket.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

LATENCY_BINS = 13  # len(omsync.domain.stats.LATENCY_BOUNDS_MS) + 1, frozen for this revision
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
    with op.batch_alter_table("stat_buckets") as batch:
        for i in range(LATENCY_BINS):
            batch.add_column(sa.Column(f"lat_{i}", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("stat_buckets") as batch:
        for i in range(LATENCY_BINS):
            batch.drop_column(f"lat_{i}")
    op.drop_table("open_uploads")
