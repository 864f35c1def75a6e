"""The simulator's realistic GPS model: the shapes it adds (outages, spikes after gaps,
multipath excursions while still, drift while still), marked as noise, and the simple
model's output unchanged where the realistic one adds nothing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from simulator.geo import M_PER_DEG
from simulator.gps import (
    NOISE_MULTIPATH,
    NOISE_SPIKE,
    GpsModel,
    RealisticParams,
)

LAT, LON = 43.24, 76.95
KX = M_PER_DEG * np.cos(np.radians(LAT))
BASE = RealisticParams.load()
QUIET = replace(BASE, gaps_per_hour=0.0, spike_p=0.0, multipath_per_still_hour=0.0)


def _run(params: RealisticParams | None, n_dev: int, steps: int, *, still: bool = True,
         dt: float = 60.0, seed: int = 7, skip: tuple[int, int] | None = None
         ) -> list[tuple[np.ndarray, object]]:
    """Fixes of `n_dev` devices at one point every `dt` s (rows `skip` = (from, to) not
    asked: the device was off)."""
    m = GpsModel(n_dev, seed, realistic=params)
    out = []
    for k in range(steps):
        if skip and skip[0] <= k < skip[1]:
            continue
        dev = np.arange(n_dev)
        ts = np.full(n_dev, 1_000_000.0 + k * dt)
        obs = m.observe(dev, ts, np.full(n_dev, LAT), np.full(n_dev, LON),
                        np.zeros(n_dev, dtype=bool), still=np.full(n_dev, still))
        out.append((ts, obs))
    return out


def _err_m(obs: object, gps_only: bool = False) -> np.ndarray:
    e = np.hypot((obs.lat - LAT) * M_PER_DEG, (obs.lon - LON) * KX)  # type: ignore[attr-defined]
    return e[obs.acc < 500] if gps_only else e  # type: ignore[attr-defined]


def test_fitted_parameters_load() -> None:
    assert 0 < BASE.spike_p < 1 and BASE.gaps_per_hour > 0 and BASE.multipath_per_still_hour > 0
    assert len(BASE.spike_m_quantiles) == 11 and BASE.spike_m_quantiles[0] >= 100
    assert BASE.drift_sigma_m > 0 and BASE.drift_tau_s > 0


def test_simple_model_is_the_realistic_one_without_its_additions() -> None:
    a = _run(None, 20, 30, still=False)
    b = _run(QUIET, 20, 30, still=False)
    for (_, oa), (_, ob) in zip(a, b, strict=True):
        assert np.array_equal(oa.lat, ob.lat) and np.array_equal(oa.acc, ob.acc)  # type: ignore[attr-defined]
        assert ob.valid.all() and not ob.noise.any()  # type: ignore[attr-defined]
        assert oa.valid is None  # type: ignore[attr-defined]


def test_spike_after_a_gap_only() -> None:
    p = replace(QUIET, spike_p=1.0)
    rows = _run(p, 50, 30, skip=(10, 15))  # 5 minutes without a fix
    for k, (_, obs) in enumerate(rows):
        spike = obs.noise == NOISE_SPIKE  # type: ignore[attr-defined]
        if k == 10:  # the first fix after the gap (cell positions excepted)
            assert spike.mean() > 0.9
            e = _err_m(obs)[spike]
            assert (e > BASE.spike_m_quantiles[0] - 60).all()
            assert (e < BASE.spike_m_quantiles[-1] + 100).all()
            assert obs.burst_start[spike].all()  # type: ignore[attr-defined]
            # the acc stays the receiver's usual one: optimistic
            assert np.median(obs.acc[spike]) < 30  # type: ignore[attr-defined]
        else:
            assert not spike.any()


def test_multipath_excursions_while_still_only_with_one_offset() -> None:
    p = replace(QUIET, multipath_per_still_hour=6.0)
    moving = _run(p, 50, 120, still=False)
    assert not any(obs.noise.any() for _, obs in moving)  # type: ignore[attr-defined]
    rows = _run(p, 50, 240, dt=30.0)
    noise = np.stack([obs.noise for _, obs in rows])  # type: ignore[attr-defined]
    assert (noise == NOISE_MULTIPATH).any()
    # an excursion: consecutive fixes, at most the longest fitted duration, one offset
    start = np.stack([obs.burst_start for _, obs in rows])  # type: ignore[attr-defined]
    longest = 0
    for d in range(50):
        run = 0
        for k in range(noise.shape[0]):
            run = (1 if start[k, d] else run + 1) if noise[k, d] == NOISE_MULTIPATH else 0
            longest = max(longest, run)
    assert 1 <= longest <= int(BASE.multipath_s_quantiles[-1] / 30) + 1
    off = np.concatenate([obs.offset_m[obs.noise == NOISE_MULTIPATH]  # type: ignore[attr-defined]
                          for _, obs in rows])
    assert (off >= BASE.multipath_m_quantiles[0] - 1).all()
    assert (off <= BASE.multipath_m_quantiles[-1] + 1).all()
    hours = 50 * 240 * 30 / 3600
    starts = sum(int(obs.burst_start.sum()) for _, obs in rows)  # type: ignore[attr-defined]
    assert 0.5 * 6.0 * hours < starts < 1.5 * 6.0 * hours


def test_outages_drop_fixes_for_a_bounded_while() -> None:
    p = replace(QUIET, gaps_per_hour=2.0)
    rows = _run(p, 40, 600, dt=30.0)  # 5 hours
    valid = np.stack([obs.valid for _, obs in rows])  # type: ignore[attr-defined]
    share = 1 - valid.mean()
    assert 0.05 < share < 0.4  # about 2 gaps of ~5 minutes an hour
    longest = 0
    for d in range(40):
        run = 0
        for k in range(valid.shape[0]):
            run = run + 1 if not valid[k, d] else 0
            longest = max(longest, run)
    assert longest * 30 <= p.max_outage_s + 30


@pytest.mark.parametrize("still", [True, False])
def test_drift_while_still(still: bool) -> None:
    p = replace(QUIET, drift_sigma_m=40.0, drift_tau_s=600.0)
    rows = _run(p, 200, 60, still=still)
    e = np.concatenate([_err_m(obs, gps_only=True) for _, obs in rows])
    rms_axis = float(np.sqrt(np.mean(e ** 2) / 2))
    if still:
        assert 30 < rms_axis < 50
        # and correlated: one minute apart, errors barely change
        a, b = _err_m(rows[10][1]), _err_m(rows[11][1])
        assert float(np.median(np.abs(a - b))) < 15
    else:
        assert rms_axis < 15  # consistent with acc (about 9 m)
