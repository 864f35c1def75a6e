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

Determinism: every device draws from its own stream (`numpy.random.SeedSequence`
spawned per device), in blocks, so a device's n-th fix gets the same noise whatever
the batching of the simulation loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


@dataclass
class NoisyFixes:
    lat: F64
    lon: F64
    acc: F64
    src: npt.NDArray[np.int8]


class GpsModel:
    """Noise for N devices; call `observe` with a batch of (device, true position) rows."""

    def __init__(self, n: int, seed: int | np.random.SeedSequence, params: GpsParams | None = None
                 ) -> None:
        self.params = params or GpsParams()
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._gens = [np.random.Generator(np.random.PCG64(s)) for s in ss.spawn(n)]
        self._bank = np.empty((n, BLOCK, DRAWS))
        self._ptr = np.full(n, BLOCK, dtype=np.int64)
        self._z = np.zeros((n, 2))  # AR(1) unit error state
        self._last_t = np.full(n, -np.inf)

    def _draws(self, dev: I64) -> F64:
        """DRAWS uniforms per row (each device's next ones from its own stream)."""
        empty = dev[self._ptr[dev] >= BLOCK]
        for d in np.unique(empty):
            self._bank[d] = self._gens[d].random((BLOCK, DRAWS))
            self._ptr[d] = 0
        out = self._bank[dev, self._ptr[dev]]
        self._ptr[dev] += 1
        return out

    def observe(self, dev: I64, ts: F64, lat: F64, lon: F64, indoor: BoolA) -> NoisyFixes:
        """Reported positions for one fix per listed device (each device at most once)."""
        p = self.params
        u = self._draws(dev)
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
        rho = np.exp(-np.maximum(dt, 0.0) / CORRELATION_S)[:, None]
        zx, zy = _normal(u[:, 4], u[:, 5])
        fresh = np.stack([zx, zy], axis=1)
        z = rho * self._z[dev] + np.sqrt(1.0 - rho * rho) * fresh
        self._z[dev] = np.where(cell[:, None], self._z[dev], z)
        self._last_t[dev] = ts
        sigma = acc * SIGMA_PER_ACC
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
        kx = M_PER_DEG * np.cos(np.radians(lat))
        return NoisyFixes(
            lat=lat + err[:, 1] / M_PER_DEG,
            lon=lon + err[:, 0] / kx,
            acc=np.asarray(np.round(acc, 1), dtype=np.float64),
            src=src,
        )


def _normal(u1: F64, u2: F64) -> tuple[F64, F64]:
    """Two independent standard normals from two uniforms (Box-Muller)."""
    r = np.sqrt(-2.0 * np.log(np.maximum(1.0 - u1, 1e-300)))
    a = 2 * math.pi * u2
    return r * np.cos(a), r * np.sin(a)
