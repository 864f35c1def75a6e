"""Small geodesy for the simulator: a local metric frame, haversine, circle/polygon distances.

The conventions match the geofence engine's (`geofence/geometry.py`): circles use the
haversine distance to the centre minus the radius on the 6 371 008.8 m sphere;
polygons use Euclidean distances in an equirectangular frame around the centre of
their bounding box. The simulator's own rule evaluator (`violations.RuleEvaluator`)
therefore classifies a fix exactly as the backend does, up to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

EARTH_RADIUS_M = 6_371_008.8
M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0

#: Almaty city centre (Republic Square).
ALMATY = (43.2380, 76.9450)


@dataclass(frozen=True)
class Frame:
    """An equirectangular metric frame around (lat0, lon0): x east, y north, metres."""

    lat0: float
    lon0: float

    @property
    def kx(self) -> float:
        return M_PER_DEG * math.cos(math.radians(self.lat0))

    def to_xy(self, lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[F64, F64]:
        la = np.asarray(lat, dtype=np.float64)
        lo = np.asarray(lon, dtype=np.float64)
        return (lo - self.lon0) * self.kx, (la - self.lat0) * M_PER_DEG

    def to_latlon(self, x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[F64, F64]:
        xs = np.asarray(x, dtype=np.float64)
        ys = np.asarray(y, dtype=np.float64)
        return self.lat0 + ys / M_PER_DEG, self.lon0 + xs / self.kx


CITY = Frame(*ALMATY)


def haversine_m(lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike,
                lon2: npt.ArrayLike) -> F64:
    """Great-circle distance in metres (vectorised)."""
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    s1 = np.sin((p2 - p1) * 0.5)
    s2 = np.sin(np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64)) * 0.5)
    a = s1 * s1 + np.cos(p1) * np.cos(p2) * s2 * s2
    return np.asarray(2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0))))


def polygon_signed_distance(x: F64, y: F64, ring_x: F64, ring_y: F64) -> F64:
    """Signed distance (metres, negative inside) of points to one closed ring (even-odd).

    `ring_x`/`ring_y` are the vertices without the closing repeat.
    """
    ax, ay = ring_x, ring_y
    bx, by = np.roll(ring_x, -1), np.roll(ring_y, -1)
    ex, ey = bx - ax, by - ay
    l2 = ex * ex + ey * ey
    px = np.asarray(x, dtype=np.float64)[..., None]
    py = np.asarray(y, dtype=np.float64)[..., None]
    t = np.clip(((px - ax) * ex + (py - ay) * ey) / np.where(l2 > 0, l2, 1.0), 0.0, 1.0)
    dx = px - (ax + t * ex)
    dy = py - (ay + t * ey)
    dist = np.sqrt((dx * dx + dy * dy).min(axis=-1))
    crosses = ((ay > py) != (by > py)) & (
        px < ax + (py - ay) * np.divide(ex, ey, out=np.zeros_like(ey), where=ey != 0)
    )
    inside = (crosses.sum(axis=-1) % 2) == 1
    return np.where(inside, -dist, dist)


@dataclass(frozen=True)
class Zone:
    """A circle (`radius_m` > 0) or a single-ring polygon, in degrees."""

    lat: float  # circle centre, or the polygon's bounding-box centre (its frame origin)
    lon: float
    radius_m: float = 0.0
    ring: tuple[tuple[float, float], ...] = ()  # (lon, lat) vertices, not closed

    @property
    def is_circle(self) -> bool:
        return not self.ring

    def frame(self) -> Frame:
        return Frame(self.lat, self.lon)

    def signed_distance(self, lat: npt.ArrayLike, lon: npt.ArrayLike) -> F64:
        """Metres to the boundary, negative inside (vectorised)."""
        if self.is_circle:
            return haversine_m(lat, lon, self.lat, self.lon) - self.radius_m
        f = self.frame()
        x, y = f.to_xy(lat, lon)
        rx, ry = f.to_xy([p[1] for p in self.ring], [p[0] for p in self.ring])
        return polygon_signed_distance(x, y, rx, ry)

    def geojson(self) -> dict[str, object]:
        """The API's zone geometry fields: `circle` or a GeoJSON `geometry`."""
        if self.is_circle:
            return {"circle": {"center": [round(self.lon, 7), round(self.lat, 7)],
                               "radius_m": round(self.radius_m, 1)}}
        ring = [[round(lo, 7), round(la, 7)] for lo, la in self.ring]
        return {"geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}}

    def extent_m(self) -> float:
        """Largest distance from (lat, lon) to the boundary."""
        if self.is_circle:
            return self.radius_m
        d = haversine_m([p[1] for p in self.ring], [p[0] for p in self.ring], self.lat, self.lon)
        return float(d.max())


def segment_point_distance(ax: float, ay: float, bx: float, by: float, px: float,
                           py: float) -> float:
    """Distance from point p to segment ab (plane)."""
    ex, ey = bx - ax, by - ay
    l2 = ex * ex + ey * ey
    t = 0.0 if l2 <= 0 else max(0.0, min(1.0, ((px - ax) * ex + (py - ay) * ey) / l2))
    return math.hypot(px - (ax + t * ex), py - (ay + t * ey))


def irregular_polygon(lat: float, lon: float, radius_m: float, rng: np.random.Generator,
                      vertices: int = 8) -> Zone:
    """A convex-ish polygon of about `radius_m` around (lat, lon), its frame at the bbox centre."""
    f = Frame(lat, lon)
    step = 2 * math.pi / vertices  # jittered but evenly spread: the centre stays in the kernel
    ang = step * (np.arange(vertices) + rng.uniform(-0.3, 0.3, vertices)) + rng.uniform(0, step)
    r = radius_m * rng.uniform(0.8, 1.15, vertices)
    la, lo = f.to_latlon(r * np.cos(ang), r * np.sin(ang))
    ring = tuple((float(o), float(a)) for o, a in zip(lo, la, strict=True))
    clat = (float(la.min()) + float(la.max())) / 2
    clon = (float(lo.min()) + float(lo.max())) / 2
    return Zone(lat=clat, lon=clon, ring=ring)
