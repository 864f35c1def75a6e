"""Live positions: the newest fix of every case in scope, as ingestion stores it.

What the console's map follows instead of polling the caseload: every poll returns, per
case, its newest fix received since a point in time (bounded to recent fixes so that the
hypertable scans its newest chunks only).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from probation.cases.scope import CaseScope
from probation.tracks.models import LivePosition

#: Fixes older than this are not "live" (and the scan stays in the newest chunks).
RECENT_HOURS = 48

POSITIONS_SQL = """
SELECT DISTINCT ON (da.case_id) da.case_id, f.ts, f.lat, f.lon, f.acc, f.received_at
FROM device_assignments da
JOIN cases c ON c.id = da.case_id
JOIN fixes f ON f.device_id = da.device_id
WHERE da.unassigned_at IS NULL AND c.status = 'active' AND {scope}
  AND f.ts > now() - make_interval(hours => :recent_h) AND f.ts >= da.assigned_at
  AND f.received_at > :since
ORDER BY da.case_id, f.ts DESC
"""


def db_now(session: Session) -> datetime:
    """The database's clock (fix `received_at` is stamped by it)."""
    value: datetime = session.execute(text("SELECT now()")).scalar_one()
    return value


def positions_since(session: Session, *, scope: CaseScope, since: datetime) -> list[LivePosition]:
    """Per case in scope, its newest fix received after `since`."""
    sql = POSITIONS_SQL.format(scope=scope.sql("c.officer_id"))
    rows: list[Any] = list(session.execute(
        text(sql), {**scope.params, "since": since, "recent_h": RECENT_HOURS}).mappings())
    return [LivePosition(case_id=r["case_id"], ts=r["ts"], lat=r["lat"], lon=r["lon"],
                         acc=r["acc"]) for r in rows]
