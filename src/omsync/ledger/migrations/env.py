"""Alembic environment: runs migrations on a synchronous connection to the configured URL."""

from alembic import context
from sqlalchemy import create_engine

from omsync.ledger.migrate import sync_url
from omsync.ledger.tables import metadata

config = context.config
url = sync_url(config.get_main_option("sqlalchemy.url"))
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
