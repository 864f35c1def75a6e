"""Database engine, sessions and raw psycopg connections (one place for URLs)."""

from __future__ import annotations

from functools import lru_cache

import psycopg
from sqlalchemy import Engine
from sqlmodel import create_engine


def sqlalchemy_url(url: str) -> str:
    """`postgresql://…` → the SQLAlchemy URL for psycopg 3."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def libpq_url(url: str) -> str:
    """Any of our accepted URL spellings → a libpq URL for psycopg.connect."""
    return "postgresql://" + sqlalchemy_url(url)[len("postgresql+psycopg://"):]


@lru_cache(maxsize=8)
def get_engine(url: str, pool_size: int = 10) -> Engine:
    """One pooled engine per URL per process."""
    return create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=20,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A raw psycopg connection (ingestion COPY, set-based jobs)."""
    return psycopg.connect(libpq_url(url), autocommit=autocommit)


def has_timescaledb(conn: psycopg.Connection) -> bool:
    """Whether the timescaledb extension is installed in this database."""
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None
