"""Timed alert rules: escalation of unacknowledged alerts, curfew (inclusion window) starts.

Both are functions of `now` (passed in), run inside the caller's transaction and
never commit, so tests drive them with a controlled clock against the real database.

Escalation: an `open` alert not acknowledged within its severity's deadline rises one
level (`escalation_level + 1`, `escalated_at = now`) and gets an `escalated` timeline
row naming the supervisor it is routed to (level n = the n-th supervisor up from the
case's officer, or the highest there is). The next level is due one deadline after the
previous escalation, so an alert rises at most once per deadline period and never twice
to the same level (the UPDATE is guarded on the level it read).

Curfew starts (`docs/monitoring-rules.md`, "When an inclusion zone
becomes active"): one set-based pass. Inclusion zones with a schedule are grouped by
(schedule, timezone, exceptions); `geofence.schedule.window_starts` runs once per
group for `(since, now]`; only the groups with a start are then joined to their cases'
devices and last fixes. Definitely outside (signed distance ≥ max(acc, 10 m), acc ≤
500 m) → `inclusion_zone_left` at the window start; no fix in the last 15 minutes →
`location_lost` if the device still talks, `communication_lost` if it is silent. The
same pass closes open `inclusion_zone_left` episodes whose window ended in
`(since, now]` (the zone became inactive without a fix to tell the ingest engine).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import psycopg
from psycopg.types.json import Jsonb

from alerts.models import AlertType, Severity
from alerts.service import close_episode, open_episode
from geofence.geometry import CompiledZone, InvalidGeometry, ZoneStore, compile_zone, haversine_m
from geofence.schedule import (
    InvalidSchedule,
    activity_changes,
    compile_exceptions,
    compile_schedule,
    to_epoch_ms,
    window_starts,
)

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

DEFAULT_DEADLINES: dict[Severity, timedelta | None] = {
    Severity.CRITICAL: timedelta(minutes=5),
    Severity.HIGH: timedelta(minutes=15),
    Severity.MEDIUM: timedelta(minutes=60),
    Severity.LOW: None,
}


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=lambda v: orjson.dumps(v, default=str).decode())


# --------------------------------------------------------------------------- escalation


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    """Deadline per severity (None: never escalates) and the highest level."""

    deadlines: Mapping[Severity, timedelta | None] = field(
        default_factory=lambda: dict(DEFAULT_DEADLINES)
    )
    max_level: int = 2


@dataclass(frozen=True, slots=True)
class Escalation:
    alert_id: uuid.UUID
    level: int
    supervisor_id: uuid.UUID | None


_ESCALATE_SQL = """
WITH deadlines(severity, secs) AS (SELECT * FROM unnest(%(sev)s::text[], %(secs)s::float8[])),
due AS (
    SELECT a.id, a.escalation_level AS lvl, c.officer_id
    FROM alerts a
    JOIN deadlines d ON d.severity = a.severity
    JOIN cases c ON c.id = a.case_id
    WHERE a.status = 'open' AND a.acknowledged_at IS NULL
      AND a.escalation_level < %(max)s
      AND coalesce(a.escalated_at, a.created_at) + make_interval(secs => d.secs) <= %(now)s
    FOR UPDATE OF a SKIP LOCKED
)
UPDATE alerts a SET escalation_level = due.lvl + 1, escalated_at = %(now)s
FROM due
WHERE a.id = due.id AND a.escalation_level = due.lvl
RETURNING a.id, a.escalation_level, due.officer_id
"""

_CHAIN_SQL = """
WITH RECURSIVE chain(officer_id, user_id, depth) AS (
    SELECT u.id, u.supervisor_id, 1 FROM users u
    WHERE u.id = ANY(%s) AND u.supervisor_id IS NOT NULL
    UNION ALL
    SELECT ch.officer_id, u.supervisor_id, ch.depth + 1
    FROM chain ch JOIN users u ON u.id = ch.user_id
    WHERE u.supervisor_id IS NOT NULL AND ch.depth < 16
)
SELECT officer_id, depth, user_id FROM chain
"""


def escalate_overdue(
    conn: Conn, *, now: datetime, policy: EscalationPolicy | None = None
) -> list[Escalation]:
    """Raise every overdue unacknowledged alert by one level; returns what rose."""
    policy = policy or EscalationPolicy()
    sev = [s.value for s, d in policy.deadlines.items() if d is not None]
    secs = [d.total_seconds() for d in policy.deadlines.values() if d is not None]
    if not sev:
        return []
    rows = conn.execute(
        _ESCALATE_SQL, {"sev": sev, "secs": secs, "max": policy.max_level, "now": now}
    ).fetchall()
    if not rows:
        return []
    officers = sorted({r[2] for r in rows})
    chain: dict[uuid.UUID, dict[int, uuid.UUID]] = {}
    for officer, depth, user in conn.execute(_CHAIN_SQL, (officers,)).fetchall():
        chain.setdefault(officer, {})[depth] = user
    out: list[Escalation] = []
    events: list[tuple[Any, ...]] = []
    for alert_id, level, officer in rows:
        ups = chain.get(officer, {})
        target = ups.get(level) or (ups[max(ups)] if ups else None)
        out.append(Escalation(alert_id, level, target))
        events.append((alert_id, now, "escalated", _jsonb({
            "level": level, "supervisor_id": str(target) if target else None,
            "officer_id": str(officer),
        })))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO alert_events (alert_id, at, kind, data) VALUES (%s, %s, %s, %s)", events
        )
    conn.execute(
        "SELECT pg_notify('alerts', x) FROM unnest(%s::text[]) AS x",
        ([str(e.alert_id) for e in out],),
    )
    return out


# --------------------------------------------------------------------------- curfew starts


@dataclass(frozen=True, slots=True)
class CurfewConfig:
    """`no_fix`: how recent the last fix must be; `max_acc_m`: fixes above never open."""

    no_fix: timedelta = timedelta(minutes=15)
    min_margin_m: float = 10.0
    max_acc_m: float = 500.0


@dataclass(slots=True)
class CurfewResult:
    groups: int = 0
    starting_zones: int = 0
    evaluated: int = 0
    outside: int = 0
    location_lost: int = 0
    communication_lost: int = 0
    inside_or_uncertain: int = 0
    ended_closed: int = 0
    opened: list[uuid.UUID] = field(default_factory=list)
    evaluate_s: float = 0.0  # finding the starts, the last fixes and the distances
    alerts_s: float = 0.0  # opening the alerts (open_episode, one by one)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "groups", "starting_zones", "evaluated", "outside", "location_lost",
            "communication_lost", "inside_or_uncertain", "ended_closed",
        )} | {"opened": len(self.opened), "evaluate_s": round(self.evaluate_s, 4),
              "alerts_s": round(self.alerts_s, 4)}


class PolygonCache:
    """Compiled polygon zones by (zone id, version), kept across passes (compiling is slow)."""

    def __init__(self, max_size: int = 200_000) -> None:
        self._zones: dict[uuid.UUID, tuple[int, CompiledZone]] = {}
        self.max_size = max_size
        self._warm_key: Any = None

    def warm(self, conn: Conn) -> None:
        """Compile every scheduled inclusion polygon not cached yet (once per zones-config
        version), so that a window start never waits for compiling."""
        row = conn.execute("SELECT version FROM config_versions WHERE name = 'zones'").fetchone()
        key = row[0] if row else None
        if key is not None and key == self._warm_key:
            return
        wanted = dict(conn.execute(
            "SELECT id, version FROM zones WHERE geometry IS NOT NULL AND kind = 'inclusion'"
            " AND schedule IS NOT NULL AND deleted_at IS NULL"
        ).fetchall())
        if len(wanted) <= self.max_size:
            self.load(conn, wanted)
        self._warm_key = key

    def get(self, zone_id: uuid.UUID, version: int) -> CompiledZone | None:
        hit = self._zones.get(zone_id)
        return hit[1] if hit is not None and hit[0] == version else None

    def load(self, conn: Conn, wanted: dict[uuid.UUID, int]) -> None:
        """Compile the zones of `wanted` (id → version) that are not cached at that version."""
        missing = [z for z, v in wanted.items() if self.get(z, v) is None]
        if not missing:
            return
        if len(self._zones) + len(missing) > self.max_size:
            self._zones.clear()
        for zid, version, geometry, buffer_m in conn.execute(
            "SELECT id, version, geometry, buffer_m FROM zones WHERE id = ANY(%s)"
            " AND geometry IS NOT NULL", (missing,),
        ).fetchall():
            try:
                self._zones[zid] = (version, compile_zone(
                    zone_id=str(zid), kind="inclusion", geometry=geometry, buffer_m=buffer_m))
            except InvalidGeometry as e:
                log.error("curfew: zone %s has an invalid geometry: %s", zid, e)


@dataclass(slots=True)
class _Groups:
    key: tuple[Any, ...]
    at: float
    rows: list[tuple[Any, str, Any, int]]


class GroupCache:
    """The distinct (schedule, timezone, exceptions) of active inclusion zones, refreshed
    when zones (`config_versions`) or cases change, or after `max_age_s`."""

    def __init__(self, max_age_s: float = 600.0) -> None:
        self.max_age_s = max_age_s
        self._cached: _Groups | None = None

    def get(self, conn: Conn) -> list[tuple[Any, str, Any, int]]:
        import time

        key = tuple(conn.execute(
            "SELECT (SELECT version FROM config_versions WHERE name = 'zones'),"
            " (SELECT count(*) FROM cases), (SELECT max(updated_at) FROM cases)"
        ).fetchone() or ())
        c = self._cached
        now = time.monotonic()
        if c is not None and c.key == key and now - c.at < self.max_age_s:
            return c.rows
        rows = [(r[0], r[1], r[2], int(r[3])) for r in conn.execute(_GROUPS_SQL).fetchall()]
        self._cached = _Groups(key, now, rows)
        return rows


_GROUPS_SQL = """
SELECT z.schedule, c.timezone, z.exceptions, count(*)
FROM zones z
JOIN case_zones cz ON cz.zone_id = z.id
JOIN cases c ON c.id = cz.case_id AND c.status = 'active'
WHERE z.kind = 'inclusion' AND z.deleted_at IS NULL AND z.schedule IS NOT NULL
GROUP BY 1, 2, 3
"""

# One row per (case, zone) whose window starts and that may need an alert: the case's
# tracking device with the most recent fix (beacons excluded) and that device's last fix
# if it is at most `no_fix` old. Rows that certainly need nothing stay in the database:
# a circle zone's fix that is certainly inside (an equirectangular distance bound with a
# 0.5 %% + 1 m safety margin, far looser than its error at these distances) or a fix with
# acc > 500 m (never opens a violation). The engine decides everything else.
_STARTS_SQL = """
WITH g AS (
    SELECT * FROM unnest(%(sched)s::jsonb[], %(tz)s::text[], %(exc)s::jsonb[],
                         %(start)s::timestamptz[]) AS g(schedule, tz, exceptions, start)
), cz AS (
    SELECT cz.case_id, z.id AS zone_id, z.version, z.circle IS NULL AS poly,
           (z.circle->'center'->>1)::float8 AS clat, (z.circle->'center'->>0)::float8 AS clon,
           (z.circle->>'radius_m')::float8 AS crad, g.start
    FROM g
    JOIN zones z ON z.schedule = g.schedule AND z.exceptions = g.exceptions
         AND z.kind = 'inclusion' AND z.deleted_at IS NULL
    JOIN case_zones cz ON cz.zone_id = z.id
    JOIN cases c ON c.id = cz.case_id AND c.status = 'active' AND c.timezone = g.tz
), dv AS (
    SELECT DISTINCT ON (a.case_id) a.case_id, d.id, d.last_seen, d.last_fix_at
    FROM device_assignments a JOIN devices d ON d.id = a.device_id AND d.kind <> 'beacon'
    WHERE a.unassigned_at IS NULL
    ORDER BY a.case_id, d.last_fix_at DESC NULLS LAST, d.last_seen DESC NULLS LAST, d.id
), ev AS (
    SELECT cz.*, dv.id AS device_id, dv.last_seen,
           coalesce(f0.ts, f1.ts) AS ts, coalesce(f0.lat, f1.lat) AS lat,
           coalesce(f0.lon, f1.lon) AS lon, coalesce(f0.acc, f1.acc) AS acc
    FROM cz
    JOIN dv ON dv.case_id = cz.case_id
    -- the usual case: the device's newest fix (devices.last_fix_at) is not after `now`
    LEFT JOIN fixes f0 ON f0.device_id = dv.id AND f0.ts = dv.last_fix_at
         AND dv.last_fix_at <= %(now)s AND dv.last_fix_at > cz.start - %(no_fix)s
         AND f0.ts > %(lo)s AND f0.ts <= %(now)s
    -- a device clock ahead of ours: look for its newest fix up to `now`
    LEFT JOIN LATERAL (
        SELECT f.ts, f.lat, f.lon, f.acc FROM fixes f
        WHERE dv.last_fix_at > %(now)s
          AND f.device_id = dv.id AND f.ts > cz.start - %(no_fix)s AND f.ts <= %(now)s
        ORDER BY f.ts DESC LIMIT 1
    ) f1 ON true
)
SELECT case_id, zone_id, version, poly, clat, clon, crad, start, device_id, last_seen,
       ts, lat, lon, acc
FROM ev
WHERE ts IS NULL OR poly OR (acc <= %(max_acc)s AND NOT (
    1.005 * sqrt(power((lat - clat) * 111195.08, 2)
                 + power((lon - clon) * 111195.08 * cos(radians(clat)), 2)) + 1.0
    <= crad - greatest(acc, %(min_margin)s)))
"""


def _group_key(schedule: Any, tz: str, exceptions: Any) -> tuple[str, str, str]:
    return (orjson.dumps(schedule).decode(), tz, orjson.dumps(exceptions).decode())


def _window_ends(schedule: Any, tz: str, exceptions: Any, since: datetime,
                 now: datetime) -> list[datetime]:
    """UTC instants in (since, now] at which the zone becomes inactive."""
    spec = compile_schedule(schedule)
    exc = compile_exceptions(exceptions)
    t0, t1 = to_epoch_ms(since), to_epoch_ms(now)
    if t1 <= t0:
        return []
    a0, ch = activity_changes(spec, tz, exc, t0, t1)
    ends = ch[(np.arange(ch.size) % 2 == 0) == a0]
    return [_EPOCH + timedelta(milliseconds=int(t)) for t in ends]


def curfew_starts(
    conn: Conn,
    *,
    since: datetime,
    now: datetime,
    config: CurfewConfig | None = None,
    polygons: PolygonCache | None = None,
    groups: GroupCache | None = None,
) -> CurfewResult:
    """Evaluate every inclusion zone whose window started in `(since, now]` (see module doc)."""
    t0 = time.perf_counter()
    cfg = config or CurfewConfig()
    cache = polygons or PolygonCache()
    res = CurfewResult()
    if now <= since:
        return res
    one_ms = timedelta(milliseconds=1)
    g_sched: list[str] = []
    g_tz: list[str] = []
    g_exc: list[str] = []
    g_start: list[datetime] = []
    ended: list[tuple[str, str, str, datetime]] = []
    for schedule, tz, exceptions, count in (groups or GroupCache()).get(conn):
        res.groups += 1
        try:
            # window_starts covers [since, until): shift by 1 ms to get (since, now].
            starts = window_starts(schedule, tz, since + one_ms, now + one_ms, exceptions)
            ends = _window_ends(schedule, tz, exceptions, since, now)
        except (InvalidSchedule, ValueError) as e:
            log.error("curfew: skipping an invalid schedule group (%s): %s", tz, e)
            continue
        key = _group_key(schedule, tz, exceptions)
        if starts:
            g_sched.append(key[0])
            g_tz.append(tz)
            g_exc.append(key[2])
            g_start.append(starts[-1])  # several starts after an outage: the latest counts
            res.starting_zones += count
        ends_after = [e for e in ends if not starts or e > starts[-1]]
        if ends_after:
            ended.append((*key, ends_after[-1]))
    if ended:
        res.ended_closed = _close_ended(conn, ended)
    if not g_start:
        cache.warm(conn)  # only when nothing starts: a start never waits for it
        res.evaluate_s = time.perf_counter() - t0
        return res
    conn.execute("SET LOCAL work_mem = '64MB'")
    conn.execute("SET LOCAL jit = off")
    rows = conn.execute(_STARTS_SQL, {
        "sched": g_sched, "tz": g_tz, "exc": g_exc, "start": g_start,
        "no_fix": cfg.no_fix, "now": now, "lo": min(g_start) - cfg.no_fix,
        "max_acc": cfg.max_acc_m, "min_margin": cfg.min_margin_m,
    }).fetchall()
    seen: set[tuple[uuid.UUID, uuid.UUID]] = set()
    rows = [r for r in rows if (r[0], r[1]) not in seen and not seen.add((r[0], r[1]))]  # type: ignore[func-returns-value]
    n = len(rows)
    if n == 0:
        res.evaluated = res.inside_or_uncertain = res.starting_zones
        res.evaluate_s = time.perf_counter() - t0
        return res
    has_fix = np.fromiter((r[10] is not None for r in rows), dtype=bool, count=n)
    lat = np.fromiter((r[11] if r[11] is not None else 0.0 for r in rows), np.float64, n)
    lon = np.fromiter((r[12] if r[12] is not None else 0.0 for r in rows), np.float64, n)
    acc = np.fromiter((r[13] if r[13] is not None else 0.0 for r in rows), np.float64, n)
    poly = np.fromiter((bool(r[3]) for r in rows), dtype=bool, count=n)
    dist = np.full(n, np.nan)
    circ = np.flatnonzero(has_fix & ~poly)
    if circ.size:
        c_lat = np.fromiter((rows[i][4] for i in circ), np.float64, circ.size)
        c_lon = np.fromiter((rows[i][5] for i in circ), np.float64, circ.size)
        c_r = np.fromiter((rows[i][6] for i in circ), np.float64, circ.size)
        # The engine's circle distance (CompiledZone.signed_distance) without compiling.
        dist[circ] = haversine_m(lat[circ], lon[circ], c_lat, c_lon) - c_r
    pidx = np.flatnonzero(has_fix & poly)
    if pidx.size:
        cache.load(conn, {rows[i][1]: rows[i][2] for i in pidx})
        zones: list[CompiledZone] = []
        keep: list[int] = []
        for i in pidx:
            z = cache.get(rows[i][1], rows[i][2])
            if z is not None:
                zones.append(z)
                keep.append(int(i))
        if zones:
            idx = np.asarray(keep, dtype=np.int64)
            d, _exact = ZoneStore(zones).signed_distances(lat, lon, idx, np.arange(len(zones)))
            dist[idx] = d
    margin = np.maximum(acc, cfg.min_margin_m)
    outside = has_fix & (acc <= cfg.max_acc_m) & (dist >= margin)
    res.evaluated = res.starting_zones
    res.outside = int(outside.sum())
    res.inside_or_uncertain = int(has_fix.sum()) - res.outside + (res.starting_zones - n)
    t1 = time.perf_counter()
    res.evaluate_s = t1 - t0
    for i in np.flatnonzero(outside):
        r = rows[i]
        start = r[7]
        ep = open_episode(
            conn, case_id=r[0], type=AlertType.INCLUSION_ZONE_LEFT, started_at=start,
            zone_id=r[1], device_id=r[8],
            evidence={
                "trigger": "window_start", "window_start": start,
                "last_fix": {"ts": r[10], "lat": r[11], "lon": r[12], "acc": r[13]},
                "distance_m": round(float(dist[i]), 1), "max_depth_m": round(float(dist[i]), 1),
                "margin_m": float(margin[i]),
            },
        )
        if ep.created:
            res.opened.append(ep.alert_id)
    for i in np.flatnonzero(~has_fix):
        r = rows[i]
        start, last_seen = r[7], r[9]
        talking = last_seen is not None and last_seen > start - cfg.no_fix
        kind = AlertType.LOCATION_LOST if talking else AlertType.COMMUNICATION_LOST
        if talking:
            res.location_lost += 1
        else:
            res.communication_lost += 1
        ep = open_episode(
            conn, case_id=r[0], type=kind, started_at=start, device_id=r[8],
            evidence={"trigger": "window_start", "window_start": start, "zone_id": r[1],
                      "last_seen": last_seen, "no_fix_s": cfg.no_fix.total_seconds()},
        )
        if ep.created:
            res.opened.append(ep.alert_id)
    res.alerts_s = time.perf_counter() - t1
    return res


def _close_ended(conn: Conn, ended: list[tuple[str, str, str, datetime]]) -> int:
    """Close open inclusion episodes of the zones whose window ended."""
    rows = conn.execute(
        """
        WITH g AS (SELECT * FROM unnest(%s::jsonb[], %s::text[], %s::jsonb[],
                                        %s::timestamptz[]) AS g(schedule, tz, exceptions, ended))
        SELECT a.case_id, a.zone_id, a.device_id, g.ended
        FROM alerts a
        JOIN zones z ON z.id = a.zone_id
        JOIN cases c ON c.id = a.case_id
        JOIN g ON z.schedule = g.schedule AND z.exceptions = g.exceptions AND c.timezone = g.tz
        WHERE a.type = 'inclusion_zone_left' AND a.episode_open AND a.started_at < g.ended
        """,
        ([e[0] for e in ended], [e[1] for e in ended], [e[2] for e in ended],
         [e[3] for e in ended]),
    ).fetchall()
    n = 0
    for case_id, zone_id, device_id, at in rows:
        if close_episode(conn, case_id=case_id, type=AlertType.INCLUSION_ZONE_LEFT, ended_at=at,
                         zone_id=zone_id, device_id=device_id, reason="window_ended"):
            n += 1
    return n
