"""Proximity searches: who may have been at a place during a window (audited, rate-limited).

One SQL statement in two steps, then the pure model of `proximity`:

1. **candidates**: the (case, device) pairs with a fix in the window that can matter:
   within `NEAR_M` of the place's bounding box (for the probability and the gaps), or
   coarser and within its own reach (5 sigma) of it and not dominated (no fix 5 times
   more precise within 10 minutes, the model's rule). The window restricts the
   hypertable's chunks (chunk exclusion on `ts`) and the per-chunk `ts` index; an outer
   bounding box (the place plus the reach of the coarsest usable fix, `ACC_MAX_M`) is
   the spatial prefilter; the dominance test probes `(device_id, ts)`.
2. **tracks**: every fix of those pairs in the window (the `(device_id, ts)` index) goes
   through window functions in SQL (previous and next fix, run number, least accuracy
   within 10 minutes, count); only the fixes that can matter reach Python: near the
   place, reaching it, or bounding a gap or the track. `summarise` then gives the same
   answer as the model over the whole track (checked by the bench's brute-force scan).

Results are computed afresh for each request and never cached.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import text
from sqlmodel import Session

from geofence import InvalidGeometry, compile_zone
from geofence.geometry import M_PER_DEG, CompiledZone
from probation.audit import service as audit
from probation.cases.scope import CaseScope
from probation.errors import FieldError, Forbidden, Invalid, TooManyRequests
from probation.investigations import proximity
from probation.investigations.models import (
    MAX_PLACE_M,
    MODEL_TEXT,
    ClosestApproach,
    Gap,
    ProximityAnswer,
    ProximityMatch,
    ProximityQuery,
    SupportingFix,
)
from probation.users.models import Role, User

F64 = npt.NDArray[np.float64]

ACC_MAX_M = 3000.0  # coarser fixes (68 % radius above 3 km) say nothing about a place
NEAR_M = proximity.NEAR_M
MAX_SUPPORT = 20
MAX_MATCHES = 1000
ROLES = (Role.SUPERVISOR, Role.INVESTIGATOR)

_K = proximity.REACH_SIGMA * proximity.SIGMA_PER_ACC  # reach in metres per metre of acc

# The fixes first (time chunks, boxes), materialised, then their cases: left to itself
# the planner probed every assignment's device index instead (2,000 probes per query).
CANDIDATES_SQL = """
WITH hit AS MATERIALIZED (
  SELECT f.device_id, f.ts FROM fixes f
  WHERE f.ts >= %(from)s AND f.ts < %(to)s
    AND f.lat BETWEEN %(olat0)s AND %(olat1)s AND f.lon BETWEEN %(olon0)s AND %(olon1)s
    AND f.acc <= %(acc_max)s
    AND (
      (f.lat BETWEEN %(nlat0)s AND %(nlat1)s AND f.lon BETWEEN %(nlon0)s AND %(nlon1)s)
      OR (f.acc > %(acc_near)s
          AND f.lat BETWEEN %(lat0)s - %(klat)s * f.acc AND %(lat1)s + %(klat)s * f.acc
          AND f.lon BETWEEN %(lon0)s - %(klon)s * f.acc AND %(lon1)s + %(klon)s * f.acc
          AND NOT EXISTS (
            SELECT 1 FROM fixes g WHERE g.device_id = f.device_id
              AND g.ts BETWEEN f.ts - %(run_gap)s AND f.ts + %(run_gap)s
              AND g.ts >= %(from)s AND g.ts < %(to)s
              AND greatest(g.acc, %(min_acc)s) * %(dominance)s <= f.acc)))
)
SELECT DISTINCT da.case_id, h.device_id
FROM hit h
JOIN device_assignments da ON da.device_id = h.device_id
 AND h.ts >= da.assigned_at AND (da.unassigned_at IS NULL OR h.ts < da.unassigned_at)
JOIN cases c ON c.id = da.case_id
WHERE {scope}
"""

# Over the candidates' whole tracks in the window, in SQL window functions: the previous
# and next fix (gaps), the run number (a new run after 10 minutes without a fix), the
# least accuracy within 10 minutes (dominance) and the fix count; only the fixes that can
# matter travel: near the place, reaching it, or bounding a gap or the track.
SEARCH_SQL = """
WITH cand AS MATERIALIZED ({candidates}),
t AS (
  SELECT p.case_id, c.subject_id, f.ts, f.lat, f.lon, f.acc::float8 AS acc,
         lag(f.ts) OVER w AS prev_ts, lead(f.ts) OVER w AS next_ts,
         min(greatest(f.acc::float8, %(min_acc)s)) OVER (PARTITION BY p.case_id ORDER BY f.ts
           RANGE BETWEEN %(run_gap)s PRECEDING AND %(run_gap)s FOLLOWING) AS near_min_acc,
         count(*) OVER (PARTITION BY p.case_id) AS n
  FROM cand p
  JOIN cases c ON c.id = p.case_id
  JOIN device_assignments da ON da.case_id = p.case_id AND da.device_id = p.device_id
   AND da.assigned_at < %(to)s AND (da.unassigned_at IS NULL OR da.unassigned_at > %(from)s)
  JOIN fixes f ON f.device_id = da.device_id AND f.ts >= %(from)s AND f.ts < %(to)s
   AND f.ts >= da.assigned_at AND (da.unassigned_at IS NULL OR f.ts < da.unassigned_at)
  WINDOW w AS (PARTITION BY p.case_id ORDER BY f.ts)
),
r AS (
  SELECT *, sum(CASE WHEN ts - prev_ts >= %(run_gap)s THEN 1 ELSE 0 END)
              OVER (PARTITION BY case_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS run
  FROM t
)
SELECT case_id, subject_id, (extract(epoch FROM ts) * 1000000)::int8, lat, lon, acc,
       (extract(epoch FROM prev_ts) * 1000000)::int8, (extract(epoch FROM next_ts) * 1000000)::int8,
       near_min_acc, run, n
FROM r
WHERE (lat BETWEEN %(nlat0)s AND %(nlat1)s AND lon BETWEEN %(nlon0)s AND %(nlon1)s)
   OR (acc > %(acc_near)s
       AND lat BETWEEN %(lat0)s - %(klat)s * acc AND %(lat1)s + %(klat)s * acc
       AND lon BETWEEN %(lon0)s - %(klon)s * acc AND %(lon1)s + %(klon)s * acc)
   OR prev_ts IS NULL OR next_ts IS NULL
   OR ts - prev_ts > %(gap)s OR next_ts - ts > %(gap)s
ORDER BY case_id, ts
"""


def compile_place(q: ProximityQuery) -> CompiledZone:
    """The query's place, compiled (422 naming the field when it is unusable)."""
    try:
        place = compile_zone(zone_id="place", kind="exclusion", **q.place_dict())
    except InvalidGeometry as e:
        raise Invalid([FieldError(e.field, "geometry_invalid", {"reason": e.message})]) from None
    side = max((place.lat_max - place.lat_min) * M_PER_DEG,
               (place.lon_max - place.lon_min) * place.kx)
    if not place.is_circle and side > MAX_PLACE_M:
        raise Invalid([FieldError("geometry", "less_than_equal", {"le": MAX_PLACE_M})])
    return place


@dataclass(frozen=True)
class Track:
    """The fixes of one case that can matter (time order), with what SQL computed over
    the whole track: previous/next fix time (NaN: none), least accuracy within 10 minutes,
    run number; ``n`` is the number of fixes in the window."""

    case_id: uuid.UUID
    subject_id: uuid.UUID
    ts_s: F64
    lat: F64
    lon: F64
    acc: F64
    prev_s: F64
    next_s: F64
    near_min_acc: F64
    run: npt.NDArray[np.int64]
    n: int


def candidate_params(place: CompiledZone, start: datetime, end: datetime) -> dict[str, Any]:
    klat = 1.0 / M_PER_DEG
    klon = 1.0 / (M_PER_DEG * math.cos(math.radians(
        min(89.0, max(abs(place.lat_min), abs(place.lat_max)) + 0.2))))
    outer = max(_K * ACC_MAX_M, NEAR_M)
    return {
        "from": start, "to": end, "acc_max": ACC_MAX_M, "acc_near": NEAR_M / _K,
        "run_gap": timedelta(seconds=proximity.RUN_GAP_S), "min_acc": proximity.MIN_ACC_M,
        "dominance": proximity.DOMINANCE,
        "nlat0": place.lat_min - NEAR_M * klat, "nlat1": place.lat_max + NEAR_M * klat,
        "nlon0": place.lon_min - NEAR_M * klon, "nlon1": place.lon_max + NEAR_M * klon,
        "gap": timedelta(seconds=proximity.GAP_S),
        "lat0": place.lat_min, "lat1": place.lat_max, "lon0": place.lon_min,
        "lon1": place.lon_max, "klat": klat * _K, "klon": klon * _K,
        "olat0": place.lat_min - outer * klat, "olat1": place.lat_max + outer * klat,
        "olon0": place.lon_min - outer * klon, "olon1": place.lon_max + outer * klon,
    }


def fetch_tracks(
    conn: Any, *, place: CompiledZone, start: datetime, end: datetime,
    scope_sql: str = "TRUE", scope_params: dict[str, Any] | None = None,
) -> list[Track]:
    """What the answer needs of every case with a fix that may matter (psycopg conn)."""
    params = candidate_params(place, start, end) | (scope_params or {})
    sql = SEARCH_SQL.format(candidates=CANDIDATES_SQL.format(scope=scope_sql))
    with conn.cursor() as cur:
        # JIT compilation costs more than these queries run (measured: 0.7 s of a 0.95 s
        # query), and a plain index scan on `ts` over a day's chunk (the planner's choice)
        # took 5.2 s where a bitmap scan takes 1.1 s: both off for this transaction only.
        cur.execute("SET LOCAL jit = off")
        cur.execute("SET LOCAL enable_indexscan = off")
        cur.execute(sql, params)
        rows = cur.fetchall()
    out: list[Track] = []
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and rows[j][0] == rows[i][0]:
            j += 1
        cols = list(zip(*rows[i:j], strict=True))
        num = [np.array(c, dtype=np.float64) for c in cols[2:9]]
        for k in (0, 4, 5):  # microseconds since the epoch, exactly as the reference has them
            num[k] = num[k] / 1e6
        out.append(Track(rows[i][0], rows[i][1], ts_s=num[0], lat=num[1], lon=num[2],
                         acc=num[3], prev_s=num[4], next_s=num[5], near_min_acc=num[6],
                         run=np.array(cols[9], dtype=np.int64), n=int(rows[i][10])))
        i = j
    return out


def from_full_track(case_id: uuid.UUID, subject_id: uuid.UUID, ts_s: F64, lat: F64, lon: F64,
                    acc: F64) -> Track:
    """A `Track` of every fix (the brute-force reference and tests), computed in numpy."""
    prev = np.concatenate(([np.nan], ts_s[:-1]))
    nxt = np.concatenate((ts_s[1:], [np.nan]))
    run = np.zeros(ts_s.size, dtype=np.int64)
    if ts_s.size > 1:
        run[1:] = np.cumsum(np.diff(ts_s) >= proximity.RUN_GAP_S)
    near_min = proximity.window_min(ts_s, np.maximum(acc, proximity.MIN_ACC_M),
                                    proximity.RUN_GAP_S)
    return Track(case_id, subject_id, ts_s, lat, lon, acc, prev, nxt, near_min, run, ts_s.size)


def _gaps(track: Track, t0: float, t1: float) -> list[proximity.Gap]:
    out = []
    if track.ts_s.size and np.isnan(track.prev_s[0]) and track.ts_s[0] - t0 > proximity.GAP_S:
        out.append(proximity.Gap(t0, float(track.ts_s[0])))
    inner = np.flatnonzero(track.ts_s - track.prev_s > proximity.GAP_S)
    out += [proximity.Gap(float(track.prev_s[k]), float(track.ts_s[k])) for k in inner]
    if track.ts_s.size and np.isnan(track.next_s[-1]) and t1 - track.ts_s[-1] > proximity.GAP_S:
        out.append(proximity.Gap(float(track.ts_s[-1]), t1))
    return out


def _dt(s: float) -> datetime:
    return datetime.fromtimestamp(s, UTC)


def match(place: CompiledZone, track: Track, start: datetime, end: datetime,
          min_probability: float) -> ProximityMatch | None:
    """One case's answer, or None when it says nothing (see `proximity.summarise`)."""
    gap_list = _gaps(track, start.timestamp(), end.timestamp())
    res = proximity.summarise(place, track.lat, track.lon, track.acc,
                              track.near_min_acc * proximity.DOMINANCE <= track.acc,
                              track.run, gap_list)
    near = res.dist <= NEAR_M
    index = {float(t): k for k, t in enumerate(track.ts_s.tolist())}
    gaps = [Gap(from_=_dt(g.start_s), to=_dt(g.end_s), minutes=round((g.end_s - g.start_s) / 60, 1),
                near_place=any(bool(near[index[t]]) for t in (g.start_s, g.end_s) if t in index))
            for g in gap_list]
    if res.probability < max(min_probability, proximity.P_FLOOR) and not any(
            g.near_place for g in gaps):
        return None
    c = res.closest
    support = res.support[np.argsort(-res.p[res.support], kind="stable")[:MAX_SUPPORT]]
    support.sort()
    return ProximityMatch(
        case_id=track.case_id, subject_id=track.subject_id,
        probability=round(res.probability, 4),
        closest=ClosestApproach(ts=_dt(track.ts_s[c]), lat=track.lat[c], lon=track.lon[c],
                                acc=track.acc[c], distance_m=round(res.closest_m, 1)),
        fixes=[SupportingFix(ts=_dt(track.ts_s[i]), lat=track.lat[i], lon=track.lon[i],
                             acc=track.acc[i], p=round(float(res.p[i]), 4)) for i in support],
        supporting_fixes=int(res.support.size), fixes_in_window=track.n, gaps=gaps,
    )


def search(
    conn: Any, *, place: CompiledZone, start: datetime, end: datetime,
    min_probability: float = 0.01, scope_sql: str = "TRUE",
    scope_params: dict[str, Any] | None = None,
) -> list[ProximityMatch]:
    """The matches, most probable first (psycopg connection; no audit: see `proximity_search`)."""
    tracks = fetch_tracks(conn, place=place, start=start, end=end, scope_sql=scope_sql,
                          scope_params=scope_params)
    found = [m for t in tracks if (m := match(place, t, start, end, min_probability)) is not None]
    found.sort(key=lambda m: (-m.probability, m.closest.distance_m, str(m.case_id)))
    return found[:MAX_MATCHES]


def _rate_limit(session: Session, *, user_id: uuid.UUID, limit: int, window_s: float) -> None:
    since = datetime.now(UTC) - timedelta(seconds=window_s)
    used = session.execute(text(
        "SELECT count(*) FROM audit_log WHERE action = 'investigation.proximity' "
        "AND user_id = :u AND at > :since"), {"u": user_id, "since": since}).scalar_one()
    if used >= limit:
        raise TooManyRequests(limit=limit, minutes=round(window_s / 60),
                              headers={"Retry-After": str(int(window_s))})


def _scope_sql(user: User) -> tuple[str, dict[str, Any]]:
    """Investigators search every case; supervisors their own and their officers'."""
    if user.role == Role.INVESTIGATOR:
        return "TRUE", {}
    scope = CaseScope.of(user)
    return (scope.sql("c.officer_id").replace(":scope_uid", "%(scope_uid)s"),
            {"scope_uid": user.id})


def proximity_search(
    session: Session, *, user: User, query: ProximityQuery, rate_limit: int,
    rate_window_s: float,
) -> ProximityAnswer:
    """Search, and audit the search with its reason, reference and the cases it returned."""
    if user.role not in ROLES:
        raise Forbidden()
    place = compile_place(query)
    _rate_limit(session, user_id=user.id, limit=rate_limit, window_s=rate_window_s)
    scope_sql, scope_params = _scope_sql(user)
    raw = session.connection().connection.driver_connection
    found = search(raw, place=place, start=query.from_, end=query.to,
                   min_probability=query.min_probability, scope_sql=scope_sql,
                   scope_params=scope_params)
    query_id = str(uuid.uuid4())
    audit.record(session, user_id=user.id, action="investigation.proximity",
                 resource="investigation", resource_id=query_id, detail={
                     "reason": query.reason, "reference": query.reference,
                     "place": query.place_dict(), "from": query.from_.isoformat(),
                     "to": query.to.isoformat(), "min_probability": query.min_probability,
                     "case_ids": [str(m.case_id) for m in found],
                     "probabilities": [m.probability for m in found]})
    return ProximityAnswer(query_id=query_id, from_=query.from_, to=query.to,
                           model=MODEL_TEXT, matches=found)
