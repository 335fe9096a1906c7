"""Archived-object restores and named data keys.

``kms_keys`` / ``kms_key_versions``: omsync's data keys for credentials sent encrypted (crypto
type ``KMS``), each version's material encrypted under the master key. ``restores``: the
RestoreObject requests of tasks with ``enable_restore``, per task and key.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kms_keys",
        sa.Column("key_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(1024), nullable=False),
        sa.Column("alias", sa.String(255), nullable=True),
        sa.Column("current_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("rotated_at", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("project_id", "alias", name="uq_kms_keys_project_alias"),
    )
    op.create_index("ix_kms_keys_project_id", "kms_keys", ["project_id"])
    op.create_table(
        "kms_key_versions",
        sa.Column("key_id", sa.String(36), sa.ForeignKey("kms_keys.key_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("material_enc", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "restores",
        sa.Column("task_id", sa.String(64), sa.ForeignKey("sync_tasks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.LargeBinary, primary_key=True),
        sa.Column("requested_at", sa.BigInteger, nullable=False),
        sa.Column("checks", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_check_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("restores")
    op.drop_table("kms_key_versions")
    op.drop_index("ix_kms_keys_project_id", table_name="kms_keys")
    op.drop_table("kms_keys")
