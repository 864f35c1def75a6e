"""Retention of raw telemetry and dead letters.

Raw fixes, device events and check-ins are kept while the case they belong to is open
and for `retention` (default 5 years) after it closes. A row is *protected* when it
falls in an assignment interval ``[assigned_at, unassigned_at)`` of its device whose
case is active or closed less than `retention` ago; every other row older than
``now - retention`` is removed (rows outside any protected interval: devices of cases
closed long ago, or unassigned devices).

On TimescaleDB, a 1-day chunk older than the cutoff that holds no protected row is
dropped whole (`drop_chunks` with both bounds, so exactly that chunk); rows in the
remaining old chunks are removed with DELETE. Plain PostgreSQL: DELETE only. Dead
letters go after `dead_letter_retention` (default 90 days). Runs inside the caller's
transaction (the caller records the run in the audit log in the same transaction).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

TELEMETRY_TABLES = ("fixes", "device_events", "checkins")


@dataclass(slots=True)
class RetentionResult:
    cutoff: datetime
    chunks_dropped: dict[str, int] = field(default_factory=dict)
    rows_deleted: dict[str, int] = field(default_factory=dict)
    dead_letters_deleted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "chunks_dropped": self.chunks_dropped,
            "rows_deleted": self.rows_deleted,
            "dead_letters_deleted": self.dead_letters_deleted,
        }


def _has_timescale(conn: Conn) -> bool:
    return conn.execute(
        "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone() is not None


# Assignment intervals that keep their device's rows: case open or closed recently.
_PROTECTED = """
CREATE TEMP TABLE retention_protected ON COMMIT DROP AS
SELECT a.device_id, a.assigned_at AS lo, coalesce(a.unassigned_at, 'infinity') AS hi
FROM device_assignments a JOIN cases c ON c.id = a.case_id
WHERE c.status = 'active' OR c.closed_at IS NULL
   OR c.closed_at > %(now)s - make_interval(years => %(years)s, days => %(days)s)
"""


def _protected_exists(table: str, alias: str = "t") -> str:
    return (f"EXISTS (SELECT 1 FROM retention_protected p WHERE p.device_id = {alias}.device_id"
            f" AND {alias}.ts >= p.lo AND {alias}.ts < p.hi)")


def apply_retention(
    conn: Conn,
    *,
    now: datetime,
    retention_years: int = 5,
    retention_extra_days: int = 0,
    dead_letter_retention: timedelta = timedelta(days=90),
    use_drop_chunks: bool | None = None,
) -> RetentionResult:
    """Remove what is past retention (see the module doc); never commits."""
    params = {"now": now, "years": retention_years, "days": retention_extra_days}
    cutoff = conn.execute(
        "SELECT %(now)s::timestamptz - make_interval(years => %(years)s, days => %(days)s)",
        params,
    ).fetchone()[0]  # type: ignore[index]
    res = RetentionResult(cutoff=cutoff)
    conn.execute("DROP TABLE IF EXISTS retention_protected")
    conn.execute(_PROTECTED, params)
    conn.execute("CREATE INDEX ON retention_protected (device_id, lo)")
    conn.execute("ANALYZE retention_protected")
    timescale = _has_timescale(conn) if use_drop_chunks is None else use_drop_chunks
    for table in TELEMETRY_TABLES:
        dropped = 0
        if timescale:
            chunks = conn.execute(
                "SELECT range_start, range_end FROM timescaledb_information.chunks"
                " WHERE hypertable_schema = current_schema() AND hypertable_name = %s"
                " AND range_end <= %s ORDER BY range_start",
                (table, cutoff),
            ).fetchall()
            for lo, hi in chunks:
                busy = conn.execute(
                    f"SELECT 1 FROM {table} t WHERE t.ts >= %s AND t.ts < %s"
                    f" AND {_protected_exists(table)} LIMIT 1",
                    (lo, hi),
                ).fetchone()
                if busy is None:
                    conn.execute(
                        "SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz,"
                        " newer_than => %s::timestamptz)",
                        (table, hi, lo),
                    )
                    dropped += 1
            res.chunks_dropped[table] = dropped
        deleted = conn.execute(
            f"DELETE FROM {table} t WHERE t.ts < %s AND NOT {_protected_exists(table)}",
            (cutoff,),
        ).rowcount
        res.rows_deleted[table] = max(0, deleted)
    res.dead_letters_deleted = max(0, conn.execute(
        "DELETE FROM dead_letters WHERE received_at < %s", (now - dead_letter_retention,)
    ).rowcount)
    conn.execute("DROP TABLE IF EXISTS retention_protected")
    log.info("retention: %s", res.as_dict())
    return res
