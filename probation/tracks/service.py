"""Tracks: a case's fixes over a window as GeoJSON, thinned without losing what matters.

The fixes are those of every device while it was assigned to the case. Kept
always: the first and the last fix, and both fixes around every crossing of a
zone boundary of the case. The rest of the budget (`max_points`) goes to a
batched Douglas-Peucker: each round splits the segments (between kept fixes)
whose farthest fix deviates most, in a local metric projection, all segments
evaluated at once in numpy, until the budget is spent or the line is exact.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from sqlmodel import Session

from db.types import utcnow
from probation.audit import service as audit
from probation.errors import invalid
from probation.zones.service import case_zones_compiled

F64 = npt.NDArray[np.float64]
BoolA = npt.NDArray[np.bool_]
I64 = npt.NDArray[np.int64]

DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=92)
DEFAULT_MAX_POINTS = 2000

# One row of four arrays in PostgreSQL's binary array format (`array_send`), read straight
# into numpy: per assignment, that device's fixes in ts order through the hypertable's
# ordered index scan; several assignments are merged in numpy.
TRACK_SQL = """
SELECT array_send(coalesce(array_agg((extract(epoch FROM f.ts) * 1000000)::int8), '{}'::int8[])),
       array_send(coalesce(array_agg(f.lat), '{}'::float8[])),
       array_send(coalesce(array_agg(f.lon), '{}'::float8[])),
       array_send(coalesce(array_agg(f.acc::float8), '{}'::float8[])),
       array_send(coalesce(array_agg(f.outlier::int::int8), '{}'::int8[]))
FROM device_assignments da
CROSS JOIN LATERAL (
  SELECT f.ts, f.lat, f.lon, f.acc, f.outlier FROM fixes f
  WHERE f.device_id = da.device_id AND f.ts >= %(from)s AND f.ts < %(to)s
    AND f.ts >= da.assigned_at AND (da.unassigned_at IS NULL OR f.ts < da.unassigned_at)
  ORDER BY f.ts
) f
WHERE da.case_id = %(case)s
"""

_ELEMENT = {"int8": np.dtype([("len", ">i4"), ("v", ">i8")]),
            "float8": np.dtype([("len", ">i4"), ("v", ">f8")])}


def from_array_send(blob: bytes, kind: str) -> npt.NDArray[Any]:
    """A one-dimensional int8[]/float8[] without NULLs in binary format → a numpy array."""
    ndim = int.from_bytes(blob[0:4], "big")
    if ndim == 0:
        return np.zeros(0, dtype=np.int64 if kind == "int8" else np.float64)
    n = int.from_bytes(blob[12:16], "big")
    values = np.frombuffer(blob, dtype=_ELEMENT[kind], count=n, offset=20)["v"]
    return values.astype(np.int64 if kind == "int8" else np.float64)


def thin(x: F64, y: F64, keep: BoolA, max_points: int) -> I64:
    """Indices (sorted) of at most `max_points` points: those in `keep` plus the most
    significant others by Douglas-Peucker deviation."""
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    keep = keep.copy()
    keep[0] = keep[-1] = True
    must = np.flatnonzero(keep)
    if len(must) >= max_points:
        pick = np.unique(np.linspace(0, len(must) - 1, max_points).round().astype(np.int64))
        return must[pick]
    budget = max_points - len(must)
    idx = np.arange(n)
    while budget > 0:
        sel = np.flatnonzero(keep)
        seg = np.searchsorted(sel, idx, side="right") - 1
        seg = np.minimum(seg, len(sel) - 2)
        a = sel[seg]
        b = sel[seg + 1]
        dx = x[b] - x[a]
        dy = y[b] - y[a]
        px = x - x[a]
        py = y - y[a]
        l2 = dx * dx + dy * dy
        t = np.clip((px * dx + py * dy) / np.where(l2 > 0, l2, 1.0), 0.0, 1.0)
        d = np.hypot(px - t * dx, py - t * dy)
        d[keep] = -1.0
        seg_max = np.maximum.reduceat(d, sel[:-1])
        live = np.flatnonzero(seg_max > 1e-9)
        if live.size == 0:
            break
        chosen = live[np.argsort(-seg_max[live], kind="stable")[:budget]]
        want = np.zeros(len(seg_max), dtype=bool)
        want[chosen] = True
        hit = (d == seg_max[seg]) & want[seg] & ~keep
        hit_idx = np.flatnonzero(hit)
        _, first = np.unique(seg[hit_idx], return_index=True)
        new = hit_idx[first]
        keep[new] = True
        budget -= len(new)
    return np.flatnonzero(keep)


def _crossings(session: Session, case_id: uuid.UUID, lat: F64, lon: F64) -> BoolA:
    """Fixes on either side of a change of inside/outside of any of the case's zones."""
    mark = np.zeros(len(lat), dtype=bool)
    if len(lat) < 2:
        return mark
    for zone in case_zones_compiled(session, case_id):
        inside = zone.signed_distance(lat, lon) < 0
        flip = np.flatnonzero(inside[1:] != inside[:-1])
        mark[flip] = True
        mark[flip + 1] = True
    return mark


def case_track(
    session: Session, *, case_id: uuid.UUID, user_id: uuid.UUID, start: datetime | None,
    end: datetime | None, max_points: int,
) -> bytes:
    """The track as GeoJSON bytes (audited)."""
    end = end or utcnow()
    start = start or end - DEFAULT_WINDOW
    if end <= start:
        raise invalid("to", "time_order", location="query", other="from")
    if end - start > MAX_WINDOW:
        raise invalid("from", "greater_than_equal", location="query",
                      ge=(end - MAX_WINDOW).isoformat())
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with raw.cursor(binary=True) as cur:
        cur.execute(TRACK_SQL, {"case": case_id, "from": start, "to": end})
        row = cur.fetchone()
    assert row is not None
    ts_us = from_array_send(row[0], "int8")
    lat, lon, acc = (from_array_send(v, "float8") for v in row[1:4])
    outlier = from_array_send(row[4], "int8").astype(bool)
    if len(ts_us) > 1 and not np.all(ts_us[1:] >= ts_us[:-1]):  # several assignments
        order = np.argsort(ts_us, kind="stable")
        ts_us, lat, lon, acc = ts_us[order], lat[order], lon[order], acc[order]
        outlier = outlier[order]
    audit.record(session, user_id=user_id, action="track.read", resource="track",
                 resource_id=case_id, case_id=case_id,
                 detail={"from": start.isoformat(), "to": end.isoformat(), "fixes": len(ts_us)})
    # Outliers (monitoring-rules.md) are points of their own, marked, always kept; the
    # line and the crossings go through the other fixes only.
    good = np.flatnonzero(~outlier)
    crossing = np.zeros(len(lat), dtype=bool)
    crossing[good] = _crossings(session, case_id, lat[good], lon[good])
    if len(lat):
        lat0 = float(np.mean(lat))
        x = lon * (111_320.0 * math.cos(math.radians(lat0)))
        y = lat * 110_540.0
        kept = thin(x, y, crossing | outlier, max_points)
    else:
        kept = np.zeros(0, dtype=np.int64)
    stamps = np.datetime_as_string(ts_us[kept].astype("datetime64[us]"), unit="ms", timezone="UTC")
    k_lon = lon[kept].tolist()
    k_lat = lat[kept].tolist()
    k_acc = acc[kept].tolist()
    k_cross = crossing[kept].tolist()
    k_out = outlier[kept].tolist()
    coords = [[a, b] for a, b, o in zip(k_lon, k_lat, k_out, strict=True) if not o]
    line: dict[str, Any] = {
        "type": "Feature",
        # RFC 7946: a LineString has two or more positions
        "geometry": {"type": "LineString", "coordinates": coords} if len(coords) > 1 else None,
        "properties": {"case_id": str(case_id), "from": start.isoformat(), "to": end.isoformat(),
                       "fixes": len(lat), "points": len(kept)},
    }
    points = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [a, b]},
         "properties": {"ts": str(t), "acc": c, "crossing": cr, "outlier": o}}
        for a, b, t, c, cr, o in zip(k_lon, k_lat, stamps.tolist(), k_acc, k_cross, k_out,
                                     strict=True)
    ]
    return orjson.dumps({"type": "FeatureCollection", "features": [line, *points]})
