"""`bench.gpsfit`: the measures find what was planted in synthetic tracks, and only that;
the fitted parameters load into the simulator's model."""

from __future__ import annotations

import math

import numpy as np

from bench.gpsfit import (
    Counts,
    _ou_fit,
    fit,
    measure_piece,
    params_from,
    summarise,
)
from bench.realgps import M_PER_DEG, Track
from simulator.gps import RealisticParams

LAT0, LON0 = 43.2, 76.9
T0 = 1_700_000_000_000


def _track(x: np.ndarray, y: np.ndarray, t_s: np.ndarray, acc: float = math.nan) -> Track:
    lat = LAT0 + y / M_PER_DEG
    lon = LON0 + x / (M_PER_DEG * math.cos(math.radians(LAT0)))
    return Track("synthetic", "t", (T0 + t_s * 1000).astype(np.int64), lat, lon,
                 np.full(x.shape[0], acc))


def _still(n: int, rng: np.random.Generator, sigma: float = 3.0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.arange(n, dtype=np.float64) * 30.0
    return rng.normal(0, sigma, n), rng.normal(0, sigma, n), t


def test_a_quiet_still_track_has_no_spike_and_no_excursion() -> None:
    x, y, t = _still(240, np.random.default_rng(1))
    c = measure_piece(_track(x, y, t))
    assert c.gaps == 0 and not c.spikes and not c.excursions
    assert c.ordinary_tested > 200 and c.ordinary_spikes == 0
    assert 1.8 < c.still_hours <= 2.0


def test_a_spike_after_a_gap_is_found_with_its_distance() -> None:
    x, y, t = _still(240, np.random.default_rng(2))
    t[120:] += 600.0  # a 10-minute gap before fix 120
    x[120] += 400.0  # and the first fix after it 400 m off
    c = measure_piece(_track(x, y, t))
    assert c.gaps == 1 and 600 <= c.gap_s[0] <= 640
    assert c.after_gap_tested == 1 and len(c.spikes) == 1 and 380 < c.spikes[0] < 420
    assert c.ordinary_spikes == 0


def test_a_multipath_excursion_is_found_and_a_real_ride_is_not() -> None:
    rng = np.random.default_rng(3)
    x, y, t = _still(240, rng)
    x[100:104] += 500.0  # 4 fixes 500 m away, back at once: multipath
    # a real ride out and back at 4 m/s: as far, but slower than multipath moves
    x[180:183] += [120.0, 240.0, 120.0]
    c = measure_piece(_track(x, y, t, acc=5.0))
    assert len(c.excursions) == 1
    dur, dist, fixes = c.excursions[0]
    assert fixes == 4 and dur == 120.0 and 480 < dist < 520
    assert c.excursion_acc == [5.0] * 4


def test_drift_fit_recovers_an_ornstein_uhlenbeck_process() -> None:
    rng = np.random.default_rng(4)
    n, sigma, tau = 4_000, 8.0, 120.0
    rho = math.exp(-30.0 / tau)
    x = np.zeros(n)
    y = np.zeros(n)
    for k in range(1, n):
        x[k] = rho * x[k - 1] + math.sqrt(1 - rho * rho) * sigma * rng.standard_normal()
        y[k] = rho * y[k - 1] + math.sqrt(1 - rho * rho) * sigma * rng.standard_normal()
    c = measure_piece(_track(x, y, np.arange(n) * 30.0))
    assert c.dwell_fixes > 0.9 * n
    f = _ou_fit(c.msd)
    assert 0.8 * sigma < f["sigma_m"] < 1.2 * sigma
    assert 0.6 * tau < f["tau_s"] < 1.5 * tau


def test_the_fit_writes_parameters_the_simulator_loads() -> None:
    rng = np.random.default_rng(5)
    x, y, t = _still(480, rng)
    t[200:] += 900.0
    x[200] += 300.0
    x[300:302] += 600.0
    report = fit({"synthetic": [_track(x, y, t)]})
    assert report["pooled"]["spike_after_gap"]["spikes"] == 1
    assert report["pooled"]["multipath"]["count"] == 1
    p = RealisticParams.from_dict(params_from(report))
    assert p.spike_p == 1.0 and p.gaps_per_hour > 0
    assert len(p.multipath_m_quantiles) == 11 and 580 < p.multipath_m_quantiles[5] < 620


def test_counts_add_up() -> None:
    a, b = Counts(hours=1.0, gaps=2, gap_s=[200.0, 300.0]), Counts(hours=2.0, gaps=1,
                                                                 gap_s=[150.0])
    a.add(b)
    s = summarise(a)
    assert s["gaps"]["count"] == 3 and s["gaps"]["per_hour"] == 1.0
