"""GPS noise and accuracy: what a bracelet reports for a true position.

The model (per fix, vectorised over a batch of devices):

- accuracy `acc` (the 68 % radius the device reports): outdoors log-normal around 9 m,
  clipped to 3-30 m (mostly 5-20 m); indoors 30-80 m, from GPS or Wi-Fi (src `wifi`
  for 40 % of indoor fixes); a cell-tower position (src `cell`, 1-3 km) for 0.5 % of
  outdoor and 3 % of indoor fixes;
- the error is consistent with `acc`: a 2-D Gaussian with sigma = acc / 1.51 (so that
  68 % of errors fall within `acc`), time-correlated for GPS/Wi-Fi (AR(1) on the unit
  error with correlation exp(-dt / 120 s), as real receivers drift rather than jump),
  independent and capped at 0.9 acc for cell positions;
- multipath outliers: 0.2 % of GPS fixes get an extra 1-2 acc in a random direction.

The realistic model (`RealisticParams`, ``--gps-model realistic``) adds what real
receivers do, with rates fitted on recorded tracks by `probation bench gpsfit`
(`simulator/gps_fitted.json`):

- outages: no fix at all for a while (gaps per hour of the data, durations from its
  quantiles, capped below the 30 minutes of `location_lost`);
- a spike after a gap: the first fix after at least `gap_min_s` without one (an outage,
  the device switched off) lies hundreds of metres away with probability `spike_p`;
- short multipath excursions while still: a run of fixes (30 s to 5 min) displaced
  hundreds of metres, the same way, then back;
- drift while still: the error of a still receiver is an Ornstein-Uhlenbeck process of
  the fitted spread and correlation time, whatever `acc` says.

Spikes and excursions keep the `acc` the receiver would have reported anyway: the
receiver does not know (an optimistic `acc`). They are marked (`NoisyFixes.noise`) so
that the truth can tell noise from violations.

Determinism: every device draws from its own stream (`numpy.random.SeedSequence`
spawned per device), in blocks, so a device's n-th fix gets the same noise whatever
the batching of the simulation loop.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from simulator.geo import M_PER_DEG

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BoolA = npt.NDArray[np.bool_]

SIGMA_PER_ACC = 1.0 / math.sqrt(-2.0 * math.log(1.0 - 0.68))  # ≈ 1 / 1.51
CORRELATION_S = 120.0
DRAWS = 8  # uniforms per fix
BLOCK = 64  # fixes per refill

SRC_GPS, SRC_WIFI, SRC_CELL = 0, 1, 2
SRC_NAMES = ("gps", "wifi", "cell")
NOISE_NONE, NOISE_SPIKE, NOISE_MULTIPATH = 0, 1, 2
NOISE_NAMES = ("", "spike", "multipath")
GPS_MODELS = ("simple", "realistic")
FITTED = Path(__file__).resolve().parent / "gps_fitted.json"
DRAWS_R = 8  # uniforms per fix of the realistic additions (their own streams)
#: outages end before the backend's `location_lost` (30 minutes without a good fix)
MAX_OUTAGE_S = 25 * 60.0


@dataclass(frozen=True)
class GpsParams:
    outdoor_acc_median: float = 9.0
    outdoor_acc_sigma: float = 0.35
    outdoor_acc_range: tuple[float, float] = (3.0, 30.0)
    indoor_acc_range: tuple[float, float] = (30.0, 80.0)
    indoor_wifi_share: float = 0.4
    cell_share_outdoor: float = 0.005
    cell_share_indoor: float = 0.03
    cell_acc_range: tuple[float, float] = (1_000.0, 3_000.0)
    outlier_share: float = 0.002
    outlier_scale: tuple[float, float] = (1.0, 2.0)


@dataclass(frozen=True)
class RealisticParams:
    """What real receivers do (see the module doc); `load` reads the fitted file."""

    gap_min_s: float
    gaps_per_hour: float
    gap_s_quantiles: tuple[float, ...]
    spike_p: float
    spike_m_quantiles: tuple[float, ...]
    multipath_per_still_hour: float
    multipath_s_quantiles: tuple[float, ...]
    multipath_m_quantiles: tuple[float, ...]
    drift_sigma_m: float
    drift_tau_s: float
    max_outage_s: float = MAX_OUTAGE_S

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RealisticParams:
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            kw[f.name] = tuple(float(x) for x in v) if isinstance(v, list) else float(v)
        return cls(**kw)

    @classmethod
    def load(cls, path: Path = FITTED) -> RealisticParams:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def quantile_draw(table: tuple[float, ...], u: F64) -> F64:
    """Inverse transform from a quantile table at equally spaced levels (0..100 %)."""
    levels = np.linspace(0.0, 1.0, len(table))
    return np.asarray(np.interp(u, levels, np.asarray(table, dtype=np.float64)), dtype=np.float64)


@dataclass
class NoisyFixes:
    lat: F64
    lon: F64
    acc: F64
    src: npt.NDArray[np.int8]
    #: False: the receiver has no fix (an outage of the realistic model): nothing is sent
    valid: BoolA | None = None
    #: NOISE_* per row: a spike or a multipath excursion (noise, never a violation)
    noise: npt.NDArray[np.int8] | None = None
    #: the first fix of a burst (a spike, or an excursion's first) and the burst's end (s)
    burst_start: BoolA | None = None
    burst_end: F64 | None = None
    offset_m: F64 | None = None


class GpsModel:
    """Noise for N devices; call `observe` with a batch of (device, true position) rows."""

    def __init__(self, n: int, seed: int | np.random.SeedSequence, params: GpsParams | None = None,
                 realistic: RealisticParams | None = None) -> None:
        self.params = params or GpsParams()
        self.realistic = realistic
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._gens = [np.random.Generator(np.random.PCG64(s)) for s in ss.spawn(n)]
        self._bank = np.empty((n, BLOCK, DRAWS))
        self._ptr = np.full(n, BLOCK, dtype=np.int64)
        self._z = np.zeros((n, 2))  # AR(1) unit error state
        self._last_t = np.full(n, -np.inf)
        if realistic is not None:  # the next n children: the simple part stays the same
            self._gens_r = [np.random.Generator(np.random.PCG64(s)) for s in ss.spawn(n)]
            self._bank_r = np.empty((n, BLOCK, DRAWS_R))
            self._ptr_r = np.full(n, BLOCK, dtype=np.int64)
            self._last_fix_t = np.full(n, -np.inf)  # the last fix the receiver gave
            self._outage_until = np.full(n, -np.inf)
            self._mp_until = np.full(n, -np.inf)
            self._mp_off = np.zeros((n, 2))

    @classmethod
    def named(cls, model: str, n: int, seed: int | np.random.SeedSequence) -> GpsModel:
        """`simple` or `realistic` (with the fitted parameters)."""
        if model not in GPS_MODELS:
            raise ValueError(f"unknown GPS model {model!r} (one of {', '.join(GPS_MODELS)})")
        return cls(n, seed, realistic=RealisticParams.load() if model == "realistic" else None)

    def _draws_r(self, dev: I64) -> F64:
        empty = dev[self._ptr_r[dev] >= BLOCK]
        for d in np.unique(empty):
            self._bank_r[d] = self._gens_r[d].random((BLOCK, DRAWS_R))
            self._ptr_r[d] = 0
        out = self._bank_r[dev, self._ptr_r[dev]]
        self._ptr_r[dev] += 1
        return out

    def _draws(self, dev: I64) -> F64:
        """DRAWS uniforms per row (each device's next ones from its own stream)."""
        empty = dev[self._ptr[dev] >= BLOCK]
        for d in np.unique(empty):
            self._bank[d] = self._gens[d].random((BLOCK, DRAWS))
            self._ptr[d] = 0
        out = self._bank[dev, self._ptr[dev]]
        self._ptr[dev] += 1
        return out

    def observe(self, dev: I64, ts: F64, lat: F64, lon: F64, indoor: BoolA,
                still: BoolA | None = None) -> NoisyFixes:
        """Reported positions for one fix per listed device (each device at most once);
        `still`: the person is not moving (the realistic model's drift and excursions)."""
        p = self.params
        u = self._draws(dev)
        rp = self.realistic
        still_a = np.zeros(dev.size, dtype=bool) if still is None else np.asarray(still, bool)
        # accuracy and source
        cell = u[:, 0] < np.where(indoor, p.cell_share_indoor, p.cell_share_outdoor)
        wifi = indoor & ~cell & (u[:, 1] < p.indoor_wifi_share)
        out_acc = np.clip(
            p.outdoor_acc_median * np.exp(p.outdoor_acc_sigma * _normal(u[:, 2], u[:, 3])[0]),
            *p.outdoor_acc_range,
        )
        in_acc = p.indoor_acc_range[0] + u[:, 2] * (p.indoor_acc_range[1] - p.indoor_acc_range[0])
        cell_acc = p.cell_acc_range[0] + u[:, 2] * (p.cell_acc_range[1] - p.cell_acc_range[0])
        acc = np.where(cell, cell_acc, np.where(indoor, in_acc, out_acc))
        src = np.where(cell, SRC_CELL, np.where(wifi, SRC_WIFI, SRC_GPS)).astype(np.int8)
        # correlated unit error for GPS/Wi-Fi
        dt = ts - self._last_t[dev]
        tau = CORRELATION_S if rp is None else np.where(still_a, rp.drift_tau_s, CORRELATION_S)
        rho = np.exp(-np.maximum(dt, 0.0) / tau)[:, None]
        zx, zy = _normal(u[:, 4], u[:, 5])
        fresh = np.stack([zx, zy], axis=1)
        z = rho * self._z[dev] + np.sqrt(1.0 - rho * rho) * fresh
        self._z[dev] = np.where(cell[:, None], self._z[dev], z)
        self._last_t[dev] = ts
        sigma = acc * SIGMA_PER_ACC
        if rp is not None:  # drift while still: the fitted spread, whatever acc says
            sigma = np.where(still_a & ~cell, np.maximum(sigma, rp.drift_sigma_m), sigma)
        err = np.where(cell[:, None], fresh, z) * sigma[:, None]
        # cell positions: capped; multipath outliers on GPS
        r = np.hypot(err[:, 0], err[:, 1])
        cap = np.where(cell, 0.9 * acc, np.inf)
        scale = np.where(r > cap, cap / np.maximum(r, 1e-9), 1.0)
        err *= scale[:, None]
        outlier = ~cell & ~indoor & (u[:, 6] < p.outlier_share)
        if outlier.any():
            k = np.flatnonzero(outlier)
            ang = 2 * math.pi * u[k, 7]
            mag = acc[k] * (p.outlier_scale[0] + u[k, 1] * (p.outlier_scale[1] - p.outlier_scale[0]))
            err[k, 0] += mag * np.cos(ang)
            err[k, 1] += mag * np.sin(ang)
        extra: dict[str, Any] = {}
        if rp is not None:
            extra = self._realistic(rp, dev, ts, dt, still_a, cell, err)
        kx = M_PER_DEG * np.cos(np.radians(lat))
        return NoisyFixes(
            lat=lat + err[:, 1] / M_PER_DEG,
            lon=lon + err[:, 0] / kx,
            acc=np.asarray(np.round(acc, 1), dtype=np.float64),
            src=src,
            **extra,
        )

    def _realistic(self, rp: RealisticParams, dev: I64, ts: F64, dt: F64, still: BoolA,
                   cell: BoolA, err: F64) -> dict[str, Any]:
        """Outages, spikes after gaps and multipath excursions (adds to `err` in place)."""
        u = self._draws_r(dev)
        step_h = np.clip(np.where(np.isfinite(dt), dt, 0.0), 0.0, None) / 3600.0
        # outages: no fix until they end
        in_out = ts < self._outage_until[dev]
        # a new outage only after a fix since the last one ended (never back to back)
        start = ~in_out & (self._last_fix_t[dev] >= self._outage_until[dev]) \
            & (u[:, 0] < -np.expm1(-rp.gaps_per_hour * step_h))
        if start.any():
            k = np.flatnonzero(start)
            dur = np.minimum(quantile_draw(rp.gap_s_quantiles, u[k, 1]), rp.max_outage_s)
            self._outage_until[dev[k]] = ts[k] + dur
        valid = ~in_out & ~start
        n = dev.size
        noise = np.zeros(n, dtype=np.int8)
        burst_start = np.zeros(n, dtype=bool)
        burst_end = np.zeros(n)
        offset = np.zeros(n)
        # a spike: the first fix after a gap
        after_gap = valid & (ts - self._last_fix_t[dev] >= rp.gap_min_s) \
            & np.isfinite(self._last_fix_t[dev])
        spike = after_gap & ~cell & (u[:, 2] < rp.spike_p)
        if spike.any():
            k = np.flatnonzero(spike)
            r = quantile_draw(rp.spike_m_quantiles, u[k, 3])
            a = 2 * math.pi * u[k, 4]
            err[k, 0] += r * np.cos(a)
            err[k, 1] += r * np.sin(a)
            noise[k] = NOISE_SPIKE
            burst_start[k] = True
            burst_end[k] = ts[k]
            offset[k] = r
        # multipath excursions while still: displaced the same way until they end
        in_mp = valid & ~spike & ~cell & (ts < self._mp_until[dev])
        mp_new = valid & ~spike & ~cell & ~in_mp & still & (
            u[:, 5] < -np.expm1(-rp.multipath_per_still_hour * step_h))
        if mp_new.any():
            k = np.flatnonzero(mp_new)
            # the data's duration counts one 30 s interval past the last fix
            dur = np.maximum(quantile_draw(rp.multipath_s_quantiles, u[k, 6]) - 30.0, 0.0)
            r = quantile_draw(rp.multipath_m_quantiles, u[k, 7])
            a = 2 * math.pi * u[k, 2]  # u[2] only decided spikes, which are not here
            d = dev[k]
            self._mp_until[d] = ts[k] + dur + 1e-3
            self._mp_off[d, 0] = r * np.cos(a)
            self._mp_off[d, 1] = r * np.sin(a)
            burst_start[k] = True
            burst_end[k] = ts[k] + dur
        mp = in_mp | mp_new
        if mp.any():
            k = np.flatnonzero(mp)
            err[k] += self._mp_off[dev[k]]
            noise[k] = NOISE_MULTIPATH
            offset[k] = np.hypot(self._mp_off[dev[k], 0], self._mp_off[dev[k], 1])
            burst_end[k] = np.where(mp_new[k], burst_end[k], self._mp_until[dev[k]])
        self._last_fix_t[dev[valid]] = ts[valid]
        return {"valid": valid, "noise": noise, "burst_start": burst_start,
                "burst_end": burst_end, "offset_m": offset}


def _normal(u1: F64, u2: F64) -> tuple[F64, F64]:
    """Two independent standard normals from two uniforms (Box-Muller)."""
    r = np.sqrt(-2.0 * np.log(np.maximum(1.0 - u1, 1e-300)))
    a = 2 * math.pi * u2
    return r * np.cos(a), r * np.sin(a)
