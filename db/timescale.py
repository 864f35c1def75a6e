"""TimescaleDB DDL: hypertables where the extension is there, plain tables + BRIN otherwise.

Called from migrations with a SQLAlchemy connection. Compression and
continuous aggregates need the Timescale License (`timescaledb.license =
timescale`, the production image); the Apache-only build gets hypertables only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

TELEMETRY_TABLES = ("fixes", "device_events", "checkins")


def _scalar(conn: Any, sql: str) -> Any:
    return conn.execute(text(sql)).scalar()


def enable_timescaledb(conn: Any) -> bool:
    """Create the extension if the server preloads it; True when it is usable."""
    preload = _scalar(conn, "SELECT current_setting('shared_preload_libraries', true)") or ""
    available = _scalar(
        conn, "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if "timescaledb" not in preload or not available:
        return False
    conn.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
    return True


def has_timescaledb(conn: Any) -> bool:
    return bool(_scalar(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"))


def license_is_timescale(conn: Any) -> bool:
    return _scalar(conn, "SELECT current_setting('timescaledb.license', true)") == "timescale"


def make_time_series(conn: Any, table: str, time_column: str = "ts") -> None:
    """A hypertable with 1-day chunks on TimescaleDB, else a BRIN index on time."""
    if has_timescaledb(conn):
        conn.execute(
            text(
                f"SELECT create_hypertable('{table}', by_range('{time_column}', INTERVAL '1 day'),"
                " if_not_exists => TRUE, migrate_data => TRUE)"
            )
        )
        if license_is_timescale(conn):
            conn.execute(
                text(
                    f"ALTER TABLE {table} SET (timescaledb.compress, "
                    f"timescaledb.compress_segmentby = 'device_id', "
                    f"timescaledb.compress_orderby = '{time_column} DESC')"
                )
            )
            conn.execute(
                text(f"SELECT add_compression_policy('{table}', INTERVAL '7 days', if_not_exists => TRUE)")
            )
    else:
        conn.execute(text(f"CREATE INDEX IF NOT EXISTS {table}_ts_brin ON {table} USING brin ({time_column})"))
