"""The proximity probability: error model, per-fix probabilities, runs and gaps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geofence.geometry import compile_zone
from probation.investigations.proximity import (
    SIGMA_PER_ACC,
    assess,
    combine,
    gaps,
    p_in_circle,
    sigma_of,
)

LAT0, LON0 = 43.25, 76.95
M_LAT = 111_195.0
M_LON = M_LAT * math.cos(math.radians(LAT0))


def circle(radius: float = 200.0):  # type: ignore[no-untyped-def]
    return compile_zone(zone_id="place", kind="exclusion",
                        circle={"center": [LON0, LAT0], "radius_m": radius})


def square(half: float = 200.0):  # type: ignore[no-untyped-def]
    dlat, dlon = half / M_LAT, half / M_LON
    ring = [[LON0 - dlon, LAT0 - dlat], [LON0 + dlon, LAT0 - dlat], [LON0 + dlon, LAT0 + dlat],
            [LON0 - dlon, LAT0 + dlat], [LON0 - dlon, LAT0 - dlat]]
    return compile_zone(zone_id="place", kind="exclusion",
                        geometry={"type": "Polygon", "coordinates": [ring]})


def walk(east_m: float, acc: float, n: int = 20, step_s: float = 30.0):  # type: ignore[no-untyped-def]
    """A person walking north through a point `east_m` east of the place's centre."""
    north = np.linspace(-600.0, 600.0, n)
    lat = LAT0 + north / M_LAT
    lon = np.full(n, LON0 + east_m / M_LON)
    ts = np.arange(n) * step_s
    return ts.astype(np.float64), lat, lon, np.full(n, acc)


def test_acc_is_the_68_percent_radius() -> None:
    sigma = float(sigma_of([100.0])[0])
    assert sigma == pytest.approx(100.0 * SIGMA_PER_ACC)
    assert float(p_in_circle([0.0], 100.0, [sigma])[0]) == pytest.approx(0.68, abs=1e-6)


@pytest.mark.parametrize(("d", "r", "s"), [(0, 500, 1325), (400, 500, 100), (600, 500, 300),
                                           (2000, 500, 800), (50, 10, 30)])
def test_circle_probability_matches_monte_carlo(d: float, r: float, s: float) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(d, s, 400_000)
    y = rng.normal(0.0, s, 400_000)
    expected = float(np.mean(np.hypot(x, y) <= r))
    assert float(p_in_circle([d], r, [s])[0]) == pytest.approx(expected, abs=0.004)


@pytest.mark.parametrize("place", [circle, square])
def test_passing_through_at_20_m_is_near_certain(place) -> None:  # type: ignore[no-untyped-def]
    ts, lat, lon, acc = walk(0.0, 20.0)
    res = assess(place(), ts, lat, lon, acc, 0.0, float(ts[-1]))
    assert res.probability > 0.99
    assert res.closest_m == 0.0
    assert len(res.support) >= 5


@pytest.mark.parametrize("place", [circle, square])
def test_one_km_away_is_zero(place) -> None:  # type: ignore[no-untyped-def]
    ts, lat, lon, acc = walk(1000.0, 20.0)
    res = assess(place(), ts, lat, lon, acc, 0.0, float(ts[-1]))
    assert res.probability == 0.0
    assert len(res.support) == 0
    assert res.closest_m == pytest.approx(800.0, rel=0.01)


@pytest.mark.parametrize("place", [circle, square])
def test_a_2_km_cell_fix_on_the_place_is_low(place) -> None:  # type: ignore[no-untyped-def]
    # sixty repeated cell fixes a minute apart: one run, not sixty independent chances
    n = 60
    ts = np.arange(n) * 60.0
    res = assess(place(), ts, np.full(n, LAT0), np.full(n, LON0), np.full(n, 2000.0), 0.0, ts[-1])
    assert 0.005 < res.probability < 0.1


def test_polygon_quadrature_close_to_the_exact_circle() -> None:
    ring = [[LON0 + 300 * math.cos(a) / M_LON, LAT0 + 300 * math.sin(a) / M_LAT]
            for a in np.linspace(0, 2 * math.pi, 129)]
    ring[-1] = ring[0]
    poly = compile_zone(zone_id="p", kind="exclusion",
                        geometry={"type": "Polygon", "coordinates": [ring]})
    from probation.investigations.proximity import p_in_polygon

    north = np.array([0.0, 150.0, 290.0, 320.0, 500.0, 900.0])
    for acc in (20.0, 150.0, 600.0, 2000.0):
        s = sigma_of(np.full(north.size, acc))
        got = p_in_polygon(poly, LAT0 + north / M_LAT, np.full(north.size, LON0), s)
        exact = p_in_circle(north, 300.0, s)
        assert np.abs(got - exact).max() < 0.02, (acc, got, exact)


def test_separate_visits_combine_and_a_run_counts_once() -> None:
    p = np.array([0.5, 0.5, 0.5])
    assert combine(np.array([0.0, 60.0, 120.0]), p) == pytest.approx(0.5)
    assert combine(np.array([0.0, 3600.0, 7200.0]), p) == pytest.approx(0.875)
    assert combine(np.zeros(0), np.zeros(0)) == 0.0


def test_gaps_are_stretches_without_fixes() -> None:
    ts = np.array([1000.0, 1300.0, 5000.0])
    got = gaps(ts, 0.0, 6000.0)
    assert [(g.start_s, g.end_s) for g in got] == [(0.0, 1000.0), (1300.0, 5000.0),
                                                    (5000.0, 6000.0)]
    assert gaps(np.arange(0.0, 3600.0, 60.0), 0.0, 3600.0) == []


def test_a_cell_fix_between_precise_fixes_is_dominated() -> None:
    from probation.investigations.proximity import dominated, window_min

    ts = np.arange(10) * 240.0
    acc = np.full(10, 15.0)
    acc[4] = 2000.0
    # the person is 3 km away with GPS; one cell fix falls back on the place
    lat = np.full(10, LAT0 + 3000 / M_LAT)
    lat[4] = LAT0
    res = assess(circle(2000.0), ts, lat, np.full(10, LON0), acc, 0.0, ts[-1])
    assert res.probability == 0.0
    assert dominated(ts, acc).tolist() == [False] * 4 + [True] + [False] * 5
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 20_000, 300))
    v = rng.uniform(1, 3000, 300)
    brute = np.array([v[np.abs(t - x) <= 600].min() for x in t])
    assert np.array_equal(window_min(t, v, 600.0), brute)


@pytest.mark.parametrize("place", [circle, square])
def test_the_pruning_bound_is_never_below_p(place) -> None:  # type: ignore[no-untyped-def]
    """`p_upper_bound` (the search's pruning) >= the p the answer computes, for fixes of
    every accuracy at every distance; 0 beyond reach and for fixes over 3 km."""
    from probation.investigations.proximity import (
        distance_m,
        fix_probabilities,
        p_upper_bound,
        reach_m,
    )

    rng = np.random.default_rng(11)
    n = 20_000
    acc = np.exp(rng.uniform(np.log(0.5), np.log(5000.0), n))
    r = rng.uniform(0, 1, n) * (300 + 6 * acc)
    a = rng.uniform(0, 2 * math.pi, n)
    lat, lon = LAT0 + r * np.sin(a) / M_LAT, LON0 + r * np.cos(a) / M_LON
    z = place()
    p, dist = fix_probabilities(z, lat, lon, acc)
    bound = p_upper_bound(z, distance_m(z, lat, lon), acc)
    assert np.array_equal(dist, distance_m(z, lat, lon))
    assert (bound >= p).all()
    assert (p[acc > 3000.0] == 0).all() and (bound[acc > 3000.0] == 0).all()
    assert (bound[dist > reach_m(acc)] == 0).all()
    if z.is_circle:  # the bound prunes (a polygon's is 1 within reach)
        assert ((p > 0) & (bound < 1)).any()
