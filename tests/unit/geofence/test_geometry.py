"""Zone compilation, validation and signed distances (shapely is the oracle).

Comparisons are made in each zone's own local metric frame: the shapely polygon is
built from the compiled (projected) coordinates, so projection error plays no part
and agreement must be tight (1 mm for inside/outside, 0.05 m or 0.1 % for distances).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence import InvalidGeometry, ZoneStore, compile_zone, haversine_m
from geofence.geometry import M_PER_DEG

from .helpers import LAT0, circle_zone, ll, ring, square, star


def _shapely_local(z: Any) -> Any:
    """The compiled zone as a shapely (Multi)Polygon in its local frame."""
    rings = []
    for k in range(z.ring_offsets.size - 1):
        a, b = z.ring_offsets[k], z.ring_offsets[k + 1]
        rings.append(np.column_stack((z.ax[a:b], z.ay[a:b])))
    # Parity semantics: symmetric difference of all rings == shells minus holes.
    geom = shapely.Polygon(rings[0])
    for r in rings[1:]:
        geom = geom.symmetric_difference(shapely.Polygon(r))
    return geom


def _check_against_shapely(z: Any, x: np.ndarray, y: np.ndarray) -> None:
    ref = _shapely_local(z)
    inside = shapely.contains_xy(ref, x, y)
    bd = shapely.distance(ref.boundary, shapely.points(x, y))
    la = z.lat0 + y / z.ky
    lo = z.lon0 + x / z.kx
    store = ZoneStore([z])
    d, exact = store.signed_distances(la, lo, np.arange(x.size), np.zeros(x.size, np.int64))
    assert exact.all()
    clear = bd > 1e-3
    assert np.array_equal(d[clear] < 0, inside[clear])
    np.testing.assert_allclose(np.abs(d), bd, rtol=1e-3, atol=0.05)
    # The CompiledZone convenience path (float64) agrees too.
    d64 = z.signed_distance(la, lo)
    np.testing.assert_allclose(d64, d, atol=0.01)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(3, 40),
    r=st.floats(30.0, 2000.0),
    holes=st.integers(0, 2),
)
def test_random_polygons_with_holes_match_shapely(seed: int, k: int, r: float, holes: int) -> None:
    rng = np.random.default_rng(seed)
    shell = star(rng, 0.0, 0.0, r, k)
    rings = [ring(shell)]
    # Holes (k >= 6: the star's inner radius is then > 0.2 r): small clockwise stars.
    for h in range(holes if k >= 6 else 0):
        a = 2 * math.pi * h / max(holes, 1)
        cx, cy = 0.1 * r * math.cos(a), 0.1 * r * math.sin(a)
        hole = star(rng, cx, cy, 0.05 * r, int(rng.integers(3, 9)))
        rings.append(ring(hole[::-1]))
    z = compile_zone(
        zone_id="z", kind="exclusion", geometry={"type": "Polygon", "coordinates": rings}
    )
    x = rng.uniform(-1.5 * r, 1.5 * r, 400)
    y = rng.uniform(-1.5 * r, 1.5 * r, 400)
    # Points near the holes too.
    x[:100] = rng.uniform(-0.2 * r, 0.2 * r, 100)
    y[:100] = rng.uniform(-0.2 * r, 0.2 * r, 100)
    # Shift to the zone's frame (its reference is its bbox centre, not the star centre).
    cx0, cy0 = z.to_local(*ll(0.0, 0.0))
    _check_against_shapely(z, x + float(cx0), y + float(cy0))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_multipolygon_union_matches_shapely(seed: int) -> None:
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(3):
        cx = i * 900.0
        parts.append([ring(star(rng, cx, 0.0, 350.0, int(rng.integers(5, 20))))])
    z = compile_zone(
        zone_id="m", kind="inclusion", geometry={"type": "MultiPolygon", "coordinates": parts}
    )
    x0, y0 = z.to_local(*ll(-500.0, -500.0))
    x1, y1 = z.to_local(*ll(2300.0, 500.0))
    x = rng.uniform(float(x0), float(x1), 500)
    y = rng.uniform(float(y0), float(y1), 500)
    _check_against_shapely(z, x, y)


def test_points_on_and_near_the_boundary() -> None:
    z = compile_zone(zone_id="s", kind="exclusion", geometry=square(0, 0, 100))
    # Along the boundary the distance is 0 (sign irrelevant); 1 m inside/outside.
    xs = np.array([0.0, 0.0, 0.0, 99.0, 101.0])
    ys = np.array([100.0, 99.0, 101.0, 0.0, 0.0])
    d = z.signed_distance(*ll(xs, ys))
    np.testing.assert_allclose(np.abs(d[0]), 0.0, atol=1e-3)
    np.testing.assert_allclose(d[1:], [-1.0, 1.0, -1.0, 1.0], atol=2e-3)


def test_circle_is_haversine_minus_radius() -> None:
    z = compile_zone(zone_id="c", kind="exclusion", circle=circle_zone(0.0, 0.0, 250.0))
    rng = np.random.default_rng(3)
    la, lo = ll(rng.uniform(-600, 600, 200), rng.uniform(-600, 600, 200))
    expect = haversine_m(la, lo, z.lat0, z.lon0) - 250.0
    np.testing.assert_allclose(z.signed_distance(la, lo), expect, atol=1e-9)
    # A point 100 m north of the centre: 150 m inside.
    np.testing.assert_allclose(z.signed_distance(*ll(0.0, 100.0)), [-150.0], atol=0.01)


def test_cutoff_returns_lower_bound_outside() -> None:
    zs = [
        compile_zone(zone_id="a", kind="exclusion", geometry=square(0, 0, 100)),
        compile_zone(zone_id="b", kind="exclusion", circle=circle_zone(0.0, 0.0, 100.0)),
    ]
    store = ZoneStore(zs)
    la, lo = ll(np.array([0.0, 150.0, 5000.0, 0.0, 150.0, 5000.0]), np.zeros(6))
    zi = np.array([0, 0, 0, 1, 1, 1])
    d, exact = store.signed_distances(la, lo, np.arange(6), zi, cutoff=200.0)
    assert exact.tolist() == [True, True, False, True, True, False]
    full, _ = store.signed_distances(la, lo, np.arange(6), zi)
    assert (d[~exact] >= 200.0).all() and (d[~exact] <= full[~exact] + 1e-3).all()
    np.testing.assert_allclose(d[exact], full[exact])


def test_segments_deeper_matches_sampling() -> None:
    rng = np.random.default_rng(11)
    zs = [
        compile_zone(
            zone_id=f"z{i}",
            kind="exclusion",
            geometry={"type": "Polygon", "coordinates": [ring(star(rng, 0.0, 0.0, 300.0, 14))]},
        )
        for i in range(30)
    ]
    store = ZoneStore(zs)
    for i, z in enumerate(zs):
        for _ in range(10):
            a = rng.uniform(0, 2 * math.pi)
            b = a + math.pi + rng.normal(0, 0.4)
            off = rng.normal(0, 80, 2)
            pa = (500 * math.cos(a) + off[0], 500 * math.sin(a) + off[1])
            pb = (500 * math.cos(b) + off[0], 500 * math.sin(b) + off[1])
            la_a, lo_a = ll(*pa)
            la_b, lo_b = ll(*pb)
            margin = float(rng.uniform(10, 120))
            got = store.segments_deeper(
                np.array([i]),
                np.array([la_a]),
                np.array([lo_a]),
                np.array([la_b]),
                np.array([lo_b]),
                np.array([margin]),
            )[0]
            t = np.linspace(0, 1, 20001)
            sampled = float(
                -z.signed_distance(la_a + t * (la_b - la_a), lo_a + t * (lo_b - lo_a)).min()
            )
            if abs(sampled - margin) < 0.2:
                continue  # too close to call with 5 cm sampling
            assert (got > margin) == (sampled > margin)
            if got > margin:
                assert margin < got <= sampled + 0.01


@pytest.mark.parametrize(
    ("geometry", "circle", "field"),
    [
        ({"type": "Point", "coordinates": [76.9, 43.2]}, None, "geometry.type"),
        (
            {"type": "Polygon", "coordinates": [[[76.9, 43.2], [76.91, 43.2], [76.9, 43.2]]]},
            None,
            "geometry.coordinates[0]",
        ),
        (
            {
                "type": "Polygon",
                "coordinates": [[[76.9, 43.2], [76.91, 43.2], [76.91, 43.21], [76.9, 43.21]]],
            },
            None,
            "geometry.coordinates[0]",
        ),
        (
            {
                "type": "Polygon",
                "coordinates": [[[76.9, 43.2], [76.91, 43.2], [76.91, 95.0], [76.9, 43.2]]],
            },
            None,
            "geometry.coordinates[0][2]",
        ),
        (
            {
                "type": "Polygon",
                "coordinates": [[[76.9, 43.2], [float("nan"), 43.2], [76.91, 43.21], [76.9, 43.2]]],
            },
            None,
            "geometry.coordinates[0][1]",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
            None,
            "geometry.coordinates[0]",
        ),
        ({"type": "MultiPolygon", "coordinates": []}, None, "geometry.coordinates"),
        (None, {"center": [76.9, 43.2], "radius_m": -5}, "circle.radius_m"),
        (None, {"center": [200, 43.2], "radius_m": 5}, "circle.center"),
        (None, None, "geometry"),
    ],
)
def test_invalid_geometry_names_the_field(geometry: Any, circle: Any, field: str) -> None:
    with pytest.raises(InvalidGeometry) as ei:
        compile_zone(zone_id="x", kind="exclusion", geometry=geometry, circle=circle)
    assert ei.value.field == field


def test_self_intersection_and_bad_holes() -> None:
    bow = ring([(0, 0), (100, 100), (100, 0), (0, 100)])
    with pytest.raises(InvalidGeometry, match="self-intersecting"):
        compile_zone(
            zone_id="x", kind="exclusion", geometry={"type": "Polygon", "coordinates": [bow]}
        )
    shell = ring([(0, 0), (100, 0), (100, 100), (0, 100)])
    outside_hole = ring([(200, 200), (210, 200), (210, 210)])
    with pytest.raises(InvalidGeometry) as ei:
        compile_zone(
            zone_id="x",
            kind="exclusion",
            geometry={"type": "Polygon", "coordinates": [shell, outside_hole]},
        )
    assert ei.value.field == "geometry.coordinates[1]"
    crossing_hole = ring([(50, 50), (150, 50), (150, 60)])
    with pytest.raises(InvalidGeometry, match="crosses"):
        compile_zone(
            zone_id="x",
            kind="exclusion",
            geometry={"type": "Polygon", "coordinates": [shell, crossing_hole]},
        )
    overlapping = {
        "type": "MultiPolygon",
        "coordinates": [[shell], [ring([(50, 50), (60, 50), (60, 60)])]],
    }
    with pytest.raises(InvalidGeometry, match="overlaps"):
        compile_zone(zone_id="x", kind="exclusion", geometry=overlapping)
    with pytest.raises(InvalidGeometry) as ei:
        compile_zone(zone_id="x", kind="zone", geometry=square(0, 0, 10))
    assert ei.value.field == "kind"
    with pytest.raises(InvalidGeometry) as ei:
        compile_zone(zone_id="x", kind="exclusion", geometry=square(0, 0, 10), buffer_m=-1)
    assert ei.value.field == "buffer_m"


def test_projection_error_is_small_at_zone_scale() -> None:
    """Local-frame distances vs haversine for points within a few km (documented bound)."""
    z = compile_zone(zone_id="c", kind="exclusion", geometry=square(0, 0, 1000))
    rng = np.random.default_rng(5)
    la, lo = ll(rng.uniform(-5000, 5000, 300), rng.uniform(-5000, 5000, 300))
    x, y = z.to_local(la, lo)
    local = np.hypot(x, y)
    geo = haversine_m(la, lo, z.lat0, z.lon0)
    rel = np.abs(local - geo) / np.maximum(geo, 1.0)
    assert rel.max() < 1e-3
    assert abs(M_PER_DEG - 111_195.08) < 0.1
    assert pytest.approx(43.24) == LAT0
