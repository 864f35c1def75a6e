"""Kinematic outliers: fixes a person cannot have made, decided without looking ahead.

Real receivers report single fixes hundreds of metres away with a small `acc` and
short clusters that jump out and back faster than anyone moves (monitoring-rules.md,
"Outliers"). This module flags them from kinematics alone, vectorised over a batch
of fixes sorted by (device, ts), with a small per-device carry between batches.

Speed of a leg (two consecutive fixes) is judged on its *effective* distance, the
distance minus both fixes' margins ``max(acc, 10 m)``. A leg is a *jump* when that
speed exceeds what the person could reach from their previous speed:

    allowed = min(v_max, max(v_free, v_prev + accel * dt / 2))

(``v_prev``: the raw speed of the leg before; ``accel * dt / 2``: the average speed
gained over ``dt`` at ``accel`` from there). Below ``v_free`` a leg is always
plausible, above ``v_max`` never. A jump starts a *suspect run*; its fixes do not
count (they neither open, close nor infer an episode) until either

- a fix is plausible again from the *anchor* (the last accepted fix before the
  jump): the run was an excursion out and back, its fixes are outliers (a single-fix
  run is the spike of the contract), the returning fix is accepted; or
- the run lasts ``settle_s``: it is where the person is (a relocation after a gap,
  a train); its fixes from then on count, the earlier ones never do, none is an
  outlier.

A *hold* (`OutlierConfig.hold_m`) is the milder verdict for a leg from rest that
kinematics cannot judge (the first fix after an outage): its fixes count but cannot
confirm an opening (`OutlierResult.held`: HELD) until the hold is released (RELEASED:
that fix confirms the held run, whatever its side) or ends as an excursion. A
*departure* from rest (`PreciseLegs.departures`: a leg faster than a walk that kinematics
finds plausible) starts a run judged like a jump's, back to where the person rested (a
gap on the way back counts as a return), but its fixes are held, not suspect: the fix
that settles it confirms them (a real walk out that began briskly is not lost). Neither
a hold nor a departure starts where an indoor rest ends at an outdoor fix
(`OutlierConfig.indoor_m`): the receiver went out, so did the person.

Decisions are causal: a fix's suspect flag depends only on fixes before it, so the
engine needs no look-ahead and late uploads replay deterministically. Only the stored
outlier flag is decided later (at the return), as a range ``[since, returned)``.

The loop below runs per *jump* (rare: well under 1 % of legs on real tracks), never
per fix; everything per fix is numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from geofence.geometry import M_PER_DEG, haversine_m
from geofence.runs import last_true

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BoolA = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class OutlierConfig:
    """Thresholds (defaults fitted on the real-GPS development set, see README)."""

    v_free_mps: float = 10.0
    v_max_mps: float = 45.0
    accel_mps2: float = 0.75
    settle_s: float = 300.0
    min_margin_m: float = 10.0
    #: Departures from rest (`PreciseLegs.departures`), judged on precise fixes (acc within
    #: ``still_acc_m``). Rest: legs no longer than ``still_k`` x their noise (the two
    #: margins in quadrature; across a gap of up to ``rest_leg_max_s`` too: the person is
    #: found where they were) for at least ``rest_s``, the last fix within
    #: ``rest_radius_m`` (beyond its margin) of where the person rests (the mean of the
    #: rest's fixes; a slow walk is a run of short legs too, but it gets somewhere).
    #: A departure: a leg of at most ``still_leg_s`` faster than ``v_depart_mps`` beyond
    #: both margins, from the last fix and from where the person rests, and faster than
    #: ``v_depart_raw_mps`` on the raw distance (a walk never is).
    still_acc_m: float = 100.0
    still_k: float = 2.0
    rest_s: float = 60.0
    rest_radius_m: float = 100.0
    rest_leg_max_s: float = 1800.0
    still_leg_s: float = 150.0
    v_depart_mps: float = 1.0
    v_depart_raw_mps: float = 2.5
    #: Holds (`PreciseLegs.holds`, `_hold_run`): a leg from rest that kinematics cannot
    #: judge (after a gap, or too slow for a departure) landing more than ``hold_m``
    #: and at most ``hold_max_m`` beyond both margins from where the person rests. Its
    #: fixes count but cannot confirm an opening until the person moves, ``settle_s``
    #: passes or a jump (released: that fix confirms); a fast leg back to where the
    #: person rested ends it as an excursion (outliers).
    hold_m: float = 50.0
    hold_max_m: float = 1500.0
    #: ... unless the person rested indoors (the rest's fixes' margins, root mean square,
    #: at least ``indoor_m``) and the fix is an outdoor one (margin up to ``outdoor_m``):
    #: the receiver went out, so did the person (the hold is released there too; no
    #: departure starts there either)
    indoor_m: float = 30.0
    outdoor_m: float = 20.0
    #: a hold's fix back is near where the person rested within a walk of it or within
    #: ``back_k`` x the noise of the place and the fix
    back_k: float = 3.0


DEFAULT_OUTLIER_CONFIG = OutlierConfig()
HELD, RELEASED = 1, 2  # `OutlierResult.held`
#: a speed no still person has (finite: carries are stored as JSON)
UNKNOWN_SPEED = 1e9
_E7 = 1e7


@dataclass(eq=False)
class Carry:
    """Per-device context between batches (one row per device group).

    ``prev_*``: the device's last fix and the raw speed of the leg that reached it
    (``has_prev`` False: none). ``since``: start (epoch ms) of the suspect run the
    device is in, 0 when none; ``anc_*``: that run's anchor.
    """

    has_prev: BoolA
    prev_ts: I64
    prev_lat: F64
    prev_lon: F64
    prev_m: F64
    prev_v: F64
    since: I64
    has_pp: BoolA
    pp_ts: I64
    pp_lat: F64
    pp_lon: F64
    pp_m: F64
    anc_ts: I64
    anc_lat: F64
    anc_lon: F64
    anc_m: F64
    anc_v: F64
    #: the last precise fix (acc within ``still_acc_m``; ``q_ts`` 0: none) and the
    #: effective speed of the leg from the precise fix before it (UNKNOWN_SPEED: too long)
    q_ts: I64
    q_lat: F64
    q_lon: F64
    q_m: F64
    q_w: F64  # `PreciseLegs.wander` of the leg that reached the last precise fix
    q_rest: I64  # since when (epoch ms) the precise fixes up to the last one were still
    q_slat: F64  # ... and the sums of the latitudes, longitudes and number of the
    q_slon: F64  # precise fixes since (where the person rests: their mean)
    q_sn: F64
    q_sm2: F64  # ... and the sum of their squared margins (in 0.01 m², whole numbers)
    depart: BoolA  # the run began with a departure from rest (its fixes held), not a jump
    hold: BoolA  # the run is a hold (`OutlierConfig.hold_m`), its fixes count
    stay: BoolA  # ... in which two held fixes soon after each other agreed (someone is there)
    h_lat: F64  # ... and its first fix (where the person appeared)
    h_lon: F64
    h_m: F64
    h_in: BoolA  # ... and whether the person had rested indoors (`OutlierConfig.indoor_m`)

    @classmethod
    def empty(cls, groups: int) -> Carry:
        z = np.zeros(groups, dtype=np.float64)
        zi = np.zeros(groups, dtype=np.int64)
        return cls(np.zeros(groups, dtype=bool), zi.copy(), z.copy(), z.copy(), z.copy(),
                   z.copy(), zi.copy(), np.zeros(groups, dtype=bool), zi.copy(), z.copy(),
                   z.copy(), z.copy(), zi.copy(), z.copy(), z.copy(), z.copy(), z.copy(),
                   zi.copy(), z.copy(), z.copy(), z.copy(), np.full(groups, UNKNOWN_SPEED),
                   zi.copy(), z.copy(), z.copy(), z.copy(), z.copy(),
                   np.zeros(groups, dtype=bool), np.zeros(groups, dtype=bool),
                   np.zeros(groups, dtype=bool), z.copy(), z.copy(), z.copy(),
                   np.zeros(groups, dtype=bool))

    def copy(self) -> Carry:
        return Carry(*(np.array(getattr(self, f)) for f in _CARRY_FIELDS))


_CARRY_FIELDS = ("has_prev", "prev_ts", "prev_lat", "prev_lon", "prev_m", "prev_v", "since",
                 "has_pp", "pp_ts", "pp_lat", "pp_lon", "pp_m",
                 "anc_ts", "anc_lat", "anc_lon", "anc_m", "anc_v", "q_ts", "q_lat", "q_lon", "q_m", "q_w",
                 "q_rest", "q_slat", "q_slon", "q_sn", "q_sm2", "depart", "hold", "stay", "h_lat", "h_lon", "h_m", "h_in")


@dataclass(eq=False)
class OutlierResult:
    suspect: BoolA  # per row: does not count (suspect at evaluation time)
    outlier: BoolA  # per row: decided outlier within this batch (the return was seen)
    #: per row: the fix before it was found a lone spike at this row (no segment from it)
    after_lone: BoolA
    #: per row: HELD counts (it may close an episode), but cannot confirm an opening;
    #: RELEASED ends a hold as real: the held run confirms there if it holds enough
    held: npt.NDArray[np.int8]
    #: decided outlier ranges per group: (group, from_ms, to_ms) with from <= ts < to;
    #: `from` may lie before the batch (a run carried in)
    ranges: list[tuple[int, int, int]]
    carry: Carry


def _planar_m(lat1: F64 | np.float64, lon1: F64 | np.float64, lat2: F64, lon2: F64,
              kx: F64 | None = None) -> F64:
    """Distance (m) in a local equirectangular frame: within 0.1 % of the great circle
    for the legs that matter (under ~10 km); far legs only ever compare as "far".
    ``kx``: `_kx` of ``lat2`` when the caller has it."""
    dy = np.subtract(lat2, lat1)
    dy *= M_PER_DEG
    dy *= dy
    dx = np.subtract(lon2, lon1)
    dx *= _kx(lat2) if kx is None else kx
    dx *= dx
    dx += dy
    out: F64 = np.sqrt(dx, out=dx)
    return out


def _legs_m(starts: I64, lat: F64, lon: F64, kx: F64, c: Carry) -> F64:
    """`_planar_m` of each row's leg from the row before (a group's first row: from the
    carried last fix), without copying the rows before."""
    dy = np.empty(lat.shape[0])
    np.subtract(lat[1:], lat[:-1], out=dy[1:])
    dy[starts] = lat[starts] - c.prev_lat
    dx = np.empty(lat.shape[0])
    np.subtract(lon[1:], lon[:-1], out=dx[1:])
    dx[starts] = lon[starts] - c.prev_lon
    dy *= M_PER_DEG
    dy *= dy
    dx *= kx
    dx *= dx
    dx += dy
    out: F64 = np.sqrt(dx, out=dx)
    return out


def _kx(lat: F64) -> F64:
    """Metres per degree of longitude at ``lat``. The cosine in single precision (numpy
    vectorises it; the double one is a scalar libm call, ~6x slower): a relative error
    below 1e-7, micrometres on the legs the rules judge."""
    k: F64 = np.cos(np.radians(lat).astype(np.float32)).astype(np.float64)
    k *= M_PER_DEG
    return k


def _allowed(v_prev: F64 | np.float64, dt_s: F64, cfg: OutlierConfig) -> F64:
    return np.minimum(cfg.v_max_mps,
                      np.maximum(cfg.v_free_mps, v_prev + cfg.accel_mps2 * dt_s * 0.5))


def _eff_speed(dist: F64, m1: F64 | np.float64, m2: F64, dt_s: F64) -> F64:
    return np.maximum(dist - m1 - m2, 0.0) / dt_s


def detect(
    starts: I64,
    ts: I64,
    lat: F64,
    lon: F64,
    acc: F64,
    carry: Carry | None = None,
    cfg: OutlierConfig = DEFAULT_OUTLIER_CONFIG,
    own_carry: bool = False,
) -> OutlierResult:
    """Suspect and outlier flags of rows sorted by (device, ts).

    ``starts``: index of the first row of each device group (ascending, ``starts[0]
    == 0`` when there are rows); ``carry``: one entry per group (``None``: nothing
    known before this batch; ``own_carry``: it is the caller's to give away, updated in
    place rather than copied). Returns the flags and the carry after the batch.
    """
    n = ts.shape[0]
    g_n = starts.shape[0]
    c = Carry.empty(g_n) if carry is None else carry if own_carry else carry.copy()
    suspect = np.zeros(n, dtype=bool)
    outlier = np.zeros(n, dtype=bool)
    after_lone = np.zeros(n, dtype=bool)
    held = np.zeros(n, dtype=np.int8)
    ranges: list[tuple[int, int, int]] = []
    if n == 0:
        return OutlierResult(suspect, outlier, after_lone, held, ranges, c)
    m = np.clip(acc, cfg.min_margin_m, np.inf)  # np.maximum(a, scalar) is ~3x slower
    # the leg from the previous fix of each row: the row before in its group (slices),
    # else the carried one (a group's first row); rows without one: `nop`
    d_ts = np.empty(n, dtype=np.int64)
    np.subtract(ts[1:], ts[:-1], out=d_ts[1:])
    d_ts[starts] = ts[starts] - c.prev_ts
    dt = np.multiply(d_ts, 0.001)
    np.clip(dt, 1.0, np.inf, out=dt)
    kx = _kx(lat)
    dist = _legs_m(starts, lat, lon, kx, c)
    p_m = np.empty(n)
    p_m[1:] = m[:-1]
    p_m[starts] = c.prev_m
    nop = starts[~c.has_prev]  # without a previous fix the speed is unknown: up to v_max
    v_raw = dist / dt
    v_raw[nop] = cfg.v_max_mps
    eff = np.subtract(dist, p_m)
    eff -= m
    np.clip(eff, 0.0, np.inf, out=eff)
    eff /= dt
    eff[nop] = cfg.v_max_mps
    # allowed = min(v_max, max(v_free, v_prev + accel * dt / 2)), v_prev the leg before's
    allowed = np.multiply(dt, cfg.accel_mps2 * 0.5)
    allowed[1:] += v_raw[:-1]
    allowed[starts] = dt[starts] * (cfg.accel_mps2 * 0.5) + np.where(
        c.has_prev, c.prev_v, cfg.v_max_mps)
    np.clip(allowed, cfg.v_free_mps, cfg.v_max_mps, out=allowed)
    jump = eff > allowed
    jump[nop] = False
    dist[nop] = np.inf
    pq = PreciseLegs(starts, ts, lat, lon, m, c, cfg, (dist, dt, p_m, eff), kx)  # taken over
    depart = pq.departures(jump)
    hold = pq.holds(jump | depart)
    busy = c.since > 0
    ev = jump | depart | hold  # kept equal to that as the walk below revises the flags
    jumps = np.flatnonzero(ev)
    if jumps.size:
        busy = busy.copy()
        busy[np.searchsorted(starts, jumps, side="right") - 1] = True
    for g in np.flatnonzero(busy).tolist():
        a = int(starts[g])
        b = int(starts[g + 1]) if g + 1 < g_n else n
        _scan_group(g, a, b, ts, lat, lon, m, v_raw, (jump, depart, hold, ev), pq, suspect,
                    outlier, after_lone, held, ranges, c, cfg)
    # the carry after the batch: each group's last fix
    last = np.append(starts[1:], n) - 1
    # the fix before the last: the row before it, or the carried last fix
    one = last == starts
    pp = np.maximum(last - 1, 0)
    c.has_pp[:] = np.where(one, c.has_prev, True)
    c.pp_ts[:] = np.where(one, c.prev_ts, ts[pp])
    c.pp_lat[:] = np.where(one, c.prev_lat, lat[pp])
    c.pp_lon[:] = np.where(one, c.prev_lon, lon[pp])
    c.pp_m[:] = np.where(one, c.prev_m, m[pp])
    c.has_prev[:] = True
    c.prev_ts[:] = ts[last]
    c.prev_lat[:] = lat[last]
    c.prev_lon[:] = lon[last]
    c.prev_m[:] = m[last]
    c.prev_v[:] = v_raw[last]
    pq.carry_out(starts)
    return OutlierResult(suspect, outlier, after_lone, held, ranges, c)


class PreciseLegs:
    """Legs between consecutive *precise* fixes (acc within ``still_acc_m``: a cell fix
    says nothing of rest or movement and is skipped), for the departure rule.

    Per row: ``q`` precise; ``prev`` the row of the precise fix before it in its group
    (-1: the carried one, -2: none; ``prev_apart``: the rows whose is not the row
    before them); the leg from it (``dist``, ``dt``, its margin ``p_m``, effective speed
    ``eff``); ``brk`` the leg is no rest (`wander`), and ``lastb`` the last such row.
    Where the person rests (`rest_of`) is computed only for the rows asked about
    (candidates, each group's last precise fix): per-row work stays a few numpy passes.
    """

    def __init__(self, starts: I64, ts: I64, lat: F64, lon: F64, m: F64, c: Carry,
                 cfg: OutlierConfig, near: tuple[F64, F64, F64, F64], kx: F64) -> None:
        """``near``: `detect`'s legs from the row before (distance, seconds, that row's
        margin, effective speed), taken over and corrected in place; ``kx``: `_kx` per row."""
        n = ts.shape[0]
        self.ts, self.lat, self.lon, self.m, self.c, self.cfg = ts, lat, lon, m, c, cfg
        self.kx = kx
        self.starts = starts
        gid = np.zeros(n, dtype=np.int64)
        gid[starts[1:]] = 1
        self.gid = np.cumsum(gid, out=gid)
        self.q = q = m <= cfg.still_acc_m
        self.lastq = last_true(q)
        prev = np.empty(n, dtype=np.int64)
        prev[0] = -1
        prev[1:] = self.lastq[:-1]
        # the rows whose leg from the row before is not their precise leg: a group's
        # first row and the rows after a coarse fix (the only ones whose previous
        # precise fix may be carried); only those rows are recomputed
        nq = np.empty(n, dtype=bool)
        np.logical_not(q[:-1], out=nq[1:])
        nq[starts] = True
        self.prev_apart = fix = np.flatnonzero(nq)
        g = self.group_of(fix)
        car = prev[fix] < starts[g]
        prev[fix[car]] = np.where(c.q_ts[g[car]] > 0, -1, -2)
        self.prev = prev
        dist, dt, p_m, eff = near
        if fix.size:
            f_ts, f_lat, f_lon, f_m = self.prev_fix(fix)
            d = _planar_m(f_lat, f_lon, lat[fix], lon[fix], kx[fix])
            dt[fix] = np.maximum((ts[fix] - f_ts) * 0.001, 1.0)
            p_m[fix] = f_m
            eff[fix] = _eff_speed(d, f_m, m[fix], dt[fix])
            dist[fix] = np.where(prev[fix] == -2, np.inf, d)
        self.dist, self.dt, self.p_m, self.eff = dist, dt, p_m, eff
        # rest: a precise fix reached by a leg that is no rest (`wander`) starts it anew
        self.brk = np.greater(q, self._rest_leg(dist, dt, p_m, m))  # q and no rest
        self.lastb = last_true(self.brk)
        self._cs: npt.NDArray[np.int64] | None = None
        self.anchors: dict[int, tuple[int, float, float]] = {}

    def group_of(self, rows: I64) -> I64:
        """The group (device) of each of the given rows."""
        out: I64 = self.gid[rows]
        return out

    def _wander(self, dist: F64, dt: F64, p_m: F64, m: F64) -> F64:
        """A leg's length over its noise (the two margins in quadrature: a still
        receiver's legs stay near 1 whatever their duration; a walk at 30 s with 10 m
        margins is 2.5); UNKNOWN_SPEED when it says nothing of rest (no fix before,
        longer than ``rest_leg_max_s``). Rest is a run of legs up to ``still_k``."""
        ok = np.isfinite(dist) & (dt <= self.cfg.rest_leg_max_s)
        noise = np.multiply(p_m, p_m)
        noise += m * m
        np.sqrt(noise, out=noise)  # (np.hypot is a libm call per element, ~5x slower)
        return np.where(ok, dist / noise, UNKNOWN_SPEED)

    def _rest_leg(self, dist: F64, dt: F64, p_m: F64, m: F64) -> BoolA:
        """`_wander` <= ``still_k``, without the square root (on every row)."""
        k2 = self.cfg.still_k * self.cfg.still_k
        lim = np.multiply(p_m, p_m)
        lim += m * m
        lim *= k2
        d2 = np.multiply(dist, dist)  # an infinite leg (no fix before) is no rest
        out: BoolA = np.less_equal(d2, lim)
        out &= dt <= self.cfg.rest_leg_max_s
        return out

    def wander(self, rows: I64) -> F64:
        """`_wander` of the given rows' precise legs (what the carry keeps)."""
        return self._wander(self.dist[rows], self.dt[rows], self.p_m[rows], self.m[rows])

    def _range_sums(self, lo: I64, hi: I64) -> F64:
        """The sums (`_sums`, as floats) over the precise rows lo..hi (inclusive) of each
        pair: a one-row range is that row's values, longer ones are gathered when they
        are short (a rest rarely spans many fixes of one batch), else taken from the
        running-sum table. Whole numbers: the same either way."""
        span = hi - lo + 1
        multi = np.flatnonzero(span > 1)
        total = int(span[multi].sum())
        if total > (self.m.shape[0] >> 2):
            cs = self._sums()
            out: F64 = (np.take(cs, hi + 1, axis=1) - np.take(cs, lo, axis=1)).astype(np.float64)
            return out
        v = self._values(hi)
        if multi.size:
            first = np.zeros(multi.size + 1, dtype=np.int64)  # where each range begins
            np.cumsum(span[multi], out=first[1:])
            # every row of every range: lo + (position - where the range begins)
            idx = np.arange(total, dtype=np.int64)
            idx += np.repeat(lo[multi] - first[:-1], span[multi])
            v[:, multi] = np.add.reduceat(self._values(idx), first[:-1], axis=1)
        out = v.astype(np.float64)
        return out

    def _values(self, rows: I64) -> npt.NDArray[np.int64]:
        """`_sums`' terms of the given rows (zero for a coarse fix), one row per sum."""
        v = np.empty((4, rows.shape[0]), dtype=np.int64)
        _sum_terms(self.lat[rows], self.lon[rows], self.m[rows], self.q[rows], v)
        return v

    def _sums(self) -> npt.NDArray[np.int64]:
        """Running sums (one row each) of the precise fixes' coordinates (in 1e-7
        degrees), count and squared margins (in 0.01 m²): whole numbers, exact whatever
        the batching. Column k sums the rows before k (column 0 is zero)."""
        if self._cs is None:  # in place: one (4, n + 1) buffer
            n = self.m.shape[0]
            v = np.empty((4, n + 1), dtype=np.int64)
            v[:, 0] = 0
            w = v[:, 1:]
            _sum_terms(self.lat, self.lon, self.m, self.q, w)
            np.cumsum(w, axis=1, out=w)
            self._cs = v
        return self._cs

    def prev_fix(self, rows: I64) -> tuple[I64, F64, F64, F64]:
        """The previous precise fix of each row (the carried one, or the row itself
        when there is none)."""
        p = self.prev[rows]
        k = np.where(p >= 0, p, rows)
        out = self.ts[k], self.lat[k], self.lon[k], self.m[k]
        cr = np.flatnonzero(p == -1)
        if cr.size:
            g = self.group_of(rows[cr])
            c = self.c
            for o, v in zip(out, (c.q_ts, c.q_lat, c.q_lon, c.q_m), strict=True):
                o[cr] = v[g]
        return out

    def rest_of(self, rows: I64) -> tuple[I64, F64, F64, F64, F64]:
        """For precise rows: since when the person has rested up to and including the
        row, and the sums (`_sums`) of that rest's fixes."""
        lb = self.lastb[rows]
        g = self.group_of(rows)
        gs = self.starts[g]
        inb = lb >= gs  # the rest began in this batch (else: carried in, or none)
        start = np.where(inb, lb, gs)
        since = self.ts[start]
        sums = self._range_sums(start, rows)
        out = np.flatnonzero(~inb)
        if out.size:
            go = g[out]
            c = self.c
            since[out] = np.where(c.q_ts[go] > 0, c.q_rest[go], self.ts[rows[out]])
            sums[:, out] += np.stack((c.q_slat[go], c.q_slon[go], c.q_sn[go], c.q_sm2[go]))
        return since, sums[0], sums[1], sums[2], sums[3]

    def rested_place(self, rows: I64) -> tuple[I64, F64, F64, F64, F64]:
        """For rows with a previous precise fix: since when the person rested up to it,
        where (the mean of the rest's fixes; that fix when none), how well that is
        known (the mean's margin, sqrt(sum of squared margins) / n: a rest of few noisy
        fixes is known no better than they are; at least ``min_margin_m``) and the
        rest's typical margin (root mean square: indoors 30-80 m, outdoors about 10)."""
        p = self.prev[rows]
        inb = p >= 0
        k = rows.shape[0]
        since = np.empty(k, dtype=np.int64)
        s_lat, s_lon, s_n, s_m2 = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
        if inb.any():
            since[inb], s_lat[inb], s_lon[inb], s_n[inb], s_m2[inb] = self.rest_of(p[inb])
        g = self.group_of(rows[~inb])
        c = self.c
        since[~inb] = c.q_rest[g]
        s_lat[~inb], s_lon[~inb], s_n[~inb] = c.q_slat[g], c.q_slon[g], c.q_sn[g]
        s_m2[~inb] = c.q_sm2[g]
        _, p_lat, p_lon, p_m = self.prev_fix(rows)
        ok = s_n > 0
        n = np.maximum(s_n, 1.0)
        den = n * _E7
        margin = np.where(ok, np.maximum(np.sqrt(s_m2) / 10.0 / n, self.cfg.min_margin_m), p_m)
        rms = np.where(ok, np.sqrt(s_m2 / n) / 10.0, p_m)
        return (since, np.where(ok, s_lat / den, p_lat), np.where(ok, s_lon / den, p_lon),
                margin, rms)

    def fast(self, rows: slice) -> BoolA:
        """Legs of at most ``still_leg_s`` faster than ``v_depart_mps`` beyond both
        margins and ``v_depart_raw_mps`` on the raw distance: no walk (departures, and
        the leg back that ends a hold)."""
        cfg, dt = self.cfg, self.dt[rows]
        return ((dt <= cfg.still_leg_s) & (self.eff[rows] > cfg.v_depart_mps)
                & (self.dist[rows] > cfg.v_depart_raw_mps * dt))

    def departures(self, jump: BoolA) -> BoolA:
        """Departures from rest (`OutlierConfig`): cheap tests on every row, where the
        person rests only for the few rows that pass them."""
        cfg = self.cfg
        cand = np.flatnonzero(self.q & ~jump & self.fast(slice(None)))
        out = np.zeros(self.ts.shape[0], dtype=bool)
        p = self.prev[cand]
        # the leg into the previous precise fix was still (a carried one: its record)
        still0 = np.where(p >= 0, ~self.brk[np.maximum(p, 0)],
                          (p == -1) & (self.c.q_w[self.group_of(cand)] <= cfg.still_k))
        cand = cand[still0 & (p > -2)]
        if cand.size == 0:
            return out
        since, c_lat, c_lon, c_m, rms = self.rested_place(cand)
        p_ts, p_lat, p_lon, p_m = self.prev_fix(cand)
        dt = np.maximum((self.ts[cand] - p_ts) * 0.001, 1.0)
        from_rest = np.maximum(_planar_m(c_lat, c_lon, self.lat[cand], self.lon[cand], self.kx[cand])
                               - self.m[cand] - c_m, 0.0) / dt
        rested = _planar_m(c_lat, c_lon, p_lat, p_lon) - p_m <= cfg.rest_radius_m
        # as for holds: a receiver that rested indoors and now reports an outdoor fix went
        # out, and so did the person (an excursion keeps the indoor accuracy)
        outdoors = (rms >= cfg.indoor_m) & (self.m[cand] <= cfg.outdoor_m)
        ok = ((p_ts - since >= int(cfg.rest_s * 1000)) & (from_rest > cfg.v_depart_mps) & rested
              & ~outdoors)
        out[cand[ok]] = True
        # each departure's anchor: where the person rested, as of the fix before it
        self.anchors = dict(zip(cand[ok].tolist(), zip(p_ts[ok].tolist(), c_lat[ok].tolist(),
                                                      c_lon[ok].tolist(), strict=True),
                                strict=True))
        return out

    def holds(self, decided: BoolA) -> BoolA:
        """Legs from rest that kinematics cannot judge (`OutlierConfig.hold_m`): not a
        jump or departure (``decided``), no rest, landing far from where the person
        rests. Each one's anchor (the fix before it, where the person rests and that
        place's margin) goes to ``hold_anchors``."""
        cfg = self.cfg
        out = np.zeros(self.ts.shape[0], dtype=bool)
        self.hold_anchors: dict[int, tuple[int, float, float, float, bool]] = {}
        # a break, not decided, and the leg into the previous precise fix was rest, soon
        # after the fix before it (a device that reports every few minutes has no outages
        # to tell apart: nothing is held); the carried leg where that fix is carried.
        # Judged on the row before (most rows' previous precise fix), then again on the
        # rows whose previous precise fix is another row or carried (`prev_apart`)
        rest = np.less_equal(self.dt, cfg.still_leg_s)
        rest &= ~self.brk
        okp = np.empty(rest.shape[0], dtype=bool)
        okp[0] = False
        okp[1:] = rest[:-1]
        apart = self.prev_apart
        p = self.prev[apart]
        okf = rest[np.maximum(p, 0)] & (p >= 0)
        cr = np.flatnonzero(p == -1)
        if cr.size:
            g = self.group_of(apart[cr])
            c = self.c
            okf[cr] = (c.q_w[g] <= cfg.still_k) & c.has_pp[g] & (
                c.prev_ts[g] - c.pp_ts[g] <= int(cfg.still_leg_s * 1000))
        okp[apart] = okf
        okp &= self.brk
        okp &= ~decided
        cand = np.flatnonzero(okp)
        # ... landing more than hold_m from it (beyond both margins)
        cand = cand[self.dist[cand] - self.p_m[cand] - self.m[cand] > cfg.hold_m]
        if cand.size == 0:
            return out
        since, c_lat, c_lon, c_m, rms = self.rested_place(cand)
        p_ts, p_lat, p_lon, p_m = self.prev_fix(cand)
        # a receiver that rested indoors and now reports an outdoor fix went out: the
        # person left (an excursion keeps the indoor accuracy it would have had)
        outdoors = (rms >= cfg.indoor_m) & (self.m[cand] <= cfg.outdoor_m)
        far = _planar_m(c_lat, c_lon, self.lat[cand], self.lon[cand], self.kx[cand]) - self.m[cand] - c_m
        away = (far > cfg.hold_m) & (far <= cfg.hold_max_m)
        rested = _planar_m(c_lat, c_lon, p_lat, p_lon) - p_m <= cfg.rest_radius_m
        ok = (p_ts - since >= int(cfg.rest_s * 1000)) & rested & away & ~outdoors
        out[cand[ok]] = True
        self.hold_anchors = {j: (t, la, lo, mm, ind) for j, t, la, lo, mm, ind in zip(
            cand[ok].tolist(), p_ts[ok].tolist(), c_lat[ok].tolist(), c_lon[ok].tolist(),
            c_m[ok].tolist(), (rms[ok] >= cfg.indoor_m).tolist(), strict=True)}
        return out

    def carry_out(self, starts: I64) -> None:
        """Each group's last precise fix of the batch (if any) into the carry."""
        ends = np.append(starts[1:], self.ts.shape[0])
        r = self.lastq[ends - 1]
        has = r >= starts
        rr = r[has]
        since, s_lat, s_lon, s_n, s_m2 = self.rest_of(rr)
        c = self.c
        c.q_ts[has], c.q_lat[has], c.q_lon[has] = self.ts[rr], self.lat[rr], self.lon[rr]
        c.q_m[has], c.q_w[has], c.q_rest[has] = self.m[rr], self.wander(rr), since
        c.q_slat[has], c.q_slon[has], c.q_sn[has], c.q_sm2[has] = s_lat, s_lon, s_n, s_m2


def _scan_group(
    g: int, a: int, b: int, ts: I64, lat: F64, lon: F64, m: F64, v_raw: F64,
    flags: tuple[BoolA, BoolA, BoolA, BoolA], pq: PreciseLegs, suspect: BoolA, outlier: BoolA,
    after_lone: BoolA, held: npt.NDArray[np.int8], ranges: list[tuple[int, int, int]], c: Carry,
    cfg: OutlierConfig,
) -> None:
    """Walk one device's jumps, departures from rest and holds: suspect runs (held ones
    after a departure), their returns and settling. ``flags``: jump, depart, hold and
    their union, per row."""
    jump, depart, hold, ev = flags
    i = a
    since = int(c.since[g])
    dep = bool(c.depart[g])
    hld = bool(c.hold[g])
    stay = [bool(c.stay[g])]
    first = (float(c.h_lat[g]), float(c.h_lon[g]), float(c.h_m[g]), bool(c.h_in[g]))
    anc = (int(c.anc_ts[g]), float(c.anc_lat[g]), float(c.anc_lon[g]), float(c.anc_m[g]),
           float(c.anc_v[g]))
    run_from = a  # first row of the current suspect run inside this batch
    while i < b:
        if since == 0:
            j = i + int(ev[i:b].argmax())
            if not ev[j]:
                break
            hld = bool(hold[j] and not (jump[j] or depart[j]))
            if hld:  # counts, cannot confirm: the next fixes decide
                a_ts, a_lat, a_lon, a_m, indoor = pq.hold_anchors[j]
                anc = (a_ts, a_lat, a_lon, a_m, 0.0)
                since, dep, run_from = int(ts[j]), False, j
                stay[0] = False
                first = (float(lat[j]), float(lon[j]), float(m[j]), indoor)
                held[j] = HELD
                i = j + 1
                if i >= b:
                    break
        if hld:
            i, since = _hold_run(g, i, b, since, run_from, anc, first, stay, ts, lat, lon, m,
                                 v_raw, flags, pq, outlier, after_lone, held, ranges, cfg)
            if since:
                break
            hld = False
            run_from = i
            if i < b:
                hold[i] = False  # the fix that releases a hold starts none
                _sync(flags, i)
            continue
        if since == 0:
            dep = bool(depart[j])
            if not dep and _lone_before(g, j, a, ts, lat, lon, m, v_raw, c, cfg):
                # the fix before the jump was the odd one (a spike after a gap): it is
                # an outlier (already counted: decisions do not look ahead), j is fine
                ranges.append((g, int(ts[j - 1]) if j > a else int(c.prev_ts[g]), int(ts[j])))
                if j > a:
                    outlier[j - 1] = True
                after_lone[j] = True
                jump[j] = False
                _sync(flags, j)
                i = j + 1
                continue
            if dep:  # from where the person rested (the mean of their precise fixes)
                a_ts, a_lat, a_lon = pq.anchors[j]
                anc = (a_ts, a_lat, a_lon, cfg.min_margin_m, 0.0)
            elif j > a:
                anc = (int(ts[j - 1]), float(lat[j - 1]), float(lon[j - 1]), float(m[j - 1]),
                       float(v_raw[j - 1]))
            else:  # the jump leaves the carried last fix
                anc = (int(c.prev_ts[g]), float(c.prev_lat[g]), float(c.prev_lon[g]),
                       float(c.prev_m[g]), float(c.prev_v[g]))
            since = int(ts[j])
            run_from = j
            # a departure's own fix counts (it cannot open alone: the next decides)
            i = j + 1 if dep else j
            if i >= b:
                break
        # in a suspect run from row i: the first return to the anchor, or settling
        a_ts, a_lat, a_lon, a_m, a_v = anc
        seg = slice(i, b)
        # the fix before each row: legs between precise fixes after a departure (a cell
        # fix neither returns nor travels), else the row before (or the carried fix)
        if dep:
            p_ts, p_lat, p_lon, p_m = pq.prev_fix(np.arange(i, b, dtype=np.int64))
        elif i > a:
            p_ts, p_lat, p_lon, p_m = ts[i - 1:b - 1], lat[i - 1:b - 1], lon[i - 1:b - 1], m[i - 1:b - 1]
        else:
            p_ts = np.concatenate(([c.prev_ts[g]], ts[a:b - 1]))
            p_lat = np.concatenate(([c.prev_lat[g]], lat[a:b - 1]))
            p_lon = np.concatenate(([c.prev_lon[g]], lon[a:b - 1]))
            p_m = np.concatenate(([c.prev_m[g]], m[a:b - 1]))
        # from the anchor, from the fix before (and, after a departure, from the anchor
        # to the fix before), in one call
        d, pd, ap = _distances(a_lat, a_lon, p_lat, p_lon, lat[seg], lon[seg], dep)
        dt = np.maximum((ts[seg] - a_ts) / 1000.0, 1.0)
        from_anchor = _eff_speed(d, np.float64(a_m), m[seg], dt)
        # a departure's return is to where the person rested (within a walk of it)
        if dep:  # within a walk of where the person rested (a gap does not widen it)
            back = (d - a_m - m[seg]) <= cfg.v_depart_mps * np.minimum(dt, cfg.still_leg_s)
        else:
            back = from_anchor <= _allowed(np.float64(a_v), dt, cfg)
        # ... and left the previous (suspect) fix at an implausible speed: it came back
        # (judged from the anchor's speed: the legs inside the run mean nothing)
        pdt = np.maximum((ts[seg] - p_ts) / 1000.0, 1.0)
        left = (_eff_speed(pd, p_m, m[seg], pdt)
                > (cfg.v_depart_mps if dep else _allowed(np.float64(a_v), pdt, cfg)))
        if dep:  # ... or came back across a gap (a leg that long says nothing of speed)
            left |= pdt > cfg.still_leg_s
        back &= left
        if i == run_from and since == int(ts[i]):
            back[0] = False  # the jumping fix itself
        settled = ts[seg] >= since + int(cfg.settle_s * 1000)
        # a real move keeps going: two legs in a row inside the run that each move
        # beyond both margins at a plausible speed settle the run at once (a multipath
        # cluster sits still far away)
        if dep:  # after a departure, one more leg faster than a walk, away: travel
            back &= pq.q[seg]
            fast = (pd - p_m - m[seg]) / pdt > cfg.v_depart_mps
            away = d - ap >= 0.5 * pd
            # staying away settles only on a fix that stayed (not one more hop)
            settled &= pq.q[seg] & ~fast
            settled |= pq.q[seg] & away & fast
        elif d.shape[0] >= 3:  # the legs inside the run: those from the row before
            lt, ld = pdt[1:], pd[1:]
            lm = m[i + 1:b] + m[i:b - 1]
            moving = np.zeros(d.shape[0], dtype=bool)
            moving[1:] = (ld > lm) & ((ld - lm) / lt <= _allowed(np.float64(a_v), lt, cfg))
            settled[2:] |= moving[2:] & moving[1:-1]
        r_idx = np.flatnonzero(back)
        s_idx = np.flatnonzero(settled)
        r = i + int(r_idx[0]) if r_idx.size else b
        s = i + int(s_idx[0]) if s_idx.size else b
        # after a departure the run's fixes are held (they count, cannot confirm): a run
        # found real confirms at the fix that settles it; after a jump they are suspect
        mark, flag = (held, HELD) if dep else (suspect, True)
        if r < s or (dep and r == s < b):  # an excursion out and back: outliers
            mark[i:r] = flag
            outlier[run_from:r] = True
            ranges.append((g, since, int(ts[r])))
            if dep:  # no segment from the excursion's last fix back
                after_lone[r] = True
            v_raw[r] = float(d[r - i]) / float(dt[r - i])  # the leg from the anchor
            if r + 1 < b:  # the next leg's allowance starts from that speed
                _rejudge(r + 1, ts, lat, lon, m, v_raw, flags, cfg)
            since = 0
            i = r + 1
            run_from = i
        elif s < b:  # settled: where the person is
            mark[i:s] = flag
            if dep:  # the settling fix confirms the held run (if it is itself a
                held[s] = RELEASED  # departure, its run is judged from there on)
            since = 0
            i = s  # the rows from s on count; a later jump starts a new run
            run_from = i
        else:  # still suspect at the end of the batch
            mark[i:b] = flag
            break
    c.since[g] = since
    c.depart[g] = dep and since != 0
    c.hold[g] = hld and since != 0
    c.stay[g] = c.hold[g] and stay[0]
    if c.hold[g]:
        c.h_lat[g], c.h_lon[g], c.h_m[g], c.h_in[g] = first
    if since:
        c.anc_ts[g], c.anc_lat[g], c.anc_lon[g], c.anc_m[g], c.anc_v[g] = anc


def _sum_terms(lat: F64, lon: F64, m: F64, q: BoolA, out: npt.NDArray[np.int64]) -> None:
    """Into ``out`` (4 rows): latitude and longitude in 1e-7 degrees (truncated, as
    astype's), 1, and the squared margin in 0.01 m²; zero where ``q`` is False (a
    coarse fix is no part of a rest)."""
    np.multiply(lat, _E7, out=out[0], casting="unsafe")
    np.multiply(lon, _E7, out=out[1], casting="unsafe")
    out[2] = 1
    m10 = np.rint(m * 10.0).astype(np.int64)
    np.multiply(m10, m10, out=out[3])
    out *= q


def _distances(a_lat: float, a_lon: float, p_lat: F64, p_lon: F64, lat: F64, lon: F64,
               dep: bool) -> tuple[F64, F64, F64]:
    """Great-circle distances of a suspect run's rows from the anchor and from the fix
    before each, and (``dep``) from the anchor to that fix (else empty): one call."""
    k = lat.shape[0]
    la_a, lo_a = np.full(k, a_lat), np.full(k, a_lon)
    if dep:
        h = haversine_m(np.concatenate((la_a, p_lat, la_a)), np.concatenate((lo_a, p_lon, lo_a)),
                        np.concatenate((lat, lat, p_lat)), np.concatenate((lon, lon, p_lon)))
        return h[:k], h[k:2 * k], h[2 * k:]
    h = haversine_m(np.concatenate((la_a, p_lat)), np.concatenate((lo_a, p_lon)),
                    np.concatenate((lat, lat)), np.concatenate((lon, lon)))
    return h[:k], h[k:], h[:0]


def _hold_run(
    g: int, i: int, b: int, since: int, run_from: int,
    anc: tuple[int, float, float, float, float], first: tuple[float, float, float, bool],
    stay: list[bool], ts: I64, lat: F64, lon: F64, m: F64, v_raw: F64,
    flags: tuple[BoolA, BoolA, BoolA, BoolA], pq: PreciseLegs, outlier: BoolA, after_lone: BoolA,
    held: npt.NDArray[np.int8], ranges: list[tuple[int, int, int]], cfg: OutlierConfig,
) -> tuple[int, int]:
    """Rows i.. of a hold that began at ``since`` (`OutlierConfig.hold_m`). It ends at
    the first fast leg back to where the person rested (the held fixes were an
    excursion: outliers, and the leg back is no jump nor departure), or releases at
    the first leg that moves, jump or fix ``settle_s`` on (that row counts in full).
    Returns the next row to walk and ``since`` (0: the hold ended in this batch)."""
    jump, depart = flags[0], flags[1]
    back, release, agree, d = _hold_verdicts(i, b, since, anc, first, stay[0], ts, lat, lon,
                                             m, jump, pq, cfg)
    r_idx, s_idx = np.flatnonzero(back), np.flatnonzero(release)
    r = i + int(r_idx[0]) if r_idx.size else b
    s = i + int(s_idx[0]) if s_idx.size else b
    stay[0] = stay[0] or bool(agree.any())  # (what the carry keeps if the hold goes on)
    if r < s:  # out and back: an excursion
        held[i:r] = HELD
        outlier[run_from:r] = True
        ranges.append((g, since, int(ts[r])))
        after_lone[r] = True
        jump[r] = depart[r] = False
        _sync(flags, r)
        v_raw[r] = float(d[r - i]) / max((int(ts[r]) - anc[0]) / 1000.0, 1.0)
        if r + 1 < b:
            _rejudge(r + 1, ts, lat, lon, m, v_raw, flags, cfg)
        return r + 1, 0
    held[i:s] = HELD
    if s < b:
        held[s] = RELEASED
    return s, (since if s >= b else 0)


def _hold_verdicts(
    i: int, b: int, since: int, anc: tuple[int, float, float, float, float],
    first: tuple[float, float, float, bool], stay: bool, ts: I64, lat: F64, lon: F64,
    m: F64, jump: BoolA, pq: PreciseLegs, cfg: OutlierConfig,
) -> tuple[BoolA, BoolA, BoolA, F64]:
    """Per row i..b of a hold: back (a fast leg back to where the person rested),
    release, agree (a still leg soon after the fix before: someone is there) and the
    distance from where the person rested."""
    _, a_lat, a_lon, a_m, _ = anc
    seg = slice(i, b)
    pdt = pq.dt[seg]  # the legs from the previous precise fix (`PreciseLegs`)
    short = pdt <= cfg.still_leg_s  # a leg across a gap shows no motion
    fast = pq.fast(seg)
    # moved: a leg that is no rest, or away from where the person appeared (a slow walk
    # has legs within the noise); after an indoor rest, an outdoor fix (went out)
    f_lat, f_lon, f_m, indoor = first
    kx = pq.kx[seg]
    off = _planar_m(np.float64(f_lat), np.float64(f_lon), lat[seg], lon[seg], kx)
    q = pq.q[seg]
    moved = (pq.brk[seg] | (q & (off > cfg.still_k * np.hypot(f_m, m[seg])))) & short
    if indoor:
        moved |= q & (m[seg] <= cfg.outdoor_m)
    d = _planar_m(np.float64(a_lat), np.float64(a_lon), lat[seg], lon[seg], kx)
    near = ((d - a_m - m[seg] <= cfg.v_depart_mps * pdt)
            | (d <= cfg.back_k * np.hypot(a_m, m[seg])))
    back = moved & fast & near
    # after a gap, released only if someone was seen there (two held fixes soon after
    # each other that agree: a lone spike before a gap is not)
    agree = q & ~pq.brk[seg] & short
    seen = stay | np.concatenate(([False], np.logical_or.accumulate(agree)[:-1]))
    # settled: still there settle_s on (soon after the fix before), or 2 x settle_s on
    settled = (ts[seg] >= since + int(cfg.settle_s * 1000)) & short
    settled |= ts[seg] >= since + int(2 * cfg.settle_s * 1000)
    release = (moved | jump[seg] | (~short & seen) | settled) & ~back
    return back, release, agree, d


def _lone_before(g: int, j: int, a: int, ts: I64, lat: F64, lon: F64, m: F64, v_raw: F64,
                 c: Carry, cfg: OutlierConfig) -> bool:
    """Is row j (a jump from row j-1) plausible from the fix before j-1, j-1 far from both?"""
    if j - 2 >= a:
        t2, la2, lo2, m2 = int(ts[j - 2]), float(lat[j - 2]), float(lon[j - 2]), float(m[j - 2])
        v2 = float(v_raw[j - 2])
    elif j - 1 >= a and c.has_prev[g]:
        t2, la2, lo2, m2 = int(c.prev_ts[g]), float(c.prev_lat[g]), float(c.prev_lon[g]), \
            float(c.prev_m[g])
        v2 = float(c.prev_v[g])
    elif c.has_pp[g]:
        t2, la2, lo2, m2, v2 = (int(c.pp_ts[g]), float(c.pp_lat[g]), float(c.pp_lon[g]),
                                float(c.pp_m[g]), 0.0)
    else:
        return False
    if j - 1 >= a:
        la1, lo1, m1 = float(lat[j - 1]), float(lon[j - 1]), float(m[j - 1])
    else:
        la1, lo1, m1 = float(c.prev_lat[g]), float(c.prev_lon[g]), float(c.prev_m[g])
    dt = max((int(ts[j]) - t2) / 1000.0, 1.0)
    d2j = float(haversine_m(la2, lo2, lat[j], lon[j]))
    if max(d2j - m2 - float(m[j]), 0.0) / dt > min(cfg.v_max_mps, max(
            cfg.v_free_mps, v2 + cfg.accel_mps2 * dt / 2)):
        return False
    # out and back: j-1 is far from both j-2 and j, which agree
    d21 = float(haversine_m(la2, lo2, la1, lo1)) - m2 - m1
    d1j = float(haversine_m(la1, lo1, lat[j], lon[j])) - m1 - float(m[j])
    return min(d21, d1j) > 2 * max(d2j - m2 - float(m[j]), 0.0) and min(d21, d1j) > 0


def _sync(flags: tuple[BoolA, BoolA, BoolA, BoolA], k: int) -> None:
    """Row k of the union flag after its jump, departure or hold flag was revised."""
    jump, depart, hold, ev = flags
    ev[k] = jump[k] | depart[k] | hold[k]


def _rejudge(k: int, ts: I64, lat: F64, lon: F64, m: F64, v_raw: F64,
             flags: tuple[BoolA, BoolA, BoolA, BoolA], cfg: OutlierConfig) -> None:
    """Recompute row k's jump flag after the speed of the leg before it changed."""
    jump = flags[0]
    dt = max((int(ts[k]) - int(ts[k - 1])) / 1000.0, 1.0)
    d = float(haversine_m(lat[k - 1], lon[k - 1], lat[k], lon[k]))
    eff = max(d - float(m[k - 1]) - float(m[k]), 0.0) / dt
    allowed = min(cfg.v_max_mps, max(cfg.v_free_mps, float(v_raw[k - 1]) + cfg.accel_mps2 * dt / 2))
    jump[k] = eff > allowed
    _sync(flags, k)


def outlier_mask(ts: I64, lat: F64, lon: F64, acc: F64,
                 cfg: OutlierConfig = DEFAULT_OUTLIER_CONFIG) -> BoolA:
    """Final outlier flags of one device's whole track (sorted by ts)."""
    res = detect(np.zeros(1 if ts.shape[0] else 0, dtype=np.int64), ts, lat, lon, acc, None, cfg)
    return res.outlier
