"""The service-area check of zones: inside, swapped (the hint), outside."""

from __future__ import annotations

from geofence.area import Placement, ServiceArea, place, zone_points
from probation.settings import Settings

KZ = Settings().area()  # the default: Kazakhstan's bounding box


def ring(lon: float, lat: float, d: float = 0.01) -> list[list[float]]:
    return [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]


def square(lon: float, lat: float) -> dict[str, object]:
    return {"type": "Polygon", "coordinates": [ring(lon, lat)]}


def test_default_area_is_kazakhstans_bounding_box() -> None:
    assert ServiceArea(lat_min=40.5, lon_min=46.4, lat_max=55.5, lon_max=87.4) == KZ


def test_almaty_is_inside_and_swapped_almaty_gets_the_hint() -> None:
    assert place(zone_points(square(76.9, 43.2), None), KZ) is Placement.INSIDE
    # [lat, lon] instead of [lon, lat]: latitude 76.9 (the Barents Sea's latitude).
    assert place(zone_points(square(43.2, 76.9), None), KZ) is Placement.SWAPPED
    assert place(zone_points(None, {"center": [43.2, 76.9], "radius_m": 100}), KZ) \
        is Placement.SWAPPED


def test_elsewhere_is_outside_without_the_hint() -> None:
    assert place(zone_points(square(2.35, 48.85), None), KZ) is Placement.OUTSIDE  # Paris
    assert place(zone_points(None, {"center": [0.0, 0.0], "radius_m": 100}), KZ) \
        is Placement.OUTSIDE


def test_every_vertex_counts_including_holes_and_multipolygons() -> None:
    inside, far = ring(76.9, 43.2), ring(2.35, 48.85)
    straddling = {"type": "Polygon", "coordinates": [
        [[76.9, 43.2], [90.0, 43.2], [90.0, 43.3], [76.9, 43.2]]]}
    assert place(zone_points(straddling, None), KZ) is Placement.OUTSIDE
    multi = {"type": "MultiPolygon", "coordinates": [[inside], [far]]}
    assert place(zone_points(multi, None), KZ) is Placement.OUTSIDE
    holed = {"type": "Polygon", "coordinates": [inside, far]}
    assert place(zone_points(holed, None), KZ) is Placement.OUTSIDE


def test_bounds_are_included() -> None:
    assert place([(46.4, 40.5), (87.4, 55.5)], KZ) is Placement.INSIDE
    assert place([(87.41, 55.5)], KZ) is Placement.OUTSIDE
