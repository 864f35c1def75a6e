"""`probation bench gpsfit`: what real receivers do, measured, for the simulator's error model.

The simulator's realistic GPS model (`simulator.gps`, ``--gps-model realistic``) adds three
things real receivers do and an error consistent with `acc` does not. This module measures
them on recorded tracks (the development set, `bench.realgps` format), each track resampled
to one fix per 30 s like a bracelet (`bench.realgps.resample`) and cut where the recording
stops for more than 30 minutes:

- **gaps and spikes after them.** A gap: two consecutive fixes at least `GAP_MIN_S` apart
  (a receiver without a fix; at most 30 minutes, beyond that the recording stopped). The
  first fix after a gap is a *spike* when it lies more than `SPIKE_M` from where the
  person is right after it (the median of the next 3 fixes, tested only where those stay
  within `STILL_M` of it: the person is not arriving somewhere fast) and more than
  `SPIKE_M` from the next fix. The same test on ordinary fixes (not after a gap) gives the
  background rate; the simulator's spike probability is the excess over it
  (``(p - bg) / (1 - bg)``), the gap's own effect.
- **short multipath excursions.** A run of 1 to `EXC_MAX_FIXES` fixes (30 s apart, no gap)
  all more than `EXC_M` from the line between the fix before the run and the fix after it
  (the anchors), whose anchors lie within `EXC_ANCHOR_M` of each other (the person stayed
  put), and which leaves and returns faster than `EXC_SPEED` m/s (nobody walks out and back
  like that). Measured: the rate per hour of such still time, the duration (first to last
  fix + one interval), the largest distance from the anchors' line, and the `acc` the
  fixes report where the data has one.
- **drift while still.** In the dwells of `bench.realgps.find_dwells` (>= 30 minutes, 90 %
  of fixes within 50 m), excursion fixes left out: the mean squared displacement between
  fixes `lag` apart, fitted by an Ornstein-Uhlenbeck process (a random walk pulled back to
  the true point): ``MSD(lag) = 2 s^2 (1 - exp(-lag / tau))`` per axis, giving the spread
  `sigma_m` (per axis) and the correlation time `tau_s`; the random-walk step of one 30 s
  interval is ``sqrt(MSD(30 s) / 2)`` per axis. Where the data has `acc`: the share of
  dwell fixes farther from the dwell's median than their own `acc` (68 % inside if `acc`
  were honest).

Written: the fitted parameters (`simulator/gps_fitted.json` by default: what the simulator
reads) and the full report (JSON, with per-source figures and the counts behind every
rate). Distributions are kept as quantile tables (0, 10, ..., 100 %), sampled by the
simulator by inverse transform.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.realgps import (
    FIX_INTERVAL_S,
    Track,
    default_data_dir,
    find_dwells,
    load_dev_set,
    local_xy,
    resample,
    split_at_gaps,
)

F64 = npt.NDArray[np.float64]
BoolA = npt.NDArray[np.bool_]

GAP_MIN_S = 120.0  # a gap: at least 4 missing 30-s fixes
GAP_MAX_S = 30 * 60.0  # longer: the recording stopped (`split_at_gaps`)
SPIKE_M = 100.0
EXC_M = 100.0
EXC_MAX_FIXES = 10  # 5 minutes at 30 s
EXC_ANCHOR_M = 50.0
EXC_SPEED = 5.0  # m/s: faster than a walk, out and back
STILL_M = 50.0  # a fix is in still context when its neighbours 2 fixes away are this close
LAGS_S = (30, 60, 120, 300, 600, 1200)
TAU_MAX_S = 3600.0
QUANTILES = tuple(range(0, 101, 10))
DEFAULT_PARAMS = Path(__file__).resolve().parent.parent / "simulator" / "gps_fitted.json"


@dataclass
class Counts:
    """What one source contributes (sums: the pooled fit adds them up)."""

    hours: float = 0.0
    still_hours: float = 0.0
    fixes: int = 0
    gaps: int = 0
    gap_s: list[float] = field(default_factory=list)
    after_gap_tested: int = 0
    spikes: list[float] = field(default_factory=list)  # distances (m)
    spike_acc: list[float] = field(default_factory=list)
    ordinary_tested: int = 0
    ordinary_spikes: int = 0
    excursions: list[tuple[float, float, int]] = field(default_factory=list)  # (s, m, fixes)
    excursion_acc: list[float] = field(default_factory=list)
    still_acc: list[float] = field(default_factory=list)
    msd: dict[int, list[float]] = field(default_factory=dict)  # lag -> squared displacements
    dwell_fixes: int = 0
    dwell_err_over_acc: list[float] = field(default_factory=list)  # distance / acc
    dwell_hours: float = 0.0

    def add(self, o: Counts) -> None:
        for k, v in vars(o).items():
            mine = getattr(self, k)
            if isinstance(v, list):
                mine.extend(v)
            elif isinstance(v, dict):
                for kk, vv in v.items():
                    mine.setdefault(kk, []).extend(vv)
            else:
                setattr(self, k, mine + v)


def _d(ax: F64 | float, ay: F64 | float, bx: F64 | float, by: F64 | float) -> F64:
    return np.asarray(np.hypot(np.subtract(ax, bx), np.subtract(ay, by)), dtype=np.float64)


def _still(x: F64, y: F64, k: int = 2) -> BoolA:
    """Fixes whose neighbours `k` fixes before and after lie within `STILL_M` of each
    other (the person stays put around them, whatever the fix itself says)."""
    n = x.shape[0]
    out = np.zeros(n, dtype=bool)
    if n > 2 * k:
        out[k:n - k] = _d(x[:n - 2 * k], y[:n - 2 * k], x[2 * k:], y[2 * k:]) <= STILL_M
    return out


def measure_piece(t: Track) -> Counts:
    """The figures of one resampled piece of a track (no gap longer than `GAP_MAX_S`)."""
    c = Counts()
    n = len(t)
    c.fixes = n
    if n < 4:
        return c
    ts = t.ts.astype(np.float64) / 1000.0
    x, y = local_xy(t.lat, t.lon, float(t.lat[0]), float(t.lon[0]))
    c.hours = float(ts[-1] - ts[0]) / 3600.0
    dt = np.diff(ts)
    # --- gaps and spikes after them
    gap_after = np.flatnonzero(dt >= GAP_MIN_S) + 1  # index of the first fix after a gap
    c.gaps = int(gap_after.size)
    c.gap_s = dt[gap_after - 1].tolist()
    spike = _spike_test(ts, x, y)
    tested = np.flatnonzero(~np.isnan(spike))
    is_after = np.zeros(n, dtype=bool)
    is_after[gap_after] = True
    for i in tested:
        if is_after[i]:
            c.after_gap_tested += 1
            if spike[i] > SPIKE_M:
                c.spikes.append(float(spike[i]))
                if not math.isnan(t.acc[i]):
                    c.spike_acc.append(float(t.acc[i]))
        else:
            c.ordinary_tested += 1
            c.ordinary_spikes += int(spike[i] > SPIKE_M)
    # --- multipath excursions in still context
    exc_mask = np.zeros(n, dtype=bool)
    for a, b, dist in _excursions(ts, x, y):
        exc_mask[a + 1:b] = True
        c.excursions.append((float(ts[b - 1] - ts[a + 1]) + FIX_INTERVAL_S, dist, b - a - 1))
        acc = t.acc[a + 1:b]
        c.excursion_acc += acc[~np.isnan(acc)].tolist()
    still = _still(x, y)
    # still time: 30-s legs between still fixes without a gap
    leg_still = still[:-1] & still[1:] & (dt < GAP_MIN_S)
    c.still_hours = float(dt[leg_still].sum()) / 3600.0
    sa = t.acc[still & ~exc_mask]
    c.still_acc = sa[~np.isnan(sa)].tolist()
    # --- drift in dwells
    for a, b in find_dwells(t):
        sel = np.arange(a, b + 1)
        sel = sel[~exc_mask[sel]]
        if sel.size < 10:
            continue
        dx, dy = x[sel], y[sel]
        mx, my = float(np.median(dx)), float(np.median(dy))
        c.dwell_fixes += int(sel.size)
        c.dwell_hours += float(ts[b] - ts[a]) / 3600.0
        acc = t.acc[sel]
        has = ~np.isnan(acc)
        c.dwell_err_over_acc += (_d(dx[has], dy[has], mx, my)
                                 / np.maximum(acc[has], 1.0)).tolist()
        tt = ts[sel]
        for lag in LAGS_S:
            j = np.searchsorted(tt, tt + lag)
            ok = (j < tt.size)
            ok[ok] &= np.abs(tt[j[ok]] - tt[ok] - lag) <= 5.0
            i_ok = np.flatnonzero(ok)
            sq = (dx[j[i_ok]] - dx[i_ok]) ** 2 + (dy[j[i_ok]] - dy[i_ok]) ** 2
            c.msd.setdefault(lag, []).extend((sq / 2.0).tolist())  # per axis
    return c


def _spike_test(ts: F64, x: F64, y: F64) -> F64:
    """Per fix: how far it lies from where the person is right after it, when the person
    stays put there (fixes i+1..i+3, no gap among them, within `STILL_M` of their median):
    the smaller of its distances to that median and to fix i+1. NaN where untestable."""
    n = ts.shape[0]
    out = np.full(n, np.nan)
    if n < 4:
        return out
    i = np.arange(n - 3)
    nx = np.median(np.stack([x[i + 1], x[i + 2], x[i + 3]]), axis=0)
    ny = np.median(np.stack([y[i + 1], y[i + 2], y[i + 3]]), axis=0)
    near = np.ones(i.size, dtype=bool)
    for k in (1, 2, 3):
        near &= _d(x[i + k], y[i + k], nx, ny) <= STILL_M
    ok = near & (ts[i + 3] - ts[i + 1] < 2 * GAP_MIN_S) & (ts[i + 1] - ts[i] < GAP_MIN_S)
    far = np.minimum(_d(x[i], y[i], nx, ny), _d(x[i], y[i], x[i + 1], y[i + 1]))
    out[i[ok]] = far[ok]
    return out


def _excursions(ts: F64, x: F64, y: F64) -> list[tuple[int, int, float]]:
    """(anchor before, anchor after, largest distance) of each multipath excursion."""
    n = ts.shape[0]
    out: list[tuple[int, int, float]] = []
    a = 0
    while a < n - 2:
        found = None
        for b in range(a + 2, min(n, a + EXC_MAX_FIXES + 2)):
            if ts[b] - ts[b - 1] >= GAP_MIN_S:
                break
            if _d(x[a], y[a], x[b], y[b]) > EXC_ANCHOR_M:
                continue
            run = slice(a + 1, b)
            # distance of the run's fixes from the anchors' line at their time
            f = (ts[run] - ts[a]) / max(ts[b] - ts[a], 1.0)
            dev = _d(x[run], y[run], x[a] + f * (x[b] - x[a]), y[a] + f * (y[b] - y[a]))
            if dev.min() <= EXC_M:
                continue
            out_v = float(_d(x[a], y[a], x[a + 1], y[a + 1])) / max(ts[a + 1] - ts[a], 1.0)
            back_v = float(_d(x[b - 1], y[b - 1], x[b], y[b])) / max(ts[b] - ts[b - 1], 1.0)
            if out_v > EXC_SPEED and back_v > EXC_SPEED:
                found = (a, b, float(dev.max()))
                break
        if found is None:
            a += 1
        else:
            out.append(found)
            a = found[1]
    return out


def _q(v: Sequence[float]) -> list[float] | None:
    return [round(float(q), 1) for q in np.percentile(v, QUANTILES)] if len(v) else None


def _ou_fit(msd: dict[int, list[float]]) -> dict[str, Any]:
    """sigma (per axis) and tau of an Ornstein-Uhlenbeck process from MSD(lag) (the mean
    squared displacement per axis, the top 1 % left out: fixes the excursion test did not
    catch): a grid search on tau in log space, sigma^2 by least squares given tau. A tau
    at the grid's top (`TAU_MAX_S`) means no saturation within the lags: a random walk."""
    lags = np.array(sorted(k for k, v in msd.items() if len(v) >= 20), dtype=np.float64)
    if lags.size < 2:
        return {"sigma_m": None, "tau_s": None}
    m = []
    for k in lags:
        v = np.sort(np.asarray(msd[int(k)]))
        m.append(float(np.mean(v[: max(1, int(0.99 * v.size))])))
    ma = np.maximum(np.array(m), 1e-3)
    best = (math.inf, 0.0, 0.0)
    for tau in np.geomspace(10, TAU_MAX_S, 300):
        g = 2.0 * (1.0 - np.exp(-lags / tau))
        s2 = float(np.dot(g, ma) / np.dot(g, g))
        err = float(np.sum((np.log(s2 * g) - np.log(ma)) ** 2))
        if err < best[0]:
            best = (err, float(tau), s2)
    _, tau, s2 = best
    return {"sigma_m": round(math.sqrt(s2), 2), "tau_s": round(tau, 1),
            "msd_per_axis_m2": {str(int(k)): round(float(v), 1)
                                for k, v in zip(lags, ma, strict=True)},
            "step_30s_m": round(math.sqrt(float(ma[0])), 2) if lags[0] == 30 else None}


def summarise(c: Counts) -> dict[str, Any]:
    exc_d = [e[1] for e in c.excursions]
    exc_s = [e[0] for e in c.excursions]
    err = np.asarray(c.dwell_err_over_acc)
    return {
        "hours": round(c.hours, 2), "still_hours": round(c.still_hours, 2),
        "fixes_30s": c.fixes,
        "gaps": {"count": c.gaps, "per_hour": round(c.gaps / c.hours, 3) if c.hours else None,
                 "duration_s_quantiles": _q(c.gap_s)},
        "spike_after_gap": {
            "tested": c.after_gap_tested, "spikes": len(c.spikes),
            "p": round(len(c.spikes) / c.after_gap_tested, 4) if c.after_gap_tested else None,
            "distance_m_quantiles": _q(c.spikes), "acc_m_quantiles": _q(c.spike_acc),
            "background_p": (round(c.ordinary_spikes / c.ordinary_tested, 5)
                             if c.ordinary_tested else None),
            "background_tested": c.ordinary_tested,
        },
        "multipath": {
            "count": len(c.excursions),
            "per_still_hour": round(len(c.excursions) / c.still_hours, 4) if c.still_hours else None,
            "duration_s_quantiles": _q(exc_s), "distance_m_quantiles": _q(exc_d),
            "fixes_quantiles": _q([e[2] for e in c.excursions]),
            "acc_m_quantiles": _q(c.excursion_acc),
            "still_acc_m_quantiles": _q(c.still_acc),
        },
        "drift": {
            "dwell_hours": round(c.dwell_hours, 2), "dwell_fixes": c.dwell_fixes,
            **_ou_fit(c.msd),
            "fixes_with_acc": int(err.size),
            "share_beyond_own_acc": round(float(np.mean(err > 1.0)), 3) if err.size else None,
            "error_over_acc_quantiles": _q(err.tolist()),
        },
    }


def fit(sources: dict[str, list[Track]]) -> dict[str, Any]:
    """Per-source and pooled figures (the pooled ones become the simulator's parameters)."""
    pooled = Counts()
    per: dict[str, Any] = {}
    for name, tracks in sources.items():
        c = Counts()
        for raw in tracks:
            for piece in split_at_gaps(resample(raw), GAP_MAX_S):
                c.add(measure_piece(piece))
        per[name] = summarise(c)
        pooled.add(c)
    return {"sources": per, "pooled": summarise(pooled)}


def params_from(report: dict[str, Any]) -> dict[str, Any]:
    """The simulator's parameters from the pooled figures (see `simulator.gps.RealisticParams`)."""
    p = report["pooled"]
    sp, mp, dr, gp = p["spike_after_gap"], p["multipath"], p["drift"], p["gaps"]
    return {
        "source": "probation bench gpsfit on the real-GPS development set "
                  "(tracks resampled to 30 s)",
        "gap_min_s": GAP_MIN_S,
        "gaps_per_hour": gp["per_hour"],
        "gap_s_quantiles": gp["duration_s_quantiles"],
        # the gap's own share: the excess over ordinary fixes tested alike
        "spike_p": round(max(sp["p"] - sp["background_p"], 0.0) / (1.0 - sp["background_p"]), 4),
        "spike_m_quantiles": sp["distance_m_quantiles"],
        "multipath_per_still_hour": mp["per_still_hour"],
        "multipath_s_quantiles": mp["duration_s_quantiles"],
        "multipath_m_quantiles": mp["distance_m_quantiles"],
        "drift_sigma_m": dr["sigma_m"],
        "drift_tau_s": dr["tau_s"],
    }


def report_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"{'source':<20} {'hours':>7} {'still h':>7} {'gaps/h':>7} {'spike|gap':>11} "
             f"{'bg spike':>8} {'mp/still h':>10} {'mp s p50':>8} {'mp m p50':>8} "
             f"{'drift s m':>9} {'tau s':>7} {'>acc':>5}"]
    for name, r in [*report["sources"].items(), ("POOLED", report["pooled"])]:
        sp, mp, dr, gp = r["spike_after_gap"], r["multipath"], r["drift"], r["gaps"]

        def mid(q: list[float] | None) -> str:
            return "-" if not q else f"{q[5]:g}"
        lines.append(
            f"{name:<20} {r['hours']:>7.1f} {r['still_hours']:>7.1f} "
            f"{gp['per_hour'] if gp['per_hour'] is not None else '-':>7} "
            f"{sp['spikes']:>4}/{sp['tested']:<6} "
            f"{sp['background_p'] if sp['background_p'] is not None else '-':>8} "
            f"{mp['per_still_hour'] if mp['per_still_hour'] is not None else '-':>10} "
            f"{mid(mp['duration_s_quantiles']):>8} {mid(mp['distance_m_quantiles']):>8} "
            f"{dr['sigma_m'] if dr['sigma_m'] is not None else '-':>9} "
            f"{dr['tau_s'] if dr['tau_s'] is not None else '-':>7} "
            f"{dr['share_beyond_own_acc'] if dr['share_beyond_own_acc'] is not None else '-':>5}")
    return lines


def run_gpsfit(data: Path | None = None, files: Sequence[str] = (), *,
               out: Callable[[str], None] = print) -> dict[str, Any]:
    data = data or default_data_dir()
    if not data.is_dir():
        raise FileNotFoundError(f"no development set at {data} (use --data)")
    report = fit(load_dev_set(data, files))
    report["data"] = str(data)
    report["definitions"] = {"gap_min_s": GAP_MIN_S, "gap_max_s": GAP_MAX_S, "spike_m": SPIKE_M,
                             "excursion_m": EXC_M, "excursion_max_fixes": EXC_MAX_FIXES,
                             "excursion_anchor_m": EXC_ANCHOR_M, "excursion_speed_mps": EXC_SPEED,
                             "still_m": STILL_M, "fix_interval_s": FIX_INTERVAL_S}
    report["params"] = params_from(report)
    for line in report_lines(report):
        out(line)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from bench.harness import write_json

    p = argparse.ArgumentParser(prog="probation bench gpsfit")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--files", nargs="*", default=[])
    p.add_argument("--json", type=Path, default=Path("bench-results/gpsfit.json"))
    p.add_argument("--params", type=Path, default=None,
                   help=f"also write the simulator's parameters here (e.g. {DEFAULT_PARAMS})")
    args = p.parse_args(argv)
    report = run_gpsfit(args.data, args.files)
    write_json(args.json, report)
    print(f"written {args.json}")
    if args.params is not None:
        args.params.write_text(json.dumps(report["params"], indent=1) + "\n")
        print(f"written {args.params}")


if __name__ == "__main__":
    main()
