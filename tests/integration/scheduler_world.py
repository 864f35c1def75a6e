"""Test data for the scheduler and check-in tests: users, cases, devices, zones, fixes (SQL)."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import psycopg

# Far from a test gateway's seqs (1, 2, …): the dedup key is (device, stream, seq), so a
# published fix reusing a seq stored here would be a duplicate.
_seq = itertools.count(1_000_000_000)

CURFEW = {"windows": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                       "start": "22:00", "end": "06:00"}]}
HOME = (43.238949, 76.889709)  # Almaty


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def offset(lat: float, lon: float, north_m: float = 0.0, east_m: float = 0.0) -> tuple[float, float]:
    import math

    return (lat + north_m / 111_195.0,
            lon + east_m / (111_195.0 * math.cos(math.radians(lat))))


class World:
    """Inserts rows directly (the API is another component); commits after each helper."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def _x(self, sql: str, params: Any = None) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        self.conn.commit()
        return row[0] if row else None

    def user(self, role: str = "officer", supervisor: uuid.UUID | None = None) -> uuid.UUID:
        uid = uuid.uuid4()
        return self._x(
            "INSERT INTO users (id, username, password_hash, role, supervisor_id)"
            " VALUES (%s, %s, 'x', %s, %s) RETURNING id",
            (uid, f"u{uid.hex[:10]}", role, supervisor),
        )

    def subject(self) -> uuid.UUID:
        sid = uuid.uuid4()
        iin = f"{random.randrange(10**11, 10**12):012d}"
        return self._x(
            "INSERT INTO subjects (id, iin, full_name, birth_date) VALUES (%s, %s, 'P', %s)"
            " RETURNING id", (sid, iin, date(1990, 1, 1)),
        )

    def case(
        self, *, officer: uuid.UUID | None = None, risk: str = "medium",
        tz: str = "Asia/Almaty", policy: dict[str, Any] | None = None,
        subject: uuid.UUID | None = None, status: str = "active",
        closed_at: datetime | None = None,
    ) -> uuid.UUID:
        return self._x(
            "INSERT INTO cases (id, subject_id, officer_id, court_order_ref, starts_on, ends_on,"
            " risk_level, timezone, checkin_policy, status, closed_at)"
            " VALUES (%s, %s, %s, 'ref', '2020-01-01', '2035-01-01', %s, %s, %s, %s, %s)"
            " RETURNING id",
            (uuid.uuid4(), subject or self.subject(), officer or self.user(), risk, tz,
             None if policy is None else orjson.dumps(policy).decode(), status, closed_at),
        )

    def device(
        self, *, kind: str = "bracelet", last_seen: datetime | None = None,
        last_fix_at: datetime | None = None, last_good_fix_at: datetime | None = None,
        trusted_biometrics: bool = False,
    ) -> uuid.UUID:
        did = uuid.uuid4()
        return self._x(
            "INSERT INTO devices (id, serial, kind, last_seen, last_fix_at, last_good_fix_at,"
            " trusted_biometrics) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (did, f"D{did.hex[:12]}", kind, last_seen, last_fix_at, last_good_fix_at,
             trusted_biometrics),
        )

    def serial(self, device: uuid.UUID) -> str:
        return self._x("SELECT serial FROM devices WHERE id = %s", (device,))

    def assign(self, device: uuid.UUID, case: uuid.UUID, at: datetime,
               until: datetime | None = None) -> None:
        self._x(
            "INSERT INTO device_assignments (id, device_id, case_id, assigned_at, unassigned_at)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (uuid.uuid4(), device, case, at, until),
        )

    def zone(
        self, case: uuid.UUID, *, kind: str = "inclusion", center: tuple[float, float] = HOME,
        radius_m: float = 100.0, schedule: dict[str, Any] | None = CURFEW,
        geometry: dict[str, Any] | None = None, exceptions: list[Any] | None = None,
    ) -> uuid.UUID:
        circle = None if geometry else {"center": [center[1], center[0]], "radius_m": radius_m}
        zid = self._x(
            "INSERT INTO zones (id, name, kind, geometry, circle, schedule, exceptions)"
            " VALUES (%s, 'home', %s, %s, %s, %s, %s) RETURNING id",
            (uuid.uuid4(), kind, None if geometry is None else orjson.dumps(geometry).decode(),
             None if circle is None else orjson.dumps(circle).decode(),
             None if schedule is None else orjson.dumps(schedule).decode(),
             orjson.dumps(exceptions or []).decode()),
        )
        self._x("INSERT INTO case_zones (case_id, zone_id) VALUES (%s, %s) RETURNING case_id",
                (case, zid))
        return zid

    def fix(self, device: uuid.UUID, ts: datetime, lat: float, lon: float,
            acc: float = 8.0) -> None:
        self._x(
            "INSERT INTO fixes (device_id, seq, ts, lat, lon, acc) VALUES (%s, %s, %s, %s, %s, %s)"
            " RETURNING seq", (device, next(_seq), ts, lat, lon, acc),
        )
        self._x(
            "UPDATE devices SET last_fix_at = greatest(last_fix_at, %(ts)s),"
            " last_seen = greatest(last_seen, %(ts)s),"
            " last_good_fix_at = CASE WHEN %(acc)s <= 100 THEN greatest(last_good_fix_at, %(ts)s)"
            " ELSE last_good_fix_at END WHERE id = %(d)s RETURNING id",
            {"ts": ts, "acc": acc, "d": device},
        )

    def seen(self, device: uuid.UUID, at: datetime) -> None:
        self._x("UPDATE devices SET last_seen = %s WHERE id = %s RETURNING id", (at, device))

    def alerts(self, case: uuid.UUID, type: str | None = None) -> list[dict[str, Any]]:
        cur = self.conn.cursor(row_factory=psycopg.rows.dict_row)
        rows = cur.execute(
            "SELECT * FROM alerts WHERE case_id = %s AND (%s::text IS NULL OR type = %s)"
            " ORDER BY started_at, created_at", (case, type, type),
        ).fetchall()
        self.conn.commit()
        return rows

    def timeline(self, alert: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
        rows = self.conn.execute(
            "SELECT kind, data FROM alert_events WHERE alert_id = %s ORDER BY id", (alert,)
        ).fetchall()
        self.conn.commit()
        return [(r[0], r[1]) for r in rows]


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
