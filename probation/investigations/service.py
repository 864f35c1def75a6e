"""Proximity searches: who may have been at a place during a window (audited, rate-limited).

Three steps; only the last reads whole tracks, and only those of cases that may match:

1. **near fixes** (one statement, its rows sent as five binary arrays, no window
   function): the fixes in the window (chunk exclusion on `ts`, then the per-chunk `ts`
   index) within `NEAR_M` of the place's bounding box, or coarser (acc > `NEAR_M` /
   reach per metre) and within their own reach (5 sigma) of it, each given its case in
   numpy (the assignment at the fix's time, the caller's scope: a second, small
   statement).
2. **pruning** (numpy; every test errs on the side of keeping a case): a case is kept
   when an upper bound of its probability, ``1 - prod(1 - pu)`` over its reaching fixes
   (`proximity.p_upper_bound`) that no fix of step 1 dominates, reaches the threshold
   with its fine fixes alone; otherwise its coarse reaching fixes, largest bound first,
   get dominance probes until the rest cannot reach the threshold, and it is kept if
   the bound still reaches it. A case below the threshold is still kept when one of its
   fixes within 1 km may bound a gap: a fix whose neighbour in step 1 is more than 15
   minutes away gets a probe (any fix of the case within 15 minutes?). All probes go in
   one statement through the `(device_id, ts)` index.
3. **tracks** of the kept cases: every fix of the case's devices in the window, those
   of step 1 and the others (binary arrays again, read device by device through the
   `(device_id, ts)` index), answered for all the cases at once in numpy (`answer_all`)
   with the same numbers as `from_full_track` and `match` case by case, the brute-force
   reference (`bench/investigations.py --check` and
   `tests/integration/test_proximity_search.py` compare them), so the answers are those
   of a scan over all fixes.

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
I64 = npt.NDArray[np.int64]
Rows = tuple[npt.NDArray[Any], I64, F64, F64, F64]  # ids (16 bytes each), ts_us, lat, lon, acc

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

# The rows of `r` (k: a case or device id) as five arrays in binary (one value each: no
# per-row cost on either side; a timestamptz is sent as microseconds since 2000-01-01 UTC).
_ARRAYS = """
SELECT array_send(array_agg(k)), array_send(array_agg(ts)),
       array_send(array_agg(lat)), array_send(array_agg(lon)), array_send(array_agg(acc::float8))
FROM r
"""

# Whether fix `g` is a near fix (step 1): within `NEAR_M` of the place's box, or coarser
# and within its reach of it (and usable).
_NEAR = """g.acc <= %(acc_max)s
    AND ((g.lat BETWEEN %(nlat0)s AND %(nlat1)s AND g.lon BETWEEN %(nlon0)s AND %(nlon1)s)
      OR (g.acc > %(acc_near)s
          AND g.lat BETWEEN %(lat0)s - %(klat)s * g.acc AND %(lat1)s + %(klat)s * g.acc
          AND g.lon BETWEEN %(lon0)s - %(klon)s * g.acc AND %(lon1)s + %(klon)s * g.acc))"""

# The near fixes with their devices (the window's time chunks, the boxes); their cases
# are found in numpy (`_assign`): joined here, through the materialised scan (left to
# itself the planner probed each assignment's device index, 2,000 probes per query) and
# a hash join, they cost 6-140 ms more (155,000 rows: 333 against 196 ms).
NEAR_SQL = """
WITH r AS (
  SELECT g.device_id AS k, g.ts, g.lat, g.lon, g.acc FROM fixes g
  WHERE g.ts >= %(from)s AND g.ts < %(to)s AND """ + _NEAR + """
)
""" + _ARRAYS

# The assignments in the caller's scope that overlap the window: device, case, from, to
# (the window's end when later or open: the window's fixes are before it).
ASSIGNMENTS_SQL = """
WITH r AS (
  SELECT da.device_id, da.case_id, da.assigned_at,
         least(coalesce(da.unassigned_at, %(to)s), %(to)s) AS until
  FROM device_assignments da JOIN cases c ON c.id = da.case_id
  WHERE {scope} AND da.assigned_at < %(to)s
    AND (da.unassigned_at IS NULL OR da.unassigned_at > %(from)s)
)
SELECT array_send(array_agg(device_id)), array_send(array_agg(case_id)),
       array_send(array_agg(assigned_at)), array_send(array_agg(until))
FROM r
"""


# One row per probe that finds a fix of its case in [lo, hi] (microseconds; within the
# window and its devices' assignments) with greatest(acc, 1) * 5 <= a (a = infinity: any
# fix). LIMIT 1 keeps each probe an index probe (a semi-join hashed the whole window).
# The arrays go in binary (%b): 3 ms instead of 17 for 2,442 probes over 2,000 cases.
PROBE_SQL = """
SELECT p.i FROM unnest(%(case)b::int4[], %(lo)b::int8[], %(hi)b::int8[], %(acc)b::float8[])
  WITH ORDINALITY AS p(k, lo, hi, a, i)
CROSS JOIN LATERAL (
  SELECT 1 FROM device_assignments da JOIN fixes g ON g.device_id = da.device_id
  WHERE da.case_id = (%(cases)b::uuid[])[p.k]
    AND g.ts >= timestamptz 'epoch' + p.lo * interval '1 microsecond'
    AND g.ts <= timestamptz 'epoch' + p.hi * interval '1 microsecond'
    AND g.ts >= %(from)s AND g.ts < %(to)s
    AND g.ts >= da.assigned_at AND (da.unassigned_at IS NULL OR g.ts < da.unassigned_at)
    AND greatest(g.acc::float8, 1.0) * %(dominance)s <= p.a
  LIMIT 1) hit
"""

# The fixes of the cases' tracks that step 1 did not read (those it did read are merged
# back: a heavy 2 km x 24 h query reads 106,000 rows here instead of 190,000), device by
# device through the `(device_id, ts)` index: OFFSET 0 keeps the planner from flattening
# the lateral subquery into a hash join over every fix of the window (it did from ~190
# cases on: 87-137 ms instead of 40-43 for 195 cases, 170 instead of 96 for 527).
TRACKS_SQL = """
WITH r AS (
  SELECT da.case_id AS k, f.ts, f.lat, f.lon, f.acc
  FROM device_assignments da
  CROSS JOIN LATERAL (
    SELECT g.ts, g.lat, g.lon, g.acc FROM fixes g
    WHERE g.device_id = da.device_id AND g.ts >= %(from)s AND g.ts < %(to)s
      AND g.ts >= da.assigned_at AND (da.unassigned_at IS NULL OR g.ts < da.unassigned_at)
      AND (""" + _NEAR + """) IS NOT TRUE
    OFFSET 0
  ) f
  WHERE da.case_id = ANY(%(cases)b::uuid[]) AND da.assigned_at < %(to)s
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


@dataclass(frozen=True)
class Fixes:
    """Fixes of cases, sorted by case then time (then acc, lat, lon): ``case`` indexes
    ``case_ids``; ``ts_us`` in microseconds since the epoch."""

    case_ids: list[uuid.UUID]
    case: I64
    ts_us: I64
    lat: F64
    lon: F64
    acc: F64


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


def _read(conn: Any, sql: str, params: dict[str, Any]) -> Rows:
    """The rows of `sql` (see `_ARRAYS`): case or device ids, time in microseconds since
    the epoch, lat, lon, acc."""
    with conn.cursor(binary=True) as cur:
        row = cur.execute(sql, params).fetchone()
    ts_us = _array(row[1], "int8").astype(np.int64) + _PG_EPOCH_US
    lat, lon, acc = (_array(row[k], "float8").astype(np.float64) for k in (2, 3, 4))
    return np.ascontiguousarray(_array(row[0], "uuid")), ts_us, lat, lon, acc


def _assign(conn: Any, sql: str, params: dict[str, Any], near: Rows) -> Rows:
    """The near fixes (device ids) as rows of their cases: one per assignment in scope
    whose device reported the fix while assigned, as a join would give them."""
    with conn.cursor(binary=True) as cur:
        row = cur.execute(sql, params).fetchone()
    a_dev, a_case = (np.ascontiguousarray(_array(row[k], "uuid")) for k in (0, 1))
    a_from, a_until = (_array(row[k], "int8").astype(np.int64) + _PG_EPOCH_US for k in (2, 3))
    dev, ts_us, lat, lon, acc = near
    _, index = _key_index(np.concatenate((a_dev, dev)))
    a_idx, f_idx = index[:a_dev.size], index[a_dev.size:]
    order = np.argsort(a_idx, kind="stable")
    lo = np.searchsorted(a_idx[order], f_idx, side="left")
    count = np.searchsorted(a_idx[order], f_idx, side="right") - lo
    fix = np.repeat(np.arange(f_idx.size), count)  # each fix once per assignment of its device
    nth = np.arange(fix.size) - np.repeat(np.cumsum(count) - count, count)
    a = order[np.repeat(lo, count) + nth]
    ok = (ts_us[fix] >= a_from[a]) & (ts_us[fix] < a_until[a])
    fix, a = fix[ok], a[ok]
    return a_case[a], ts_us[fix], lat[fix], lon[fix], acc[fix]


def _fixes(ids: npt.NDArray[Any], ts_us: I64, lat: F64, lon: F64, acc: F64) -> Fixes:
    """Rows (see `_read`) sorted by case, then `fix_order`."""
    keys, case = _case_index(ids)
    order = _case_fix_order(case, ts_us, lat, lon, acc)
    return Fixes(keys, case[order], ts_us[order], lat[order], lon[order], acc[order])


def _rows(f: Fixes, cases: I64) -> Rows:
    """The rows of `f` of the cases `cases` (indices into ``f.case_ids``), as `_read`
    gives them."""
    sel = np.isin(f.case, cases)
    ids = np.frombuffer(b"".join(c.bytes for c in f.case_ids), dtype="V16")
    return ids[f.case[sel]], f.ts_us[sel], f.lat[sel], f.lon[sel], f.acc[sel]


def _key_index(ids: npt.NDArray[Any]) -> tuple[I64, I64]:
    """For 16-byte ids: a row of each distinct id and each row's index into those.
    Found on the ids' first 8 bytes as integers (np.unique compares 16-byte values byte
    by byte: 40 ms for 190,000 rows, 5 ms this way), then checked on the other 8: ids
    sharing their first 64 bits fall back to the whole bytes."""
    halves = ids.view(">u8").reshape(-1, 2)
    hi, lo = halves[:, 0].astype(np.uint64), halves[:, 1].astype(np.uint64)
    _, first, index = np.unique(hi, return_index=True, return_inverse=True)
    if not (lo == lo[first][index]).all():
        _, first, index = np.unique(ids, return_index=True, return_inverse=True)
    return first.astype(np.int64), index.astype(np.int64)


def _case_index(ids: npt.NDArray[Any]) -> tuple[list[uuid.UUID], I64]:
    """The distinct case ids of the rows and each row's index into them."""
    if ids.size == 0:
        return [], np.zeros(0, dtype=np.int64)
    first, case = _key_index(ids)
    return [uuid.UUID(bytes=bytes(ids[k])) for k in first.tolist()], case


def _case_fix_order(case: I64, ts_us: I64, lat: F64, lon: F64, acc: F64) -> I64:
    """The order by case, then `fix_order` (time, acc, lat, lon). Rows rarely share a
    case and an instant, so one sort on (case, time) as one integer usually decides it
    (4 ms for 190,000 rows; the five-key lexsort took 90 ms); when two rows do tie, or
    the key would not fit in 63 bits, the five-key sort decides."""
    if case.size > 1:
        t0 = int(ts_us.min())
        span = int(ts_us.max()) - t0 + 1
        if (int(case.max()) + 1) * span < 1 << 62:
            key = case * span + (ts_us - t0)
            order = np.argsort(key)
            k = key[order]
            if (k[1:] != k[:-1]).all():
                return order.astype(np.int64)
    return np.lexsort((lon, lat, acc, ts_us, case)).astype(np.int64)


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
          min_probability: float) -> I64:
    """The cases of `near` whose answer may be a match (a superset of the matches), as
    indices into ``near.case_ids``."""
    n_cases = len(near.case_ids)
    if n_cases == 0:
        return np.zeros(0, dtype=np.int64)
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
    return np.flatnonzero(keep).astype(np.int64)


def from_full_track(case_id: uuid.UUID, subject_id: uuid.UUID, ts_s: F64, lat: F64, lon: F64,
                    acc: F64) -> Track:
    """A `Track` of every fix (time order), computed in numpy: the brute-force reference's
    per-case step (the search does the same for all its cases at once: `answer_all`)."""
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
) -> tuple[Fixes, dict[uuid.UUID, uuid.UUID]]:
    """Every fix in the window of the cases that may match (sorted by case, then
    `fix_order`) and the cases' subjects (psycopg conn)."""
    params = candidate_params(place, start, end) | (scope_params or {})
    with conn.cursor() as cur:
        # For this transaction only: JIT compilation costs more than these queries run
        # (measured: 0.7 s of a 0.95 s query); TimescaleDB's ChunkAppend re-plans chunk
        # exclusion on every rescan of a parameterised probe: a plain Append over the
        # window's chunks made 3,282 probes 5x faster (444 -> 82 ms).
        cur.execute("SET LOCAL jit = off")
        cur.execute("SET LOCAL timescaledb.enable_chunk_append = off")
    near = _fixes(*_assign(conn, ASSIGNMENTS_SQL.format(scope=scope_sql), params,
                           _read(conn, NEAR_SQL, params)))
    kept = prune(conn, near, place=place, start=start, end=end,
                 min_probability=min_probability)
    ids = [near.case_ids[k] for k in kept.tolist()]
    if not ids:
        return _fixes(*_rows(near, kept)), {}
    rest = _read(conn, TRACKS_SQL, params | {"cases": ids})
    tracks = _fixes(*(np.concatenate(pair) for pair in zip(_rows(near, kept), rest, strict=True)))
    with conn.cursor() as cur:
        subjects = dict(cur.execute("SELECT id, subject_id FROM cases WHERE id = ANY(%s)",
                                    (ids,)).fetchall())
    return tracks, subjects


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


def _gap(start_s: float, end_s: float, near_place: bool) -> Gap:
    return Gap(from_=_dt(start_s), to=_dt(end_s), minutes=round((end_s - start_s) / 60, 1),
               near_place=near_place)


def _answer(case_id: uuid.UUID, subject_id: uuid.UUID, probability: float,
            closest: tuple[float, float, float, float], closest_m: float,
            support: list[tuple[float, float, float, float, float]], supporting: int,
            n: int, gaps: list[Gap]) -> ProximityMatch:
    """A match from plain values (the search's and the reference's): ``closest`` is (ts,
    lat, lon, acc), ``support`` the shown supporting fixes as (ts, lat, lon, acc, p).
    Validated: pydantic-core checks these plain values faster than `model_construct`
    builds them in Python (21 ms against 35 ms for 500 matches of 20 fixes)."""
    ts, lat, lon, acc = closest
    return ProximityMatch(
        case_id=case_id, subject_id=subject_id, probability=round(probability, 4),
        closest=ClosestApproach(ts=_dt(ts), lat=lat, lon=lon, acc=acc,
                                distance_m=round(closest_m, 1)),
        fixes=[SupportingFix(ts=_dt(t), lat=a, lon=o, acc=c, p=round(q, 4))
               for t, a, o, c, q in support],
        supporting_fixes=supporting, fixes_in_window=n, gaps=gaps,
    )


def match(place: CompiledZone, track: Track, start: datetime, end: datetime,
          min_probability: float) -> ProximityMatch | None:
    """One case's answer, or None when it says nothing (see `proximity.summarise`): the
    brute-force reference, which `answer_all` must equal."""
    gap_list = _gaps(track, start.timestamp(), end.timestamp())
    res = proximity.summarise(place, track.lat, track.lon, track.acc,
                              track.near_min_acc * proximity.DOMINANCE <= track.acc,
                              track.run, gap_list)
    near = (res.dist <= NEAR_M) & (track.acc <= ACC_MAX_M)  # unusable fixes flag nothing

    def near_fix(t: float) -> bool:  # the last fix at instant t, if one is, is near
        k = int(np.searchsorted(track.ts_s, t, side="right")) - 1
        return k >= 0 and track.ts_s[k] == t and bool(near[k])

    gaps = [_gap(g.start_s, g.end_s, near_fix(g.start_s) or near_fix(g.end_s))
            for g in gap_list]
    if res.probability < max(min_probability, proximity.P_FLOOR) and not any(
            g.near_place for g in gaps):
        return None
    c = res.closest
    support = res.support[np.argsort(-res.p[res.support], kind="stable")[:MAX_SUPPORT]]
    support.sort()
    ts, lat, lon, acc = (a.tolist() for a in (track.ts_s, track.lat, track.lon, track.acc))
    p = res.p.tolist()
    return _answer(track.case_id, track.subject_id, res.probability,
                   (ts[c], lat[c], lon[c], acc[c]), res.closest_m,
                   [(ts[i], lat[i], lon[i], acc[i], p[i]) for i in support.tolist()],
                   int(res.support.size), int(track.n), gaps)


@dataclass(frozen=True)
class Derived:
    """What `from_full_track` and `proximity.summarise` compute per fix, for the fixes of
    many cases at once (sorted by case, then `fix_order`): the same numbers."""

    ts_s: F64
    first: npt.NDArray[np.bool_]  # the case's first fix
    last: npt.NDArray[np.bool_]  # the case's last fix
    prev_s: F64  # NaN: none
    p: F64  # 0 when dominated
    dist: F64
    run_start: npt.NDArray[np.bool_]


def _derive(place: CompiledZone, f: Fixes) -> Derived:
    """Per fix, as the reference computes it case by case: the previous fix's time, run
    starts (10 minutes without a fix, or a new case), dominance (the least acc within 10
    minutes in the same case: the windows are found on (case, time) as complex numbers,
    which numpy orders lexicographically, so the time comparisons are the reference's
    float ones), the distance and p (computed only for the fixes that are not dominated
    and whose `proximity.p_upper_bound` reaches `P_FLOOR`: the others' p is 0 either way;
    `fix_probabilities` is element-wise)."""
    ts_s = f.ts_us / 1e6  # as the reference has them
    first = np.ones(ts_s.size, dtype=bool)
    first[1:] = f.case[1:] != f.case[:-1]
    last = np.ones(ts_s.size, dtype=bool)
    last[:-1] = first[1:]
    prev_s = np.concatenate(([np.nan], ts_s[:-1]))
    prev_s[first] = np.nan
    run_start = first.copy()
    run_start[1:] |= np.diff(ts_s) >= proximity.RUN_GAP_S
    key = f.case + 1j * ts_s
    lo = np.searchsorted(key, f.case + 1j * (ts_s - proximity.RUN_GAP_S), side="left")
    hi = np.searchsorted(key, f.case + 1j * (ts_s + proximity.RUN_GAP_S), side="right")
    near_min = proximity.range_min(np.maximum(f.acc, proximity.MIN_ACC_M), lo, hi)
    dist = proximity.distance_m(place, f.lat, f.lon)
    # p only where it counts: not dominated, and p may reach P_FLOOR (below it p is 0)
    need = np.flatnonzero((near_min * proximity.DOMINANCE > f.acc)
                          & (proximity.p_upper_bound(place, dist, f.acc) >= proximity.P_FLOOR))
    p = np.zeros(ts_s.size)
    p[need] = proximity.fix_probabilities(place, f.lat[need], f.lon[need], f.acc[need])[0]
    return Derived(ts_s, first, last, prev_s, p, dist, run_start)


def _probabilities(f: Fixes, d: Derived, starts: I64) -> F64:
    """Per case, ``1 - prod(1 - max p of each run)`` (0 below `P_FLOOR`, at most 1), the
    products multiplied run by run in order as `proximity.summarise` does."""
    rs = np.flatnonzero(d.run_start)
    per_run = np.maximum.reduceat(d.p, rs)
    total = 1.0 - np.multiply.reduceat(1.0 - per_run, np.searchsorted(f.case[rs], f.case[starts]))
    live = np.logical_or.reduceat(d.p > 0, starts)
    return np.where(live & (total >= proximity.P_FLOOR), np.minimum(total, 1.0), 0.0)  # type: ignore[no-any-return]


def _closest(f: Fixes, d: Derived, starts: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
    """Per case, its closest fix (`proximity.summarise`: the nearest usable one within
    `NEAR_M`, else within reach; the first of equals) and whether it has one; its last
    fix when it has none (what the reference's index -1 gives)."""
    usable = f.acc <= ACC_MAX_M
    within = (d.dist <= NEAR_M) & usable
    has = np.logical_or.reduceat(within, starts)
    eligible = np.where(has[f.case], within, (d.dist <= proximity.reach_m(f.acc)) & usable)
    least = np.minimum.reduceat(np.where(eligible, d.dist, np.inf), starts)
    at = np.flatnonzero(eligible & (d.dist == least[f.case]))
    out = np.flatnonzero(d.last)  # cases with no eligible fix
    found = np.logical_or.reduceat(eligible, starts)
    out[found] = at[np.searchsorted(f.case[at], np.flatnonzero(found))]
    return out, found


def _support(f: Fixes, d: Derived) -> tuple[I64, I64]:
    """The fixes with p > 0 shown per case (the `MAX_SUPPORT` largest p, the earlier of
    equals, in time order) and each case's count of fixes with p > 0."""
    sup = np.flatnonzero(d.p > 0)
    order = sup[np.lexsort((sup, -d.p[sup], f.case[sup]))]
    rank = np.arange(order.size) - np.searchsorted(f.case[order], f.case[order])
    return np.sort(order[rank < MAX_SUPPORT]), np.bincount(f.case[sup], minlength=len(f.case_ids))


def _gap_rows(f: Fixes, d: Derived, t0: float, t1: float) -> tuple[I64, F64, F64, npt.NDArray[np.bool_]]:
    """Every gap of every case (`_gaps`), in case then time order: (case, start, end,
    near_place); a fix at a gap's edge is near when the last fix of its instant is within
    `NEAR_M` (and usable)."""
    near = (d.dist <= NEAR_M) & (f.acc <= ACC_MAX_M)
    same_next = np.zeros(d.ts_s.size, dtype=bool)
    same_next[:-1] = ~d.last[:-1] & (d.ts_s[1:] == d.ts_s[:-1])
    # the last fix of each run of equal instants, for every fix of the run
    ends = np.flatnonzero(~same_next)
    last_of_instant = ends[np.searchsorted(ends, np.arange(d.ts_s.size))]
    lead = np.flatnonzero(d.first & (d.ts_s - t0 > proximity.GAP_S))
    inner = np.flatnonzero(d.ts_s - d.prev_s > proximity.GAP_S)
    tail = np.flatnonzero(d.last & (t1 - d.ts_s > proximity.GAP_S))
    case = np.concatenate((f.case[lead], f.case[inner], f.case[tail]))
    start = np.concatenate((np.full(lead.size, t0), d.prev_s[inner], d.ts_s[tail]))
    end = np.concatenate((d.ts_s[lead], d.ts_s[inner], np.full(tail.size, t1)))
    near_place = np.concatenate((near[last_of_instant[lead]],
                                 near[inner - 1] | near[last_of_instant[inner]], near[tail]))
    # within a case: the leading gap, the inner ones in time order, the trailing one
    kind = np.concatenate((np.zeros(lead.size), np.ones(inner.size), np.full(tail.size, 2)))
    o = np.lexsort((kind, case))  # stable: the inner ones stay in time order
    return case[o], start[o], end[o], near_place[o]


def answer_all(place: CompiledZone, f: Fixes, subjects: dict[uuid.UUID, uuid.UUID],
               start: datetime, end: datetime, min_probability: float) -> list[ProximityMatch]:
    """The answers of every case of `f` (its whole tracks in the window), computed for all
    of them at once with segment operations: the same answers as `from_full_track` and
    `match` case by case (the reference: `bench/investigations.py --check`,
    `tests/integration/test_proximity_search.py`), without their per-case Python work;
    only the matches get objects."""
    if not f.case_ids:
        return []
    d = _derive(place, f)
    starts = np.flatnonzero(d.first)
    prob = _probabilities(f, d, starts)
    g_case, g_start, g_end, g_near = _gap_rows(f, d, start.timestamp(), end.timestamp())
    flagged = np.zeros(len(f.case_ids), dtype=bool)
    flagged[g_case[g_near]] = True
    answered = np.flatnonzero((prob >= max(min_probability, proximity.P_FLOOR)) | flagged)
    closest, has_closest = _closest(f, d, starts)
    shown, supporting = _support(f, d)
    shown = shown[np.isin(f.case[shown], answered)]
    n = np.diff(np.append(starts, d.ts_s.size))
    g_at = np.searchsorted(g_case, np.arange(len(f.case_ids) + 1)).tolist()
    s_at = (answered.size + np.searchsorted(f.case[shown], np.arange(len(f.case_ids) + 1))).tolist()
    # (ts, lat, lon, acc, p, dist) of the closest fix of each answered case, then of the
    # shown fixes, as Python floats (only these: the whole columns took 28 ms)
    rows = list(zip(*(a[np.concatenate((closest[answered], shown))].tolist()
                      for a in (d.ts_s, f.lat, f.lon, f.acc, d.p, d.dist)), strict=True))
    gaps = [_gap(a, b, near) for a, b, near in zip(
        g_start.tolist(), g_end.tolist(), g_near.tolist(), strict=True)]
    out = []
    for j, k in enumerate(answered.tolist()):
        ts, lat, lon, acc, _, dist = rows[j]
        case_id = f.case_ids[k]
        out.append(_answer(
            case_id, subjects[case_id], float(prob[k]), (ts, lat, lon, acc),
            dist if has_closest[k] else math.inf, [r[:5] for r in rows[s_at[k]:s_at[k + 1]]],
            int(supporting[k]), int(n[k]), gaps[g_at[k]:g_at[k + 1]]))
    return out


def search(
    conn: Any, *, place: CompiledZone, start: datetime, end: datetime,
    min_probability: float = 0.01, scope_sql: str = "TRUE",
    scope_params: dict[str, Any] | None = None,
) -> list[ProximityMatch]:
    """The matches, most probable first (psycopg connection; no audit: see `proximity_search`)."""
    tracks, subjects = fetch_tracks(conn, place=place, start=start, end=end,
                                    min_probability=min_probability, scope_sql=scope_sql,
                                    scope_params=scope_params)
    found = answer_all(place, tracks, subjects, start, end, min_probability)
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
