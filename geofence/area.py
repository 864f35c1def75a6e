"""The service area: where a zone may lie (a latitude/longitude box), and the swap hint.

A zone outside the area is refused; if swapping every point's latitude and longitude
puts it inside, the coordinates were most likely given as [lat, lon] instead of
GeoJSON's [lon, lat]. Fixes are never checked against it: a fix outside is evidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class ServiceArea:
    """A latitude/longitude box in degrees (bounds included)."""

    lat_min: float
    lon_min: float
    lat_max: float
    lon_max: float

    def contains(self, lon: float, lat: float) -> bool:
        return self.lat_min <= lat <= self.lat_max and self.lon_min <= lon <= self.lon_max


class Placement(StrEnum):
    INSIDE = "inside"
    SWAPPED = "swapped"  # outside, but inside with latitude and longitude swapped
    OUTSIDE = "outside"


def place(points: Iterable[tuple[float, float]], area: ServiceArea) -> Placement:
    """Where the [lon, lat] `points` lie: all inside, all inside once swapped, or outside."""
    pts = list(points)
    if all(area.contains(lon, lat) for lon, lat in pts):
        return Placement.INSIDE
    if pts and all(area.contains(lat, lon) for lon, lat in pts):
        return Placement.SWAPPED
    return Placement.OUTSIDE


def zone_points(
    geometry: Mapping[str, Any] | None, circle: Mapping[str, Any] | None
) -> Iterator[tuple[float, float]]:
    """A zone's [lon, lat] points: every vertex of its GeoJSON geometry, or its circle's centre."""
    if circle is not None:
        lon, lat = circle["center"][:2]
        yield float(lon), float(lat)
    if geometry is None:
        return
    coords = geometry.get("coordinates") or []
    polygons = coords if geometry.get("type") == "MultiPolygon" else [coords]
    for polygon in polygons:
        for ring in polygon:
            for p in ring:
                yield float(p[0]), float(p[1])
