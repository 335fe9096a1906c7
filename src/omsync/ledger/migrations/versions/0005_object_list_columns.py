"""Object lists as OMS writes them: each key's encoded form as its last event carried it, and
the object's size for skip lines.

``ledger.raw_key`` holds the key exactly as the last CreateSyncEvents sent it when that differs
from the decoded key (NULL: the key was sent as it is). ``outcome_log.size`` holds the size of
the object an outcome is about, when known.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("raw_key", sa.Text, nullable=True))
    with op.batch_alter_table("outcome_log") as batch:
        batch.add_column(sa.Column("size", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outcome_log") as batch:
        batch.drop_column("size")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("raw_key")
