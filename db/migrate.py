"""Run the alembic migrations programmatically (`probation db upgrade`, `serve`, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database schema to `revision`."""
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The schema revision the database is at (None if unmigrated)."""
    from sqlalchemy import create_engine, pool, text

    from db.engine import sqlalchemy_url

    eng = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with eng.connect() as c:
            exists = c.execute(text("SELECT to_regclass('alembic_version')")).scalar()
            if exists is None:
                return None
            return c.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        eng.dispose()
