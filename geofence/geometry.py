"""Zone compilation and vectorised signed distances.

A zone is compiled once into flat float64 arrays in its own local metric frame:
an equirectangular projection around the centre of the zone's bounding box,

    x = (lon - lon0) * kx,   y = (lat - lat0) * ky,
    ky = R * pi / 180,       kx = ky * cos(lat0),   R = 6 371 008.8 m (mean radius).

Error bound: north-south distances are exact along meridians; east-west scale is
off by a factor cos(lat) / cos(lat0), i.e. a relative error of about
``|tan(lat0)| * |lat - lat0|`` (radians). At 43 deg N that is 0.015 % per km of
north-south offset from the reference point: < 0.1 % for points within 6 km
of it, which covers every zone up to ~10 km across and the margins the rules
care about (distances > 1 km from a zone are only compared with thresholds).
Polygon distances are Euclidean distances in this frame. Circles use the
haversine (spherical) distance to the centre minus the radius (< 0.5 % from
the WGS 84 ellipsoid).

`ZoneStore` packs many compiled zones for batch evaluation: polygon edges are
grouped by padded edge count into ``(zones, 7, pad)`` tables (start point,
edge vector, 1/|edge|^2, end y, dx/dy) so that a batch of (point, zone) pairs is
evaluated as dense ``(pairs, pad)`` blocks in cache-sized chunks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
BoolA = npt.NDArray[np.bool_]

ZoneKind = Literal["inclusion", "exclusion"]

EARTH_RADIUS_M = 6_371_008.8
M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0
_PAD_FAR = 1.0e15  # padding edges live here: never nearest, never crossed
_CHUNK = 32_768  # (pair, edge) elements per block: keeps temporaries in L2
_N_FIELDS = 7  # ax, ay, ex, ey, 1/len^2, by, ex/ey


class InvalidGeometry(ValueError):
    """A zone's geometry is unusable; ``field`` names the offending input field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, eq=False)
class CompiledZone:
    """One zone in its local metric frame (see the module docstring).

    Polygon edges run from ``(ax, ay)`` to ``(bx, by)`` (metres, all rings of all
    parts concatenated; ``ring_offsets`` delimit the rings). Circles have no edges:
    the centre is ``(lat0, lon0)`` and the radius ``radius_m``.
    """

    zone_id: str
    kind: ZoneKind
    is_circle: bool
    buffer_m: float
    lat0: float
    lon0: float
    kx: float
    ky: float
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float
    radius_m: float
    ax: F64
    ay: F64
    bx: F64
    by: F64
    ring_offsets: I64

    @property
    def n_edges(self) -> int:
        return int(self.ax.shape[0])

    def to_local(self, lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[F64, F64]:
        """Project WGS 84 degrees into this zone's frame (metres)."""
        la = np.asarray(lat, dtype=np.float64)
        lo = np.asarray(lon, dtype=np.float64)
        return (lo - self.lon0) * self.kx, (la - self.lat0) * self.ky

    def signed_distance(self, lat: npt.ArrayLike, lon: npt.ArrayLike) -> F64:
        """Exact signed distance in metres (negative inside) for points in degrees."""
        la = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        lo = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        if self.is_circle:
            return haversine_m(la, lo, self.lat0, self.lon0) - self.radius_m
        x, y = self.to_local(la, lo)
        return signed_distance_local(x, y, self.ax, self.ay, self.bx, self.by)


# --------------------------------------------------------------------------- kernels


def haversine_m(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> F64:
    """Great-circle distance in metres on the mean-radius sphere (vectorised)."""
    p1 = np.radians(lat1)
    p2 = np.radians(lat2)
    s1 = np.sin((p2 - p1) * 0.5)
    s2 = np.sin(np.radians(np.asarray(lon2) - np.asarray(lon1)) * 0.5)
    a = s1 * s1 + np.cos(p1) * np.cos(p2) * s2 * s2
    return np.asarray(2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0))))


def signed_distance_local(x: F64, y: F64, ax: F64, ay: F64, bx: F64, by: F64) -> F64:
    """Signed distance of points to the region bounded by the given edges (even-odd rule).

    Straightforward dense (points x edges) evaluation, chunked; used for validation,
    segment sampling and single zones. Negative inside.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.shape[0]
    out = np.empty(n, dtype=np.float64)
    if ax.shape[0] == 0:
        out.fill(np.inf)
        return out
    ex = bx - ax
    ey = by - ay
    l2 = ex * ex + ey * ey
    il2 = np.divide(1.0, l2, out=np.zeros_like(l2), where=l2 > 0)
    slope = np.divide(ex, ey, out=np.zeros_like(ey), where=ey != 0)
    step = max(1, _CHUNK // max(1, ax.shape[0]))
    for s in range(0, n, step):
        e = min(n, s + step)
        px = x[s:e, None]
        py = y[s:e, None]
        dx = px - ax
        dy = py - ay
        t = dx * ex + dy * ey
        t *= il2
        np.clip(t, 0.0, 1.0, out=t)
        qx = dx - t * ex
        qy = dy - t * ey
        d2 = qx * qx + qy * qy
        d = np.sqrt(d2.min(axis=1))
        cross = (ay > py) != (by > py)
        cross &= dx < dy * slope
        odd = (np.count_nonzero(cross, axis=1) & 1).astype(bool)
        out[s:e] = np.where(odd, -d, d)
    return out


# --------------------------------------------------------------------------- parsing


def _num(v: Any, field: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidGeometry(field, "coordinate must be a number")
    f = float(v)
    if not math.isfinite(f):
        raise InvalidGeometry(field, "coordinate must be finite")
    return f


def _position(p: Any, field: str) -> tuple[float, float]:
    if not isinstance(p, (list, tuple)) or len(p) < 2:
        raise InvalidGeometry(field, "position must be [lon, lat]")
    lon = _num(p[0], field)
    lat = _num(p[1], field)
    if not -180.0 <= lon <= 180.0:
        raise InvalidGeometry(field, "longitude out of range [-180, 180]")
    if not -90.0 <= lat <= 90.0:
        raise InvalidGeometry(field, "latitude out of range [-90, 90]")
    return lon, lat


def _ring(ring: Any, field: str) -> F64:
    """Validated ring as a (k, 2) lon/lat array without the closing position."""
    if not isinstance(ring, (list, tuple)):
        raise InvalidGeometry(field, "ring must be an array of positions")
    if len(ring) < 4:
        raise InvalidGeometry(field, "ring needs at least 4 positions")
    pts: F64 | None = None
    try:  # fast path: well-formed numeric positions
        if not any(type(v) is bool for p in ring for v in p[:2]):
            a = np.array([p[:2] for p in ring], dtype=np.float64)
            if (
                a.ndim == 2
                and a.shape[1] == 2
                and np.isfinite(a).all()
                and (np.abs(a[:, 0]) <= 180.0).all()
                and (np.abs(a[:, 1]) <= 90.0).all()
                and all(len(p) >= 2 for p in ring)
            ):
                pts = a
    except (TypeError, ValueError):
        pts = None
    if pts is None:  # slow path: find the offending position
        pts = np.array(
            [_position(p, f"{field}[{i}]") for i, p in enumerate(ring)], dtype=np.float64
        )
    if not (pts[0] == pts[-1]).all():
        raise InvalidGeometry(field, "ring is not closed (first and last positions differ)")
    pts = pts[:-1]
    keep = np.ones(len(pts), dtype=bool)
    keep[1:] = np.any(pts[1:] != pts[:-1], axis=1)
    pts = pts[keep]
    if len(pts) > 1 and (pts[0] == pts[-1]).all():
        pts = pts[:-1]
    if len(pts) < 3:
        raise InvalidGeometry(field, "ring needs at least 3 distinct vertices")
    return pts


def _polygon(coords: Any, field: str) -> list[F64]:
    if not isinstance(coords, (list, tuple)) or len(coords) == 0:
        raise InvalidGeometry(field, "polygon must be a non-empty array of rings")
    return [_ring(r, f"{field}[{i}]") for i, r in enumerate(coords)]


def _proper_intersection(ax: F64, ay: F64, bx: F64, by: F64) -> tuple[int, int] | None:
    """First pair of edges that cross properly (interiors intersect at one point), if any."""
    n = ax.shape[0]
    xmin = np.minimum(ax, bx)
    xmax = np.maximum(ax, bx)
    ymin = np.minimum(ay, by)
    ymax = np.maximum(ay, by)
    block = 256
    for s in range(0, n, block):
        e = min(n, s + block)
        i = np.arange(s, e)[:, None]
        j = np.arange(n)[None, :]
        cand = (
            (j > i)
            & (xmin[s:e, None] <= xmax[None, :])
            & (xmin[None, :] <= xmax[s:e, None])
            & (ymin[s:e, None] <= ymax[None, :])
            & (ymin[None, :] <= ymax[s:e, None])
        )
        ii, jj = np.nonzero(cand)
        if ii.size == 0:
            continue
        ii = ii + s

        def orient(p: I64, q: I64, rx: F64, ry: F64) -> F64:
            return (bx[p] - ax[p]) * (ry - ay[p]) - (by[p] - ay[p]) * (rx - ax[p])

        o1 = orient(ii, ii, ax[jj], ay[jj])
        o2 = orient(ii, ii, bx[jj], by[jj])
        o3 = orient(jj, jj, ax[ii], ay[ii])
        o4 = orient(jj, jj, bx[ii], by[ii])
        hit = (o1 * o2 < 0) & (o3 * o4 < 0)
        if hit.any():
            k = int(np.flatnonzero(hit)[0])
            return int(ii[k]), int(jj[k])
    return None


def _signed_area(pts: F64) -> float:
    x = pts[:, 0]
    y = pts[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]) + x[-1] * y[0] - x[0] * y[-1])


def compile_zone(
    *,
    zone_id: str,
    kind: str,
    geometry: Mapping[str, Any] | None = None,
    circle: Mapping[str, Any] | None = None,
    buffer_m: float = 0.0,
) -> CompiledZone:
    """Validate a zone (GeoJSON Polygon/MultiPolygon or circle) and compile it.

    Raises `InvalidGeometry` naming the bad field (``geometry.coordinates[0][2]``,
    ``circle.radius_m``, ...). Checks: type, ring length >= 4, closed rings,
    coordinate range and finiteness, proper self-intersections (within and between
    rings), holes outside their shell and overlapping MultiPolygon parts.
    """
    if kind not in ("inclusion", "exclusion"):
        raise InvalidGeometry("kind", "must be 'inclusion' or 'exclusion'")
    if isinstance(buffer_m, bool) or not isinstance(buffer_m, (int, float)):
        raise InvalidGeometry("buffer_m", "must be a number")
    buf = float(buffer_m)
    if not math.isfinite(buf) or buf < 0:
        raise InvalidGeometry("buffer_m", "must be a finite number >= 0")
    if (geometry is None) == (circle is None):
        raise InvalidGeometry("geometry", "exactly one of geometry and circle is required")
    zk: ZoneKind = "inclusion" if kind == "inclusion" else "exclusion"
    if circle is not None:
        return _compile_circle(zone_id, zk, circle, buf)
    assert geometry is not None
    return _compile_polygons(zone_id, zk, geometry, buf)


def _compile_circle(zone_id: str, kind: ZoneKind, circle: Any, buf: float) -> CompiledZone:
    if not isinstance(circle, Mapping):
        raise InvalidGeometry("circle", "must be an object with center and radius_m")
    if "center" not in circle:
        raise InvalidGeometry("circle.center", "is required")
    lon, lat = _position(circle["center"], "circle.center")
    r = circle.get("radius_m")
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(float(r)):
        raise InvalidGeometry("circle.radius_m", "must be a finite number")
    radius = float(r)
    if radius <= 0:
        raise InvalidGeometry("circle.radius_m", "must be > 0")
    if abs(lat) > 89.0:
        raise InvalidGeometry("circle.center", "latitude too close to a pole")
    ky = M_PER_DEG
    kx = M_PER_DEG * math.cos(math.radians(lat))
    # Bounding box slightly inflated: it must contain the haversine circle.
    dlat = radius * 1.01 / ky
    dlon = radius * 1.01 / (M_PER_DEG * math.cos(math.radians(min(89.9, abs(lat) + dlat))))
    empty = np.zeros(0, dtype=np.float64)
    return CompiledZone(
        zone_id=zone_id,
        kind=kind,
        is_circle=True,
        buffer_m=buf,
        lat0=lat,
        lon0=lon,
        kx=kx,
        ky=ky,
        lat_min=lat - dlat,
        lat_max=lat + dlat,
        lon_min=lon - dlon,
        lon_max=lon + dlon,
        radius_m=radius,
        ax=empty,
        ay=empty,
        bx=empty,
        by=empty,
        ring_offsets=np.zeros(1, dtype=np.int64),
    )


def _compile_polygons(zone_id: str, kind: ZoneKind, geometry: Any, buf: float) -> CompiledZone:
    if not isinstance(geometry, Mapping):
        raise InvalidGeometry("geometry", "must be a GeoJSON object")
    gtype = geometry.get("type")
    coords = geometry.get("coordinates")
    parts: list[list[F64]]
    if gtype == "Polygon":
        parts = [_polygon(coords, "geometry.coordinates")]
        fields = [["geometry.coordinates" + f"[{r}]" for r in range(len(parts[0]))]]
    elif gtype == "MultiPolygon":
        if not isinstance(coords, (list, tuple)) or len(coords) == 0:
            raise InvalidGeometry("geometry.coordinates", "must be a non-empty array of polygons")
        parts = [_polygon(p, f"geometry.coordinates[{i}]") for i, p in enumerate(coords)]
        fields = [
            [f"geometry.coordinates[{i}][{r}]" for r in range(len(p))] for i, p in enumerate(parts)
        ]
    else:
        raise InvalidGeometry("geometry.type", "must be 'Polygon' or 'MultiPolygon'")

    allpts = np.concatenate([r for p in parts for r in p])
    lon_min, lat_min = allpts.min(axis=0)
    lon_max, lat_max = allpts.max(axis=0)
    if lon_max - lon_min > 180.0:
        raise InvalidGeometry(
            "geometry.coordinates", "zone spans more than 180 degrees of longitude"
        )
    lat0 = 0.5 * (lat_min + lat_max)
    lon0 = 0.5 * (lon_min + lon_max)
    if abs(lat0) > 89.0:
        raise InvalidGeometry("geometry.coordinates", "zone too close to a pole")
    ky = M_PER_DEG
    kx = M_PER_DEG * math.cos(math.radians(lat0))

    rings_xy: list[F64] = []
    ring_field: list[str] = []
    ring_part: list[int] = []
    for pi_, (p, pf) in enumerate(zip(parts, fields, strict=True)):
        for r, f in zip(p, pf, strict=True):
            xy = np.column_stack(((r[:, 0] - lon0) * kx, (r[:, 1] - lat0) * ky))
            rings_xy.append(xy)
            ring_field.append(f)
            ring_part.append(pi_)
    a_all = np.concatenate(rings_xy)
    b_all = np.concatenate([np.concatenate((xy[1:], xy[:1])) for xy in rings_xy])
    ax = np.ascontiguousarray(a_all[:, 0])
    ay = np.ascontiguousarray(a_all[:, 1])
    bx = np.ascontiguousarray(b_all[:, 0])
    by = np.ascontiguousarray(b_all[:, 1])
    offsets = np.zeros(len(rings_xy) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rings_xy])

    hit = _proper_intersection(ax, ay, bx, by)
    if hit is not None:
        ring_of = np.searchsorted(offsets, np.array(hit), side="right") - 1
        r1, r2 = int(ring_of[0]), int(ring_of[1])
        if r1 == r2:
            raise InvalidGeometry(ring_field[r1], "ring is self-intersecting")
        raise InvalidGeometry(ring_field[r2], f"ring crosses {ring_field[r1]}")
    for xy, f in zip(rings_xy, ring_field, strict=True):
        if _signed_area(xy) == 0.0:
            raise InvalidGeometry(f, "ring has zero area")

    # Holes must lie inside their shell; parts must not overlap.
    tol = 1e-6
    ring_idx = 0
    part_rings: list[list[int]] = []
    for p in parts:
        part_rings.append(list(range(ring_idx, ring_idx + len(p))))
        ring_idx += len(p)
    for rings in part_rings:
        shell = rings[0]
        s0, s1 = offsets[shell], offsets[shell + 1]
        for h in rings[1:]:
            hx, hy = rings_xy[h][:, 0], rings_xy[h][:, 1]
            d = signed_distance_local(hx, hy, ax[s0:s1], ay[s0:s1], bx[s0:s1], by[s0:s1])
            if np.any(d > tol):
                raise InvalidGeometry(ring_field[h], "hole lies outside its shell")
    if len(parts) > 1:
        for i, ri in enumerate(part_rings):
            for j, rj in enumerate(part_rings):
                if i == j:
                    continue
                q0, q1 = offsets[rj[0]], offsets[rj[-1] + 1]
                xy = rings_xy[ri[0]]
                d = signed_distance_local(
                    xy[:, 0], xy[:, 1], ax[q0:q1], ay[q0:q1], bx[q0:q1], by[q0:q1]
                )
                if np.any(d < -tol):
                    raise InvalidGeometry(
                        f"geometry.coordinates[{i}]", f"polygon overlaps polygon {j}"
                    )

    return CompiledZone(
        zone_id=zone_id,
        kind=kind,
        is_circle=False,
        buffer_m=buf,
        lat0=float(lat0),
        lon0=float(lon0),
        kx=kx,
        ky=ky,
        lat_min=float(lat_min),
        lat_max=float(lat_max),
        lon_min=float(lon_min),
        lon_max=float(lon_max),
        radius_m=0.0,
        ax=ax,
        ay=ay,
        bx=bx,
        by=by,
        ring_offsets=offsets,
    )


# --------------------------------------------------------------------------- packed store


def _row_min(q: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Row minima of a 2-D array with short rows.

    ``min(axis=1)`` runs a tiny inner loop per row; reducing a transposed copy over
    axis 0 is an elementwise loop over long rows, ~10x faster here.
    """
    out: npt.NDArray[np.float32] = np.ascontiguousarray(q.T).min(axis=0)
    return out


def _row_odd(c: BoolA) -> BoolA:
    """True where a row of a 2-D boolean array has an odd number of True values."""
    odd: BoolA = np.bitwise_xor.reduce(np.ascontiguousarray(c.T), axis=0)
    return odd


def _pad_size(n: int) -> int:
    if n <= 64:
        return max(4, -(-n // 4) * 4)
    g = 1 << max(0, n.bit_length() - 4)
    return -(-n // g) * g


def _box_distance(fr: F64, x: F64, y: F64) -> F64:
    """Distance from local points to their zones' boxes, a lower bound of the distance
    to the shape (``fr``: the zones' `ZoneStore.frame` rows)."""
    gx = fr[:, 4] - x
    np.maximum(gx, x - fr[:, 5], out=gx)
    np.clip(gx, 0.0, np.inf, out=gx)  # np.clip: np.maximum(a, scalar) is ~3x slower
    gy = fr[:, 6] - y
    np.maximum(gy, y - fr[:, 7], out=gy)
    np.clip(gy, 0.0, np.inf, out=gy)
    gx *= gx
    gy *= gy
    gx += gy
    lb: F64 = np.sqrt(gx, out=gx)
    lb *= fr[:, 8]  # circles: haversine vs local frame, stay a lower bound
    return lb


class ZoneStore:
    """Many compiled zones packed for batch evaluation (indices are positions in `zones`).

    Per zone: ``kind_excl``, ``is_circle``, ``buffer_m``, ``lat0``, ``lon0``, ``kx``,
    ``ky``, ``radius_m``, degree bbox ``lat_min..lon_max``, local bbox
    ``xmin..ymax`` (metres), and ``cls``/``row``: the padded edge table
    ``tables[cls][:, row]`` (shape ``(7, pad)``) holding its edges (``cls = -1`` for circles).
    """

    def __init__(self, zones: Sequence[CompiledZone]) -> None:
        self.zones: tuple[CompiledZone, ...] = tuple(zones)
        n = len(self.zones)

        def col(name: str) -> F64:
            return np.fromiter((getattr(z, name) for z in self.zones), dtype=np.float64, count=n)

        self.kind_excl: BoolA = np.fromiter(
            (z.kind == "exclusion" for z in self.zones), dtype=bool, count=n
        )
        self.is_circle: BoolA = np.fromiter((z.is_circle for z in self.zones), dtype=bool, count=n)
        self.buffer_m = col("buffer_m")
        self.lat0 = col("lat0")
        self.lon0 = col("lon0")
        self.kx = col("kx")
        self.ky = col("ky")
        self.radius_m = col("radius_m")
        self.lat_min = col("lat_min")
        self.lat_max = col("lat_max")
        self.lon_min = col("lon_min")
        self.lon_max = col("lon_max")
        self.xmin = (self.lon_min - self.lon0) * self.kx
        self.xmax = (self.lon_max - self.lon0) * self.kx
        self.ymin = (self.lat_min - self.lat0) * self.ky
        self.ymax = (self.lat_max - self.lat0) * self.ky
        self.n_edges: I64 = np.fromiter((z.n_edges for z in self.zones), dtype=np.int64, count=n)
        # Radius of a disc around the reference point containing the zone (local metres).
        self.lb_scale: F64 = np.where(self.is_circle, 0.99, 1.0)
        # Per zone, one row: lon0, kx, lat0, ky, xmin, xmax, ymin, ymax, lb_scale.
        self.frame: F64 = np.ascontiguousarray(
            np.column_stack(
                (
                    self.lon0,
                    self.kx,
                    self.lat0,
                    self.ky,
                    self.xmin,
                    self.xmax,
                    self.ymin,
                    self.ymax,
                    self.lb_scale,
                )
            ).reshape(n, 9)
        )
        # Rule helpers: depth = d * depth_sign; exact-distance cutoff = m + cut_add.
        self.depth_sign: F64 = np.where(self.kind_excl, -1.0, 1.0)
        self.has_buffer: BoolA = self.kind_excl & (self.buffer_m > 0)
        self.cut_add: F64 = np.where(self.kind_excl, self.buffer_m, np.inf)
        self.bound_r: F64 = np.fromiter(
            (
                z.radius_m if z.is_circle else float(np.sqrt((z.ax**2 + z.ay**2).max()))
                for z in self.zones
            ),
            dtype=np.float64,
            count=n,
        )

        self.cls: I32 = np.full(n, -1, dtype=np.int32)
        self.row: I32 = np.zeros(n, dtype=np.int32)
        pads = sorted({_pad_size(z.n_edges) for z in self.zones if not z.is_circle})
        self.pads: tuple[int, ...] = tuple(pads)
        pad_index = {p: i for i, p in enumerate(pads)}
        members: list[list[int]] = [[] for _ in pads]
        for i, z in enumerate(self.zones):
            if not z.is_circle:
                c = pad_index[_pad_size(z.n_edges)]
                self.cls[i] = c
                self.row[i] = len(members[c])
                members[c].append(i)
        # Per pad class, one float32 (7, zones, pad) table: ax, ay, ex, ey, 1/|e|^2,
        # by, ex/ey (a contiguous padded row per field and zone). float32 keeps
        # (pair, edge) blocks small; coordinates are local metres, so the rounding is
        # < 0.1 mm for zones up to 2 km across.
        self.tables: list[npt.NDArray[np.float32]] = []
        for c, pad in enumerate(pads):
            t = np.zeros((_N_FIELDS, len(members[c]), pad), dtype=np.float64)
            t[0] = _PAD_FAR
            t[1] = _PAD_FAR
            t[5] = _PAD_FAR
            for r, zi in enumerate(members[c]):
                z = self.zones[zi]
                k = z.n_edges
                ex = z.bx - z.ax
                ey = z.by - z.ay
                l2 = ex * ex + ey * ey
                t[0, r, :k] = z.ax
                t[1, r, :k] = z.ay
                t[2, r, :k] = ex
                t[3, r, :k] = ey
                t[4, r, :k] = np.divide(1.0, l2, out=np.zeros_like(l2), where=l2 > 0)
                t[5, r, :k] = z.by
                t[6, r, :k] = np.divide(ex, ey, out=np.zeros_like(ey), where=ey != 0)
            self.tables.append(np.ascontiguousarray(t, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.zones)

    # ---------------------------------------------------------------- kernels

    def _poly_block(self, cls: int, rows: I32, px: F64, py: F64, out: F64) -> None:
        """Signed distances of local points to polygons ``rows`` of pad class ``cls``.

        Works on flat (pair x edge) arrays: each field is gathered as whole padded rows
        and the points repeated per edge, so every arithmetic step is one contiguous
        loop (broadcasting a (pairs, 1) column against (pairs, pad) rows runs an inner
        loop of only ``pad`` elements per pair, 2-3x slower for short rings).
        """
        table = self.tables[cls]
        pad = table.shape[2]
        n = rows.shape[0]
        step = max(1, _CHUNK // pad)
        ax_t, ay_t, ex_t, ey_t, il2_t, by_t, rat_t = table
        for s in range(0, n, step):
            e = min(n, s + step)
            k = e - s
            r = rows[s:e]
            x = np.repeat(px[s:e].astype(np.float32), pad)
            y = np.repeat(py[s:e].astype(np.float32), pad)
            ex = np.take(ex_t, r, axis=0).reshape(-1)
            ey = np.take(ey_t, r, axis=0).reshape(-1)
            dx = np.subtract(x, np.take(ax_t, r, axis=0).reshape(-1), out=x)
            dy = np.take(ay_t, r, axis=0).reshape(-1)
            np.subtract(y, dy, out=dy)
            t = dx * ex
            tmp = dy * ey
            t += tmp
            t *= np.take(il2_t, r, axis=0).reshape(-1)
            np.clip(t, 0.0, 1.0, out=t)
            qx = np.multiply(t, ex, out=ex)
            np.subtract(dx, qx, out=qx)
            np.multiply(qx, qx, out=qx)
            np.multiply(t, ey, out=t)
            np.subtract(dy, t, out=t)
            np.multiply(t, t, out=t)
            qx += t
            d = np.sqrt(_row_min(qx.reshape(k, pad)).astype(np.float64))
            # Crossing number: edge straddles y (ay > y xor by > y) and crosses right of x.
            c = dy < 0.0
            c ^= np.take(by_t, r, axis=0).reshape(-1) > y
            dy *= np.take(rat_t, r, axis=0).reshape(-1)
            c &= dx < dy
            odd = _row_odd(c.reshape(k, pad))
            d[odd] *= -1.0  # odd crossing count: inside, negative
            out[s:e] = d

    def polygon_signed(
        self, zone_idx: I32, px: F64, py: F64, executor: ThreadPoolExecutor | None = None
    ) -> F64:
        """Exact signed distances of local points ``(px, py)`` to polygon zones ``zone_idx``."""
        n = zone_idx.shape[0]
        out = np.empty(n, dtype=np.float64)
        if n == 0:
            return out
        cls = self.cls[zone_idx]
        jobs: list[tuple[int, I64]] = []
        if len(self.pads) == 1:
            jobs.append((0, np.arange(n, dtype=np.int64)))
        else:
            counts = np.bincount(cls, minlength=len(self.pads))
            for c in np.flatnonzero(counts).tolist():
                jobs.append((c, np.flatnonzero(cls == c)))
        tasks: list[tuple[int, I64]] = []
        for c, sel in jobs:
            # Split big jobs so that two threads can share them.
            m = sel.shape[0]
            parts = 2 if executor is not None and m * self.pads[c] > 4 * _CHUNK else 1
            for k in range(parts):
                tasks.append((c, sel[k * m // parts : (k + 1) * m // parts]))

        def run(task: tuple[int, I64]) -> tuple[I64, F64]:
            c, sel = task
            res = np.empty(sel.shape[0], dtype=np.float64)
            self._poly_block(c, self.row[zone_idx[sel]], px[sel], py[sel], res)
            return sel, res

        results = (
            list(executor.map(run, tasks))
            if executor is not None and len(tasks) > 1
            else [run(t) for t in tasks]
        )
        for sel, res in results:
            out[sel] = res
        return out

    def signed_distances(
        self,
        lat: F64,
        lon: F64,
        fix_idx: npt.ArrayLike,
        zone_idx: npt.ArrayLike,
        cutoff: npt.ArrayLike = np.inf,
        executor: ThreadPoolExecutor | None = None,
    ) -> tuple[F64, BoolA]:
        """Signed distances (metres, negative inside) for (fix, zone) pairs.

        ``lat``/``lon`` are per fix; pair ``k`` tests fix ``fix_idx[k]`` against zone
        ``zone_idx[k]``. A pair whose distance to the zone's bounding box is at least
        ``cutoff`` (scalar or per pair) is not computed exactly: its value is that
        lower bound (>= cutoff, positive = outside). Returns ``(d, exact)``.
        """
        f = np.asarray(fix_idx, dtype=np.int64)
        z = np.asarray(zone_idx, dtype=np.int32)
        cut = np.broadcast_to(np.asarray(cutoff, dtype=np.float64), f.shape)
        # One row gather per pair (frame and box of its zone) instead of eight gathers
        # from eight zone-sized arrays.
        fr = np.take(self.frame, z, axis=0)
        x = lon[f] - fr[:, 0]
        x *= fr[:, 1]
        y = lat[f] - fr[:, 2]
        y *= fr[:, 3]
        lb = _box_distance(fr, x, y)
        exact = lb < cut
        d = lb
        sel = np.flatnonzero(exact)
        if sel.size:
            zs = z[sel]
            circ = self.is_circle[zs]
            if circ.any():
                cs = sel[np.flatnonzero(circ)]
                zc = z[cs]
                d[cs] = (
                    haversine_m(lat[f[cs]], lon[f[cs]], self.lat0[zc], self.lon0[zc])
                    - self.radius_m[zc]
                )
                keep = np.flatnonzero(~circ)
                sel = sel[keep]
                zs = zs[keep]
            d[sel] = self.polygon_signed(zs, x[sel], y[sel], executor)
        return d, exact

    def segments_deeper(
        self, zone_idx: I32, lat_a: F64, lon_a: F64, lat_b: F64, lon_b: F64, margin: F64
    ) -> F64:
        """Depth reached by segments a-b inside polygon zones when it exceeds ``margin``.

        Exact decision, vectorised over (segment, edge): for every edge the parameter
        interval where the segment is within ``margin`` of the edge (line vs capsule) is
        computed; a gap between those intervals is a stretch farther than ``margin`` from
        every edge, entirely inside or outside, tested at its midpoint. Returns the depth
        at the deepest such midpoint (a lower bound of the maximum, > margin) or -inf.
        Segment endpoints are assumed outside the zone.
        """
        n = zone_idx.shape[0]
        res = np.full(n, -np.inf)
        if n == 0:
            return res
        z = zone_idx
        xa = (lon_a - self.lon0[z]) * self.kx[z]
        ya = (lat_a - self.lat0[z]) * self.ky[z]
        vx = (lon_b - self.lon0[z]) * self.kx[z] - xa
        vy = (lat_b - self.lat0[z]) * self.ky[z] - ya
        gk: list[I64] = []
        gt: list[F64] = []
        cls = self.cls[z]
        for c in np.unique(cls[cls >= 0]).tolist():
            sel = np.flatnonzero(cls == c)
            tab = self.tables[c]
            step = max(1, _CHUNK // tab.shape[2])
            for s in range(0, sel.size, step):
                k = sel[s : s + step]
                zr = self.row[z[k]]
                px, py, ex, ey, il2 = (
                    np.take(tab[i], zr, axis=0).astype(np.float64) for i in range(5)
                )
                ax_, ay_ = xa[k, None], ya[k, None]
                wx, wy = vx[k, None], vy[k, None]
                mg = margin[k, None]
                lo = np.full(px.shape, np.inf)
                hi = np.full(px.shape, -np.inf)
                # End discs.
                aa = wx * wx + wy * wy
                for cx, cy in ((px, py), (px + ex, py + ey)):
                    rx, ry = ax_ - cx, ay_ - cy
                    bb = 2.0 * (rx * wx + ry * wy)
                    cc = rx * rx + ry * ry - mg * mg
                    disc = bb * bb - 4.0 * aa * cc
                    ok = disc >= 0
                    sq = np.sqrt(np.where(ok, disc, 0.0))
                    t1 = (-bb - sq) / (2.0 * aa)
                    t2 = (-bb + sq) / (2.0 * aa)
                    lo = np.where(ok, np.minimum(lo, t1), lo)
                    hi = np.where(ok, np.maximum(hi, t2), hi)
                # Slab: 0 <= u <= 1 along the edge, |w| <= margin across it.
                u0 = ((ax_ - px) * ex + (ay_ - py) * ey) * il2
                u1 = (wx * ex + wy * ey) * il2
                el = np.sqrt(ex * ex + ey * ey)
                iel = np.divide(1.0, el, out=np.zeros_like(el), where=el > 0)
                w0 = (ex * (ay_ - py) - ey * (ax_ - px)) * iel
                w1 = (ex * wy - ey * wx) * iel
                s_lo = np.full(px.shape, -np.inf)
                s_hi = np.full(px.shape, np.inf)
                for q0, q1, a_, b_ in ((u0, u1, 0.0, 1.0), (w0, w1, -mg, mg)):
                    nz = q1 != 0
                    q1s = np.where(nz, q1, 1.0)
                    ta = (a_ - q0) / q1s
                    tb = (b_ - q0) / q1s
                    inside0 = (q0 >= a_) & (q0 <= b_)
                    s_lo = np.maximum(
                        s_lo, np.where(nz, np.minimum(ta, tb), np.where(inside0, -np.inf, np.inf))
                    )
                    s_hi = np.minimum(
                        s_hi, np.where(nz, np.maximum(ta, tb), np.where(inside0, np.inf, -np.inf))
                    )
                okr = (s_lo <= s_hi) & (el > 0)
                lo = np.where(okr, np.minimum(lo, s_lo), lo)
                hi = np.where(okr, np.maximum(hi, s_hi), hi)
                empty = (hi < 0) | (lo > 1) | (lo > hi)
                lo = np.where(empty, np.inf, np.maximum(lo, 0.0))
                hi = np.where(empty, -np.inf, np.minimum(hi, 1.0))
                order = np.argsort(lo, axis=1)
                lo_s = np.take_along_axis(lo, order, axis=1)
                hi_s = np.maximum.accumulate(np.take_along_axis(hi, order, axis=1), axis=1)
                gap = (lo_s[:, 1:] > hi_s[:, :-1]) & np.isfinite(lo_s[:, 1:]) & (hi_s[:, :-1] >= 0)
                gi, gj = np.nonzero(gap)
                gk.append(k[gi])
                gt.append(0.5 * (hi_s[gi, gj] + lo_s[gi, gj + 1]))
        if not gk:
            return res
        kk = np.concatenate(gk)
        tt = np.concatenate(gt)
        if kk.size == 0:
            return res
        d = self.polygon_signed(z[kk], xa[kk] + tt * vx[kk], ya[kk] + tt * vy[kk])
        deep = -d > margin[kk]
        np.maximum.at(res, kk[deep], -d[deep])
        return res
