"""Alembic environment: migrations are hand-written SQL (Timescale DDL needs it)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from db.engine import sqlalchemy_url

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no database URL given to alembic")

engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
