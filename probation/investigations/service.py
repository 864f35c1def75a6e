"""Proximity searches: who may have been at a place during a window (audited, rate-limited).

Three steps; only the last reads whole tracks, and only those of cases that may match:

1. **near fixes** (one statement, its rows sent as five binary arrays, no window
   function): the fixes in the window (chunk exclusion on `ts`, then the per-chunk `ts`
   index) within `NEAR_M` of the place's bounding box, or coarser (acc > `NEAR_M` /
   reach per metre) and within their own reach (5 sigma) of it, each with its case (the
   assignment at the fix's time, the caller's scope).
2. **pruning** (numpy; every test errs on the side of keeping a case): a case is kept
   when an upper bound of its probability, ``1 - prod(1 - pu)`` over its reaching fixes
   (`proximity.p_upper_bound`) that no fix of step 1 dominates, reaches the threshold
   with its fine fixes alone; otherwise its coarse reaching fixes, largest bound first,
   get dominance probes until the rest cannot reach the threshold, and it is kept if
   the bound still reaches it. A case below the threshold is still kept when one of its
   fixes within 1 km may bound a gap: a fix whose neighbour in step 1 is more than 15
   minutes away gets a probe (any fix of the case within 15 minutes?). All probes go in
   one statement through the `(device_id, ts)` index.
3. **tracks** of the kept cases (binary arrays again, through the `(device_id, ts)`
   index): every fix of the case's devices in the window, answered by `from_full_track`
   and `match`, the very functions of the brute-force reference (`bench/investigations.py`
   and `tests/integration/test_proximity_search.py`), so the answers are those of a scan
   over all fixes.

Results are computed afresh for each request and never cached.
"""

from __future__ import annotations

import dataclasses
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
I64 = npt.NDArray[np.int64]

ACC_MAX_M = proximity.ACC_MAX_M
NEAR_M = proximity.NEAR_M
MAX_SUPPORT = 20
MAX_MATCHES = 1000
ROLES = (Role.SUPERVISOR, Role.INVESTIGATOR)

_K = proximity.REACH_SIGMA * proximity.SIGMA_PER_ACC  # reach in metres per metre of acc
_US = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PG_EPOCH_US = 946_684_800 * _US  # 2000-01-01 UTC, where PostgreSQL's binary timestamps count from
# The pruning's time tests keep a millisecond on the safe side of the model's limits (the
# reference compares float seconds, these integer microseconds).
_SAFE_US = 1_000

# The rows of `r` as five arrays in binary (one value each: no per-row cost on either
# side; a timestamptz is sent as microseconds since 2000-01-01 UTC).
_ARRAYS = """
SELECT array_send(array_agg(case_id)), array_send(array_agg(ts)),
       array_send(array_agg(lat)), array_send(array_agg(lon)), array_send(array_agg(acc::float8))
FROM r
"""

# The fixes first (time chunks, boxes), materialised, then their cases: left to itself
# the planner probed every assignment's device index instead (2,000 probes per query).
NEAR_SQL = """
WITH hit AS MATERIALIZED (
  SELECT f.device_id, f.ts, f.lat, f.lon, f.acc FROM fixes f
  WHERE f.ts >= %(from)s AND f.ts < %(to)s AND f.acc <= %(acc_max)s
    AND ((f.lat BETWEEN %(nlat0)s AND %(nlat1)s AND f.lon BETWEEN %(nlon0)s AND %(nlon1)s)
      OR (f.acc > %(acc_near)s
          AND f.lat BETWEEN %(lat0)s - %(klat)s * f.acc AND %(lat1)s + %(klat)s * f.acc
          AND f.lon BETWEEN %(lon0)s - %(klon)s * f.acc AND %(lon1)s + %(klon)s * f.acc))
), r AS (
  SELECT da.case_id, h.ts, h.lat, h.lon, h.acc
  FROM hit h
  JOIN device_assignments da ON da.device_id = h.device_id
   AND h.ts >= da.assigned_at AND (da.unassigned_at IS NULL OR h.ts < da.unassigned_at)
  JOIN cases c ON c.id = da.case_id
  WHERE {scope}
)
""" + _ARRAYS


# One row per probe that finds a fix of its case in [lo, hi] (microseconds; within the
# window and its devices' assignments) with greatest(acc, 1) * 5 <= a (a = infinity: any
# fix). LIMIT 1 keeps each probe an index probe (a semi-join hashed the whole window).
PROBE_SQL = """
SELECT p.i FROM unnest(%(case)s::int4[], %(lo)s::int8[], %(hi)s::int8[], %(acc)s::float8[])
  WITH ORDINALITY AS p(k, lo, hi, a, i)
CROSS JOIN LATERAL (
  SELECT 1 FROM device_assignments da JOIN fixes g ON g.device_id = da.device_id
  WHERE da.case_id = (%(cases)s::uuid[])[p.k]
    AND g.ts >= timestamptz 'epoch' + p.lo * interval '1 microsecond'
    AND g.ts <= timestamptz 'epoch' + p.hi * interval '1 microsecond'
    AND g.ts >= %(from)s AND g.ts < %(to)s
    AND g.ts >= da.assigned_at AND (da.unassigned_at IS NULL OR g.ts < da.unassigned_at)
    AND greatest(g.acc::float8, 1.0) * %(dominance)s <= p.a
  LIMIT 1) hit
"""

TRACKS_SQL = """
WITH r AS (
  SELECT da.case_id, f.ts, f.lat, f.lon, f.acc
  FROM device_assignments da
  CROSS JOIN LATERAL (
    SELECT g.ts, g.lat, g.lon, g.acc FROM fixes g
    WHERE g.device_id = da.device_id AND g.ts >= %(from)s AND g.ts < %(to)s
      AND g.ts >= da.assigned_at AND (da.unassigned_at IS NULL OR g.ts < da.unassigned_at)
  ) f
  WHERE da.case_id = ANY(%(cases)s) AND da.assigned_at < %(to)s
    AND (da.unassigned_at IS NULL OR da.unassigned_at > %(from)s)
)
""" + _ARRAYS


# Elements of a binary one-dimensional array without NULLs: length, then value.
_ELEMENT = {"uuid": np.dtype([("l", ">i4"), ("v", "V16")]),
            "int8": np.dtype([("l", ">i4"), ("v", ">i8")]),
            "float8": np.dtype([("l", ">i4"), ("v", ">f8")])}


def _array(blob: bytes | None, kind: str) -> npt.NDArray[Any]:
    if blob is None or int.from_bytes(blob[0:4], "big") == 0:
        return np.zeros(0, dtype=_ELEMENT[kind]["v"])
    n = int.from_bytes(blob[12:16], "big")
    e = np.frombuffer(blob, dtype=_ELEMENT[kind], count=n, offset=20)
    if not (e["l"] == _ELEMENT[kind]["v"].itemsize).all():
        raise RuntimeError("unexpected NULL in a fixes array")
    return e["v"]


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
    """The fixes of one case that can matter (time order), with what was computed over
    the whole track: previous/next fix time (NaN: none), least accuracy within 10
    minutes, run number; ``n`` is the number of fixes in the window."""

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
    p_dist: tuple[F64, F64] | None = None  # `fix_probabilities` of the fixes, if computed


@dataclass(frozen=True)
class Fixes:
    """Rows of a binary COPY, sorted by case then time (then acc, lat, lon): ``case``
    indexes ``case_ids``; ``ts_us`` in microseconds since the epoch."""

    case_ids: list[uuid.UUID]
    case: I64
    ts_us: I64
    lat: F64
    lon: F64
    acc: F64

    def span(self, k: int) -> slice:
        lo, hi = np.searchsorted(self.case, [k, k + 1])
        return slice(int(lo), int(hi))


def candidate_params(place: CompiledZone, start: datetime, end: datetime) -> dict[str, Any]:
    klat = 1.0 / M_PER_DEG
    klon = 1.0 / (M_PER_DEG * math.cos(math.radians(
        min(89.0, max(abs(place.lat_min), abs(place.lat_max)) + 0.2))))
    return {
        "from": start, "to": end, "acc_max": ACC_MAX_M, "acc_near": NEAR_M / _K,
        "nlat0": place.lat_min - NEAR_M * klat, "nlat1": place.lat_max + NEAR_M * klat,
        "nlon0": place.lon_min - NEAR_M * klon, "nlon1": place.lon_max + NEAR_M * klon,
        "lat0": place.lat_min, "lat1": place.lat_max, "lon0": place.lon_min,
        "lon1": place.lon_max, "klat": klat * _K, "klon": klon * _K,
    }


def _fetch(conn: Any, sql: str, params: dict[str, Any]) -> Fixes:
    """The rows of `sql` (see `_ARRAYS`) sorted by case, then `fix_order`."""
    with conn.cursor(binary=True) as cur:
        row = cur.execute(sql, params).fetchone()
    keys, case = np.unique(_array(row[0], "uuid"), return_inverse=True)
    ts_us = _array(row[1], "int8").astype(np.int64) + _PG_EPOCH_US
    lat, lon, acc = (_array(row[k], "float8").astype(np.float64) for k in (2, 3, 4))
    order = np.lexsort((lon, lat, acc, ts_us, case))
    return Fixes([uuid.UUID(bytes=bytes(k)) for k in keys], case.astype(np.int64)[order],
                 ts_us[order], lat[order], lon[order], acc[order])


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _log_q(pu: F64) -> F64:
    return np.log1p(-np.minimum(pu, 1.0 - 1e-15))  # type: ignore[no-any-return]


def _per_case_bound(case: I64, pu: F64, n_cases: int) -> F64:
    """``1 - prod(1 - pu)`` per case (an upper bound of its probability)."""
    return 1.0 - np.exp(np.bincount(case, weights=_log_q(pu), minlength=n_cases))  # type: ignore[no-any-return]


def _neighbour_gaps(f: Fixes) -> tuple[I64, I64]:
    """Per fix, the time since the previous and until the next fix of the same case in
    ``f`` (microseconds; a very large number when there is none)."""
    none = np.int64(1) << 62
    prev = np.full(f.ts_us.size, none)
    nxt = np.full(f.ts_us.size, none)
    if f.ts_us.size > 1:
        same = f.case[1:] == f.case[:-1]
        d = np.diff(f.ts_us)
        prev[1:] = np.where(same, d, none)
        nxt[:-1] = np.where(same, d, none)
    return prev, nxt


def prune(conn: Any, near: Fixes, *, place: CompiledZone, start: datetime, end: datetime,
          min_probability: float) -> list[uuid.UUID]:
    """The cases of `near` whose answer may be a match (a superset of the matches)."""
    n_cases = len(near.case_ids)
    if n_cases == 0:
        return []
    thr = max(min_probability, proximity.P_FLOOR) * (1.0 - 1e-9)
    dist = proximity.distance_m(place, near.lat, near.lon)
    pu = proximity.p_upper_bound(place, dist, near.acc)
    t0, t1 = _us(start), _us(end)
    # dominated by a fix of step 1 (a subset of the track): dominated in the track too
    key = near.case * 10**15 + (near.ts_us - t0)  # cases far apart on one time axis
    least = proximity.window_min(key, np.maximum(near.acc, proximity.MIN_ACC_M),  # type: ignore[arg-type]
                                 proximity.RUN_GAP_S * _US - _SAFE_US)
    pu = np.where(least * proximity.DOMINANCE <= near.acc, 0.0, pu)
    coarse = near.acc > NEAR_M / _K
    fine_log = np.bincount(near.case, weights=np.where(coarse, 0.0, _log_q(pu)),
                           minlength=n_cases)
    keep = 1.0 - np.exp(fine_log) >= thr
    # probes: dominance of the coarse reaching fixes of the other cases, largest bound
    # first, as many as it takes for the bound of the fine ones and the unprobed rest to
    # fall below the threshold (far cell fixes add little: most are never probed) ...
    cand = np.flatnonzero(coarse & (pu > 0) & ~keep[near.case])
    cand = cand[np.lexsort((-pu[cand], near.case[cand]))]
    lq = _log_q(pu[cand])
    suffix = np.cumsum(lq[::-1])[::-1]  # sums to the end of the array: make them per case
    ends = np.searchsorted(near.case[cand], near.case[cand], side="right")
    tail = np.append(suffix, 0.0)
    rest = suffix - tail[ends]  # log bound of this fix and those after it in its case
    dom = cand[1.0 - np.exp(fine_log[near.case[cand]] + rest) >= thr]
    # ... and the gaps next to fixes within 1 km, of cases not kept yet
    prev, nxt = _neighbour_gaps(near)
    gap_us = proximity.GAP_S * _US - _SAFE_US
    close = (dist <= NEAR_M + 1.0) & ~keep[near.case]
    after = np.flatnonzero(close & (nxt > gap_us) & (t1 - near.ts_us > gap_us))
    before = np.flatnonzero(close & (prev > gap_us) & (near.ts_us - t0 > gap_us))
    half = proximity.RUN_GAP_S * _US - _SAFE_US
    lo = np.concatenate((near.ts_us[dom] - half, near.ts_us[after] + 1, near.ts_us[before] - gap_us))
    hi = np.concatenate((near.ts_us[dom] + half, near.ts_us[after] + gap_us, near.ts_us[before] - 1))
    acc = np.concatenate((near.acc[dom], np.full(after.size + before.size, np.inf)))
    which = np.concatenate((near.case[dom], near.case[after], near.case[before]))
    if lo.size:
        with conn.cursor() as cur:
            cur.execute(PROBE_SQL, {
                "cases": near.case_ids, "case": (which + 1).tolist(), "lo": lo.tolist(),
                "hi": hi.tolist(), "acc": acc.tolist(), "from": start, "to": end,
                "dominance": proximity.DOMINANCE})
            found = np.zeros(lo.size, dtype=bool)
            hits = [r[0] - 1 for r in cur.fetchall()]
            found[hits] = True
        pu[dom[found[:dom.size]]] = 0.0  # dominated after all
        keep |= _per_case_bound(near.case, pu, n_cases) >= thr
        keep[which[dom.size:][~found[dom.size:]]] = True  # a gap may follow or precede
    return [near.case_ids[k] for k in np.flatnonzero(keep).tolist()]


def from_full_track(case_id: uuid.UUID, subject_id: uuid.UUID, ts_s: F64, lat: F64, lon: F64,
                    acc: F64) -> Track:
    """A `Track` of every fix (time order), computed in numpy: the search's last step and
    the brute-force reference."""
    prev = np.concatenate(([np.nan], ts_s[:-1]))
    nxt = np.concatenate((ts_s[1:], [np.nan]))
    run = np.zeros(ts_s.size, dtype=np.int64)
    if ts_s.size > 1:
        run[1:] = np.cumsum(np.diff(ts_s) >= proximity.RUN_GAP_S)
    near_min = proximity.window_min(ts_s, np.maximum(acc, proximity.MIN_ACC_M),
                                    proximity.RUN_GAP_S)
    return Track(case_id, subject_id, ts_s, lat, lon, acc, prev, nxt, near_min, run, ts_s.size)


def fix_order(ts_us: I64, lat: F64, lon: F64, acc: F64) -> I64:
    """The order of one case's fixes: time, then acc, lat, lon (two devices may report
    the same instant); the search and the reference both use it."""
    return np.lexsort((lon, lat, acc, ts_us)).astype(np.int64)


def fetch_tracks(
    conn: Any, *, place: CompiledZone, start: datetime, end: datetime,
    min_probability: float = 0.01, scope_sql: str = "TRUE",
    scope_params: dict[str, Any] | None = None,
) -> list[Track]:
    """The whole tracks in the window of the cases that may match (psycopg conn)."""
    params = candidate_params(place, start, end) | (scope_params or {})
    with conn.cursor() as cur:
        # For this transaction only: JIT compilation costs more than these queries run
        # (measured: 0.7 s of a 0.95 s query); TimescaleDB's ChunkAppend re-plans chunk
        # exclusion on every rescan of a parameterised probe: a plain Append over the
        # window's chunks made 3,282 probes 5x faster (444 -> 82 ms).
        cur.execute("SET LOCAL jit = off")
        cur.execute("SET LOCAL timescaledb.enable_chunk_append = off")
    near = _fetch(conn, NEAR_SQL.format(scope=scope_sql), params)
    kept = prune(conn, near, place=place, start=start, end=end,
                 min_probability=min_probability)
    if not kept:
        return []
    tracks = _fetch(conn, TRACKS_SQL, {"from": start, "to": end, "cases": kept})
    with conn.cursor() as cur:
        subjects = dict(cur.execute("SELECT id, subject_id FROM cases WHERE id = ANY(%s)",
                                    (kept,)).fetchall())
    # every fix's p at once (element-wise: the same numbers as case by case)
    p, dist = proximity.fix_probabilities(place, tracks.lat, tracks.lon, tracks.acc)
    out = []
    for k, case_id in enumerate(tracks.case_ids):
        s = tracks.span(k)
        ts_s = tracks.ts_us[s] / 1e6  # as the reference has them
        t = from_full_track(case_id, subjects[case_id], ts_s, tracks.lat[s], tracks.lon[s],
                            tracks.acc[s])
        out.append(dataclasses.replace(t, p_dist=(p[s], dist[s])))
    return out


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
                              track.run, gap_list, track.p_dist)
    near = (res.dist <= NEAR_M) & (track.acc <= ACC_MAX_M)  # unusable fixes flag nothing

    def near_fix(t: float) -> bool:  # the last fix at instant t, if one is, is near
        k = int(np.searchsorted(track.ts_s, t, side="right")) - 1
        return k >= 0 and track.ts_s[k] == t and bool(near[k])

    gaps = [Gap(from_=_dt(g.start_s), to=_dt(g.end_s), minutes=round((g.end_s - g.start_s) / 60, 1),
                near_place=near_fix(g.start_s) or near_fix(g.end_s))
            for g in gap_list]
    if res.probability < max(min_probability, proximity.P_FLOOR) and not any(
            g.near_place for g in gaps):
        return None
    c = res.closest
    support = res.support[np.argsort(-res.p[res.support], kind="stable")[:MAX_SUPPORT]]
    support.sort()
    # built without validation (the values are of the fields' types already): validating
    # 20 supporting fixes per match cost 0.23 s of a 2.3 s search with 287 matches
    ts, lat, lon, acc = (a.tolist() for a in (track.ts_s, track.lat, track.lon, track.acc))
    p = res.p.tolist()
    return ProximityMatch.model_construct(
        case_id=track.case_id, subject_id=track.subject_id,
        probability=round(res.probability, 4),
        closest=ClosestApproach.model_construct(
            ts=_dt(ts[c]), lat=lat[c], lon=lon[c], acc=acc[c],
            distance_m=round(res.closest_m, 1)),
        fixes=[SupportingFix.model_construct(ts=_dt(ts[i]), lat=lat[i], lon=lon[i],
                                             acc=acc[i], p=round(p[i], 4))
               for i in support.tolist()],
        supporting_fixes=int(res.support.size), fixes_in_window=int(track.n), gaps=gaps,
    )


def search(
    conn: Any, *, place: CompiledZone, start: datetime, end: datetime,
    min_probability: float = 0.01, scope_sql: str = "TRUE",
    scope_params: dict[str, Any] | None = None,
) -> list[ProximityMatch]:
    """The matches, most probable first (psycopg connection; no audit: see `proximity_search`)."""
    tracks = fetch_tracks(conn, place=place, start=start, end=end,
                          min_probability=min_probability, scope_sql=scope_sql,
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
