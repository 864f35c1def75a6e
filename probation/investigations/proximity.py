"""Who may have been at a place: the probability from the fixes' accuracy circles.

Plain functions on numpy arrays; no database, no HTTP.

Error model
-----------
A fix reports a position and ``acc``, the radius in metres of its accuracy circle. We
read ``acc`` as the **68 % radius** (the convention of Android's
``Location.getAccuracy`` and of the device protocol's ``acc``): the true position is
an isotropic two-dimensional Gaussian around the reported one with standard deviation
``sigma`` per axis such that the true position lies within ``acc`` with probability
0.68. For a 2-D Gaussian the distance to the centre is Rayleigh distributed,
``P(r <= a) = 1 - exp(-a^2 / (2 sigma^2))``, so ``sigma = acc / sqrt(-2 ln 0.32)``
``= acc / 1.5096``. (A 95 % reading would be ``sigma = acc / 2.4477``; we do not use it.)

Per fix, the probability that the true position was inside the place:

- **circle** (centre, radius ``R``): with ``d`` the fix's distance to the centre, the
  true distance to the centre follows a Rice distribution, so
  ``p = P(Rice(d, sigma) <= R) = 1 - Q1(d / sigma, R / sigma)`` (Marcum Q). Computed
  as the radial integral ``∫_0^{R/s} r exp(-(r^2 + a^2)/2) I0(a r) dr`` (``a = d/s``)
  with 48-point Gauss-Legendre quadrature over the part of ``[0, R/s]`` within 9
  sigma of ``a`` (absolute error < 1e-6 in the tests against a Monte-Carlo reference).
- **polygon**: fixes farther than 5 sigma from the boundary get exactly 0 or 1 (the
  error is below 3e-7). For the others, two quadratures in the polygon's local metric
  frame (even-odd rule): when sigma is small next to the polygon (below 1/8 of its
  bounding box's larger side), a stratified quadrature of the Gaussian: 24 radial
  strata of equal probability x 32 angles (768 points per fix, weight 1/768 each),
  each tested inside the polygon; when sigma is larger (a cell fix on a small place),
  the Gaussian density integrated over the polygon on a 64 x 64 grid of its bounding
  box (cells at least 8 per sigma). The error is below 0.02 in the tests against the
  exact circle result on a 128-gon.

Combining the fixes of one person
---------------------------------
Fixes close in time are not independent measurements (the same multipath, the same
cell tower, a phone standing still repeats the same error): multiplying
``1 - p`` over sixty one-minute cell fixes at the same spot would turn a 7 % chance
into 99 %. A fix is also **dominated**, and counts as 0, when another fix within ``RUN_GAP`` of it
is at least ``DOMINANCE`` (5) times more precise: a 2 km cell fix between two 20 m GPS
fixes four minutes apart says nothing the GPS fixes do not say better, and taken
alone it would lend a small probability to everyone within kilometres of the place
whose phone fell back to the cell network once. The fixes are then cut into **runs**: consecutive fixes less than
``RUN_GAP`` (10 minutes) apart form one run, and a run counts with the largest ``p``
of its fixes: ``P(inside during the run) >= max p_i`` holds whatever the dependence,
so this is the conservative (lower) figure. Runs separated by ``RUN_GAP`` or more are
treated as independent visits: ``P = 1 - prod_runs (1 - p_run)``.

What the fixes cannot say is reported as **gaps**: any stretch of the window longer
than ``GAP`` (15 minutes) without a fix (before the first fix, between fixes, after the
last one) is uncertainty, not absence: the person may have been at the place then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from geofence.geometry import CompiledZone, haversine_m, signed_distance_local

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

SIGMA_PER_ACC = 1.0 / math.sqrt(-2.0 * math.log(1.0 - 0.68))  # acc is the 68 % radius
MIN_ACC_M = 1.0  # an acc of 0 (or below 1 m) is read as 1 m: no fix is exact
REACH_SIGMA = 5.0  # beyond this many sigma from the place a fix's p is taken as 0
RUN_GAP_S = 600.0
DOMINANCE = 5.0
GAP_S = 900.0
P_FLOOR = 1e-4  # smaller probabilities are reported as 0
ACC_MAX_M = 3000.0  # coarser fixes (68 % radius above 3 km) say nothing about a place

_GL_NODES = 48
# Fixes integrated together: the temporaries of their 48 nodes each (0.8 MB) stay in the
# CPU's cache (a 2 km x 24 h search's 62,000 fixes: 72 ms in blocks of 2,048, 134 ms all
# at once); each fix's integral is the same whatever fixes share its block.
_BLOCK = 2048
_RADIAL_STRATA = 24
_ANGLES = 32
_GRID = 64
_GRID_PER_SIGMA = 8.0  # the place grid is used when a cell is at most sigma / 8


def sigma_of(acc: npt.ArrayLike) -> F64:
    """Per-axis standard deviation (m) of the Gaussian whose 68 % radius is ``acc``."""
    a = np.maximum(np.asarray(acc, dtype=np.float64), MIN_ACC_M)
    return a * SIGMA_PER_ACC


def reach_m(acc: npt.ArrayLike) -> F64:
    """How far (m) outside a place a fix with accuracy ``acc`` may still count."""
    return REACH_SIGMA * sigma_of(acc)


@lru_cache(maxsize=1)
def _gauss_legendre() -> tuple[F64, F64]:
    x, w = np.polynomial.legendre.leggauss(_GL_NODES)
    return x.astype(np.float64), w.astype(np.float64)


def _i0e(x: F64) -> F64:
    """exp(-x) I0(x) for x >= 0 without overflow."""
    out = np.empty_like(x)
    small = x < 600.0
    out[small] = np.i0(x[small]) * np.exp(-x[small])
    big = x[~small]
    out[~small] = (1.0 + 1.0 / (8.0 * big) + 9.0 / (128.0 * big * big)) / np.sqrt(2 * np.pi * big)
    return out


def p_in_circle(distance_m: npt.ArrayLike, radius_m: float, sigma_m: npt.ArrayLike) -> F64:
    """P(true position within ``radius_m`` of the centre) for fixes at ``distance_m``
    from it with per-axis error ``sigma_m`` (Rice CDF, i.e. 1 - Marcum Q1)."""
    d = np.atleast_1d(np.asarray(distance_m, dtype=np.float64))
    s = np.broadcast_to(np.asarray(sigma_m, dtype=np.float64), d.shape)
    a = d / s
    b = radius_m / s
    lo = np.maximum(0.0, a - 9.0)
    hi = np.minimum(b, a + 9.0)
    out = np.zeros(d.shape, dtype=np.float64)
    live = hi > lo
    if not live.any():
        return out
    at = np.flatnonzero(live)
    for k in range(0, at.size, _BLOCK):
        i = at[k:k + _BLOCK]
        out[i] = _rice_quadrature(lo[i], hi[i], a[i])
    return out


def _rice_quadrature(lo: F64, hi: F64, a: F64) -> F64:
    """The radial integral of `p_in_circle` over [lo, hi] for fixes at ``a`` sigma from
    the centre (row by row: the same numbers whatever rows are done together)."""
    xg, wg = _gauss_legendre()
    lo_l, hi_l, a_l = lo[:, None], hi[:, None], a[:, None]
    half = (hi_l - lo_l) * 0.5
    r = lo_l + half * (xg[None, :] + 1.0)
    # r exp(-(r^2 + a^2)/2) I0(a r) = r exp(-(r - a)^2 / 2) * [exp(-a r) I0(a r)]
    f = r * np.exp(-0.5 * (r - a_l) ** 2) * _i0e(a_l * r)
    return np.clip((f * wg[None, :]).sum(axis=1) * half[:, 0], 0.0, 1.0)  # type: ignore[no-any-return]


@lru_cache(maxsize=1)
def _unit_gaussian_points() -> tuple[F64, F64]:
    """Equal-weight points of the standard 2-D Gaussian: radial strata of equal
    probability (midpoints in the Rayleigh CDF) x evenly spaced, staggered angles."""
    u = (np.arange(_RADIAL_STRATA) + 0.5) / _RADIAL_STRATA
    rho = np.sqrt(-2.0 * np.log(1.0 - u))
    theta = 2.0 * np.pi * (np.arange(_ANGLES) + 0.5) / _ANGLES
    stagger = np.pi / _ANGLES * (np.arange(_RADIAL_STRATA) % 2)
    th = theta[None, :] + stagger[:, None]
    return (rho[:, None] * np.cos(th)).ravel(), (rho[:, None] * np.sin(th)).ravel()


def p_in_polygon(place: CompiledZone, lat: F64, lon: F64, sigma_m: F64) -> F64:
    """P(true position inside the polygon ``place``) per fix (see the module docstring)."""
    x, y = place.to_local(lat, lon)
    sd = signed_distance_local(x, y, place.ax, place.ay, place.bx, place.by)
    out = (sd < 0).astype(np.float64)
    near = np.flatnonzero(np.abs(sd) < REACH_SIGMA * sigma_m)
    if near.size == 0:
        return out
    gx, gy, cell = _place_grid(place)
    wide = sigma_m[near] * _GRID_PER_SIGMA >= _GRID * math.sqrt(cell)
    out[near[~wide]] = _gaussian_quadrature(place, x[near[~wide]], y[near[~wide]],
                                            sigma_m[near[~wide]])
    out[near[wide]] = _place_quadrature(gx, gy, cell, x[near[wide]], y[near[wide]],
                                        sigma_m[near[wide]])
    return out


def _gaussian_quadrature(place: CompiledZone, x: F64, y: F64, sigma: F64) -> F64:
    if x.size == 0:
        return np.zeros(0)
    ux, uy = _unit_gaussian_points()
    px = (x[:, None] + sigma[:, None] * ux[None, :]).ravel()
    py = (y[:, None] + sigma[:, None] * uy[None, :]).ravel()
    inside = signed_distance_local(px, py, place.ax, place.ay, place.bx, place.by) < 0
    return inside.reshape(x.size, ux.size).mean(axis=1)  # type: ignore[no-any-return]


def _place_grid(place: CompiledZone) -> tuple[F64, F64, float]:
    """Centres (local metres) of the cells of a 64 x 64 square grid over the polygon's
    bounding box that lie inside it, and the cell area."""
    x0, y0 = place.ax.min(), place.ay.min()
    side = max(place.ax.max() - x0, place.ay.max() - y0, 1e-6) / _GRID
    c = (np.arange(_GRID) + 0.5) * side
    gx, gy = (m.ravel() for m in np.meshgrid(x0 + c, y0 + c))
    inside = signed_distance_local(gx, gy, place.ax, place.ay, place.bx, place.by) < 0
    return gx[inside], gy[inside], float(side * side)


def _place_quadrature(gx: F64, gy: F64, cell: float, x: F64, y: F64, sigma: F64) -> F64:
    out = np.empty(x.size)
    for i in range(x.size):  # fixes this coarse and this near are few
        q = ((gx - x[i]) ** 2 + (gy - y[i]) ** 2) / (sigma[i] * sigma[i])
        out[i] = np.exp(-0.5 * q).sum() * cell / (2.0 * np.pi * sigma[i] * sigma[i])
    return np.minimum(out, 1.0)


def distance_m(place: CompiledZone, lat: F64, lon: F64) -> F64:
    """Distance in metres from each fix to the place (0 inside), as `fix_probabilities`."""
    if place.is_circle:
        return np.maximum(haversine_m(lat, lon, place.lat0, place.lon0) - place.radius_m, 0.0)
    return np.maximum(place.signed_distance(lat, lon), 0.0)


def fix_probabilities(place: CompiledZone, lat: F64, lon: F64, acc: F64) -> tuple[F64, F64]:
    """(p inside, distance in metres from the fix to the place, 0 inside) per fix; fixes
    coarser than ``ACC_MAX_M`` are not used (p = 0)."""
    sigma = sigma_of(acc)
    usable = np.asarray(acc) <= ACC_MAX_M
    if place.is_circle:
        centre = haversine_m(lat, lon, place.lat0, place.lon0)
        p = np.zeros(centre.shape)
        if usable.any():
            p[usable] = p_in_circle(centre[usable], place.radius_m, sigma[usable])
        dist = np.maximum(centre - place.radius_m, 0.0)
    else:
        p = np.zeros(np.shape(lat))
        if usable.any():
            p[usable] = p_in_polygon(place, lat[usable], lon[usable], sigma[usable])
        dist = np.maximum(place.signed_distance(lat, lon), 0.0)
    p = np.where(p < P_FLOOR, 0.0, p)
    return p, dist


def p_upper_bound(place: CompiledZone, dist: F64, acc: F64) -> F64:
    """Per fix, a bound that `fix_probabilities` never exceeds (for pruning): the chance
    that the true position lies ``dist`` or more from the reported one,
    ``exp(-dist^2 / (2 sigma^2))``, plus the circle quadrature's error; 1 for a polygon
    within reach (its quadratures may overshoot by a stratum); 0 beyond reach or for
    fixes that are not used."""
    sigma = sigma_of(acc)
    live = (dist <= reach_m(acc)) & (np.asarray(acc) <= ACC_MAX_M)
    if not place.is_circle:
        return live.astype(np.float64)
    bound = np.minimum(np.exp(-0.5 * (dist / sigma) ** 2) + 1e-5, 1.0)
    return np.where(live, bound, 0.0)


def window_min(ts_s: F64, values: F64, half_s: float) -> F64:
    """Per element, the minimum of ``values`` over the elements within ``half_s`` of it in
    time (``ts_s`` sorted): a sparse table of minima over powers of two."""
    if ts_s.size == 0:
        return values.copy()
    lo = np.searchsorted(ts_s, ts_s - half_s, side="left")
    hi = np.searchsorted(ts_s, ts_s + half_s, side="right")
    return range_min(values, lo, hi)


def range_min(values: F64, lo: I64, hi: I64) -> F64:
    """Per element ``i``, the minimum of ``values[lo[i]:hi[i]]`` (``lo < hi``): a sparse
    table of minima over powers of two, as deep as the widest range needs (the same
    minima whatever the depth; the tracks of many people are done in one call)."""
    k = np.floor(np.log2(hi - lo)).astype(np.int64)
    table = [values]
    while len(table) <= int(k.max()):
        prev, step = table[-1], 1 << (len(table) - 1)
        table.append(np.minimum(prev[:-step], prev[step:]))
    out = np.empty(values.size)
    for level in np.unique(k):
        sel = np.flatnonzero(k == level)
        t = table[level]
        out[sel] = np.minimum(t[lo[sel]], t[hi[sel] - (1 << level)])
    return out


def dominated(ts_s: F64, acc: F64) -> npt.NDArray[np.bool_]:
    """Fixes with a fix ``DOMINANCE`` times more precise within ``RUN_GAP_S``."""
    return window_min(ts_s, np.maximum(acc, MIN_ACC_M), RUN_GAP_S) * DOMINANCE <= acc


def run_starts(ts_s: F64, run_gap_s: float = RUN_GAP_S) -> I64:
    """Indices where a new run begins (``ts_s`` sorted, seconds)."""
    if ts_s.size == 0:
        return np.zeros(0, dtype=np.int64)
    brk = np.flatnonzero(np.diff(ts_s) >= run_gap_s) + 1
    return np.concatenate(([0], brk)).astype(np.int64)


def combine(ts_s: F64, p: F64, run_gap_s: float = RUN_GAP_S) -> float:
    """P(inside at least once) from one person's fixes (sorted by time)."""
    if p.size == 0:
        return 0.0
    per_run = np.maximum.reduceat(p, run_starts(ts_s, run_gap_s))
    total = 1.0 - float(np.prod(1.0 - per_run))
    return 0.0 if total < P_FLOOR else min(total, 1.0)


@dataclass(frozen=True)
class Gap:
    start_s: float
    end_s: float


def gaps(ts_s: F64, window_start_s: float, window_end_s: float, gap_s: float = GAP_S) -> list[Gap]:
    """Stretches of the window longer than ``gap_s`` without a fix."""
    edges = np.concatenate(([window_start_s], ts_s, [window_end_s]))
    lengths = np.diff(edges)
    idx = np.flatnonzero(lengths > gap_s)
    return [Gap(float(edges[i]), float(edges[i + 1])) for i in idx]


NEAR_M = 1000.0  # a gap next to a fix this close to the place is flagged (and see `closest`)


@dataclass(frozen=True)
class PersonResult:
    """One person's answer over the fixes it was given (time order): ``support`` indexes
    those with p > 0; ``closest`` (-1: none) the nearest of those within ``NEAR_M`` of
    the place or, when there are none, of those whose reach (5 sigma) touches it."""

    probability: float
    closest: int
    closest_m: float
    support: I64
    p: F64
    dist: F64
    gaps: list[Gap]


def summarise(
    place: CompiledZone, lat: F64, lon: F64, acc: F64, is_dominated: npt.NDArray[np.bool_],
    run: I64, gap_list: list[Gap],
) -> PersonResult:
    """The answer from fixes with their dominance flags and run numbers (non-decreasing),
    whichever subset of a track they are, as long as it holds every fix with p > 0."""
    p, dist = fix_probabilities(place, lat, lon, acc)
    p = np.where(is_dominated, 0.0, p)
    if p.size and p.any():
        starts = np.flatnonzero(np.concatenate(([True], run[1:] != run[:-1])))
        per_run = np.maximum.reduceat(p, starts)
        total = 1.0 - float(np.prod(1.0 - per_run))
        probability = 0.0 if total < P_FLOOR else min(total, 1.0)
    else:
        probability = 0.0
    usable = acc <= ACC_MAX_M
    eligible = (dist <= NEAR_M) & usable
    if not eligible.any():
        eligible = (dist <= reach_m(acc)) & usable
    closest = int(np.flatnonzero(eligible)[np.argmin(dist[eligible])]) if eligible.any() else -1
    return PersonResult(
        probability=probability, closest=closest,
        closest_m=float(dist[closest]) if closest >= 0 else math.inf,
        support=np.flatnonzero(p > 0).astype(np.int64), p=p, dist=dist, gaps=gap_list,
    )


def assess(
    place: CompiledZone, ts_s: F64, lat: F64, lon: F64, acc: F64,
    window_start_s: float, window_end_s: float,
) -> PersonResult:
    """Everything the answer says about one person from their whole track in the window
    (sorted by time, non-empty)."""
    run = np.zeros(ts_s.size, dtype=np.int64)
    if ts_s.size > 1:
        run[1:] = np.cumsum(np.diff(ts_s) >= RUN_GAP_S)
    return summarise(place, lat, lon, acc, dominated(ts_s, acc), run,
                     gaps(ts_s, window_start_s, window_end_s))
