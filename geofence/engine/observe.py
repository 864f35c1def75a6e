"""Observations: signed distances of (fix, zone) pairs, classified into symbols.

Symbols (`geofence.episodes`): W wrong side, X wrong side but imprecise, R right side,
U uncertain or inactive (how deep a fix is decides nothing: no single fix opens; D is
marked later by confirmation). Buffered exclusion zones add approach rows
(``t == 1``) for the ring around the zone.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from geofence.engine.config import GeofenceConfig
from geofence.engine.frames import Fixes, Pairs
from geofence.engine.kernels import I8, BoolA
from geofence.episodes import SYM_R, SYM_U, SYM_W, SYM_X
from geofence.geometry import ZoneStore


def _symbols(wrong: BoolA, right: BoolA, weak: BoolA) -> I8:
    """Symbol per observation through an 8-entry table (no masked selects)."""
    key = wrong.view(np.uint8) << 2
    key |= right.view(np.uint8) << 1
    key |= weak.view(np.uint8)
    out: I8 = _SYM_TABLE[key]
    return out


def _sym_table() -> I8:
    t = np.empty(8, dtype=np.int8)
    for k in range(8):
        wrong, right, weak = k >> 2 & 1, k >> 1 & 1, k & 1
        if wrong:  # no single fix opens, however deep: confirmation marks D later
            t[k] = SYM_X if weak else SYM_W
        else:
            t[k] = SYM_R if right else SYM_U
    return t


_SYM_TABLE = _sym_table()


def observe(
    st: ZoneStore,
    cfg: GeofenceConfig,
    fx: Fixes,
    p: Pairs,
    executor: ThreadPoolExecutor | None,
) -> dict[str, np.ndarray]:
    """Signed distances and symbols for (fix, zone) pairs; approach rows for buffered zones."""
    lat, lon, acc, m = fx.lat, fx.lon, fx.acc, fx.m
    pf, pz, pact, pcnt, pg, pslot = p.f, p.z, p.act, p.cnt, p.g, p.slot
    pm = m[pf]
    d = np.full(pf.size, np.nan)  # inactive: NaN -> neither wrong nor right -> U
    asel = np.flatnonzero(pact)
    if asel.size:
        za = pz[asel]
        cutoff = pm[asel] + st.cut_add[za]  # exclusion: m + buffer; inclusion: inf
        d[asel], _ = st.signed_distances(lat, lon, pf[asel], za, cutoff, executor)
    weak = acc[pf] > cfg.max_open_acc_m
    depth = d * st.depth_sign[pz]  # exclusion: -d (inside), inclusion: d (outside)
    sym = _symbols(depth >= pm, depth <= -pm, weak)
    out: dict[str, np.ndarray] = {
        "f": pf,
        "z": pz,
        "t": np.zeros(pf.size, np.int64),
        "sym": sym,
        "depth": depth,
        "act": pact,
        "cnt": pcnt,
        "g": pg,
        "slot": pslot,
    }
    appr = np.flatnonzero(st.has_buffer[pz])
    if appr.size:
        da = d[appr]
        ma = pm[appr]
        ba = st.buffer_m[pz[appr]]
        adepth = ba - da
        in_ring = (da >= ma) & (adepth >= ma)
        asym = _symbols(in_ring, da >= ba + ma, weak[appr])
        add: dict[str, np.ndarray] = {
            "f": pf[appr],
            "z": pz[appr],
            "t": np.ones(appr.size, np.int64),
            "sym": asym,
            "depth": adepth,
            "act": pact[appr],
            "cnt": pcnt[appr],
            "g": pg[appr],
            "slot": pslot[appr],
        }
        out = {k: np.concatenate((out[k], add[k])) for k in out}
    return out
