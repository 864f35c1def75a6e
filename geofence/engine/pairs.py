"""Candidate (fix, zone) pairs: which zones each fix is evaluated against.

Direct zones (a case's own) through dense (case x slot) tables and bounding-box
prefilters; shared zones through the uniform grid and their expanded boxes; plus
every fix of a (device, zone) with a stored state, and (`late_pairs`) every later
fix of a key that leaves idle inside the batch.
"""

from __future__ import annotations

import numpy as np

from geofence.engine.activity import Activity
from geofence.engine.config import GeofenceConfig
from geofence.engine.frames import Fixes, Pairs, Prefilter, Sequences, Stated
from geofence.engine.kernels import (
    I64,
    BoolA,
    at2,
    in_expanded_box,
    in_sorted,
    nonzero2,
    paired_by_prefilter,
    take_rows,
)
from geofence.episodes import SYM_D, SYM_W
from geofence.registry import CaseZones, expand


def prefilter(
    zones: CaseZones, cfg: GeofenceConfig, fx: Fixes, seq: Sequences, sd: Stated
) -> Prefilter:
    """Per-fix masks (weak, imprecise) and the (dc x slot) table of stated direct keys."""
    maxd = zones.case_zone2d.shape[1]
    zone2 = take_rows(zones.case_zone2d, fx.case)
    # Fixes with acc > max_open_acc_m cannot move an idle key: only stated pairs.
    weak_fix = fx.acc > cfg.max_open_acc_m
    big = (fx.m > zones.near_m) & ~weak_fix
    stated_tab: BoolA | None = None
    dc_stated = np.zeros(seq.ndc, dtype=bool)
    if sd.rows.size and (sd.slot >= 0).any():
        stated_tab = np.zeros((seq.ndc, maxd), dtype=bool)
        dsel = sd.slot >= 0
        stated_tab.reshape(-1)[sd.dc[dsel] * maxd + sd.slot[dsel]] = True
        dc_stated[sd.dc[dsel]] = True
    return Prefilter(zone2, maxd, weak_fix, big, stated_tab, dc_stated)


def direct_pairs(
    zones: CaseZones, fx: Fixes, seq: Sequences, pre: Prefilter, actv: Activity
) -> Pairs:
    """Pairs with the case's own zones (dense case x slot tables)."""
    case, dc, maxd = fx.case, seq.dc, pre.maxd
    weak_fix, big, stated_tab = pre.weak_fix, pre.big, pre.stated_tab
    # Inclusion zones: every fix (when active).
    isl = take_rows(zones.case_islot, case)
    fi_, ki_ = nonzero2(isl >= 0)
    ps_i = at2(isl, fi_, ki_).astype(np.int64)
    pf_i = fi_.astype(np.int64)
    # Exclusion zones: only fixes inside their case's union box (or imprecise, or stated).
    eb = take_rows(zones.case_ebox, case)
    la32 = fx.lat.astype(np.float32)
    lo32 = fx.lon.astype(np.float32)
    near_any = (la32 >= eb[:, 0]) & (la32 <= eb[:, 1]) & (lo32 >= eb[:, 2]) & (lo32 <= eb[:, 3])
    near_any |= big
    near_any &= ~weak_fix
    near_any |= pre.dc_stated[dc]
    rows = np.flatnonzero(near_any)
    # Flat (row x slot) columns: broadcasting a (rows, 1) column against (rows, maxd)
    # runs an inner loop of maxd elements per row.
    box = take_rows(zones.case_box2d, case[rows]).reshape(-1, 4)
    la = np.repeat(la32[rows], maxd)
    lo_ = np.repeat(lo32[rows], maxd)
    keep2 = la >= box[:, 0]
    keep2 &= la <= box[:, 1]
    keep2 &= lo_ >= box[:, 2]
    keep2 &= lo_ <= box[:, 3]
    keep2 = keep2.reshape(-1, maxd)
    bigr = big[rows]
    if bigr.any():
        keep2[bigr] |= take_rows(zones.case_excl2d, case[rows[bigr]])
    weakr = weak_fix[rows]
    if weakr.any():
        keep2[weakr] = False
    if stated_tab is not None:
        stated2 = take_rows(stated_tab, dc[rows])
        keep2 |= stated2 & take_rows(zones.case_excl2d, case[rows])
    ri, sl = nonzero2(keep2)
    pf = np.concatenate((pf_i, rows[ri].astype(np.int64)))
    pslot = np.concatenate((ps_i, sl.astype(np.int64)))
    pz = at2(pre.zone2, pf, pslot).astype(np.int64)
    pg = at2(zones.case_group2d, case[pf], pslot).astype(np.int64)
    pact, pcnt = actv.lookup(pg, fx.ts[pf])
    keep_p = pact & ~weak_fix[pf]
    keep_p[pf_i.size :] = pact[pf_i.size :]  # exclusion pairs: weak ones only when stated
    if stated_tab is not None:
        keep_p |= at2(stated_tab, dc[pf], pslot)
    if not keep_p.all():
        k = np.flatnonzero(keep_p)
        pf, pslot, pz, pg, pact, pcnt = pf[k], pslot[k], pz[k], pg[k], pact[k], pcnt[k]
    return Pairs(pf.astype(np.int64), pz, pact, pcnt, pg, pslot.astype(np.int64))


def shared_pairs(
    zones: CaseZones,
    fx: Fixes,
    seq: Sequences,
    sd: Stated,
    pre: Prefilter,
    actv: Activity,
    nz: int,
) -> Pairs:
    """Pairs with shared zones (the uniform grid), plus every fix of a stated shared key."""
    case, lat, lon = fx.case, fx.lat, fx.lon
    weak_fix, big = pre.weak_fix, pre.big
    small = np.flatnonzero(~big & ~weak_fix)
    fi, zq = zones.grid.query_points(lat[small], lon[small])
    fi = small[fi]
    zq64 = zq.astype(np.int64)
    k = np.flatnonzero(in_expanded_box(zones, lat, lon, fi, zq64))
    fi, zq64 = fi[k], zq64[k]
    parts_f = [fi]
    parts_z = [zq64]
    bigf = np.flatnonzero(big)
    if bigf.size:
        sz = zones.shared_zones.astype(np.int64)
        parts_f.append(np.repeat(bigf, sz.size))
        parts_z.append(np.tile(sz, bigf.size))
    sf = np.concatenate(parts_f)
    szn = np.concatenate(parts_z)
    attached = zones.att_all[szn]
    if not attached.all() and zones.shared_keys.size:
        key = case[sf].astype(np.int64) * nz + szn
        nota = ~attached
        attached[nota] = in_sorted(key[nota], zones.shared_keys)
    k = np.flatnonzero(attached)
    sf, szn = sf[k], szn[k]
    shared_state = sd.slot < 0
    if shared_state.any():
        # Every fix of a stated (device, shared zone) not already found above.
        uk = np.unique(sd.dc[shared_state] * nz + sd.zone[shared_state])
        kd, kz = uk // nz, uk % nz
        item, fs = expand(seq.dc_ptr[kd], seq.dc_ptr[kd + 1], seq.odc)
        fs = fs.astype(np.int64)
        fz = kz[item]
        had = paired_by_prefilter(zones, lat, lon, weak_fix, big, fs, fz)
        k = np.flatnonzero(~had)
        sf = np.concatenate((sf, fs[k]))
        szn = np.concatenate((szn, fz[k]))
    sg = zones.group_of(zones.zone_skey[szn], zones.case_tz[case[sf]])
    sact, scnt = actv.lookup(sg, fx.ts[sf])
    if shared_state.any():
        sk = seq.dc[sf] * nz + szn
        stated_keys = np.unique(sd.dc[shared_state] * nz + sd.zone[shared_state])
        keep_s = sact | in_sorted(sk, stated_keys)
    else:
        keep_s = sact
    k = np.flatnonzero(keep_s)
    sf, szn, sact, scnt, sg = sf[k], szn[k], sact[k], scnt[k], sg[k]
    return Pairs(sf, szn, sact, scnt, sg, np.full(sf.size, -1, dtype=np.int64))


def late_pairs(
    zones: CaseZones,
    obs: dict[str, np.ndarray],
    kept2: BoolA,
    fx: Fixes,
    seq: Sequences,
    sd: Stated,
    pre: Prefilter,
    nz: int,
) -> tuple[I64, I64, I64] | None:
    """(fix, zone, slot) pairs missing for keys that leave idle inside the batch.

    For a (device, zone) whose first wrong-side fix (W/D) is in this batch and that had
    no stored state, every later fix of the device matters; the first pass only kept
    fixes near the zone (and no weak fixes). Returns the pairs not yet evaluated.
    """
    stated_tab, s_key, s_slot = pre.stated_tab, sd.key, sd.slot
    dc, case, odc, dc_ptr, ndc = seq.dc, fx.case, seq.odc, seq.dc_ptr, seq.ndc
    maxd, n, dc_case, weak_fix = pre.maxd, fx.n, seq.dc_case, pre.weak_fix
    sym = obs["sym"]
    trig = np.flatnonzero((sym == SYM_W) | (sym == SYM_D))
    if trig.size == 0:
        return None
    f = obs["f"][trig]
    z = obs["z"][trig]
    slot = obs["slot"][trig]
    tdc = dc[f]
    parts_f: list[I64] = []
    parts_z: list[I64] = []
    parts_s: list[I64] = []
    # Direct zones: dense (dc, slot) keys.
    dsel = slot >= 0
    if dsel.any():
        key = tdc[dsel] * maxd + slot[dsel]
        first = np.full(ndc * maxd, n, dtype=np.int64)
        np.minimum.at(first, key, f[dsel])
        if stated_tab is not None:
            first[stated_tab.ravel()] = n
        keys = np.flatnonzero(first < n)
        kdc = keys // maxd
        kslot = keys % maxd
        kzone = at2(zones.case_zone2d, dc_case[kdc], kslot)
        # Exclusion zones: every later fix not yet paired (far ones become R).
        kx = zones.store.kind_excl[kzone]
        item, fx_ = expand(dc_ptr[kdc[kx]], dc_ptr[kdc[kx] + 1], odc)
        fx_ = fx_.astype(np.int64)
        ks = kslot[kx][item]
        ok = (fx_ > first[keys[kx]][item]) & ~at2(kept2, fx_, ks)
        fx_, ks = fx_[ok], ks[ok]
        parts_f.append(fx_)
        parts_z.append(at2(zones.case_zone2d, case[fx_], ks).astype(np.int64))
        parts_s.append(ks)
        # Inclusion zones are never far: only weak fixes (and inactive ones) are missing.
        wf = np.flatnonzero(weak_fix)
        if wf.size and not kx.all():
            wk = dc[wf][:, None] * maxd + np.arange(maxd)[None, :]
            z2 = take_rows(zones.case_zone2d, case[wf])
            hit = (first[wk] < wf[:, None]) & (z2 >= 0) & ~zones.store.kind_excl[z2]
            hit &= ~take_rows(kept2, wf)
            wi, ws = nonzero2(hit)
            parts_f.append(wf[wi])
            parts_z.append(at2(z2, wi, ws).astype(np.int64))
            parts_s.append(ws.astype(np.int64))
    ssel = ~dsel
    if ssel.any():
        skey = tdc[ssel] * nz + z[ssel]
        u, inv = np.unique(skey, return_inverse=True)
        first_u = np.full(u.size, n, dtype=np.int64)
        np.minimum.at(first_u, inv, f[ssel])
        sdk = s_slot < 0
        if sdk.any():
            first_u[np.isin(u, s_key[sdk] // 2)] = n
        keep = first_u < n
        u, first_u = u[keep], first_u[keep]
        kdc = u // nz
        item, fx_ = expand(dc_ptr[kdc], dc_ptr[kdc + 1], odc)
        fx_ = fx_.astype(np.int64)
        zz = u[item] % nz
        ok = fx_ > first_u[item]
        fx_, zz = fx_[ok], zz[ok]
        # Already paired in the first pass.
        had = paired_by_prefilter(zones, fx.lat, fx.lon, weak_fix, pre.big, fx_, zz)
        k = np.flatnonzero(~had)
        parts_f.append(fx_[k])
        parts_z.append(zz[k])
        parts_s.append(np.full(k.size, -1, dtype=np.int64))
    if not parts_f:
        return None
    ef = np.concatenate(parts_f)
    if ef.size == 0:
        return None
    return ef, np.concatenate(parts_z), np.concatenate(parts_s)


def late_pairs_active(
    zones: CaseZones, fx: Fixes, late: tuple[I64, I64, I64], actv: Activity
) -> Pairs:
    """The late pairs with their schedule status; inactive ones dropped (no-ops for keys
    without a stored state)."""
    ef, ez, eslot = late
    case = fx.case
    eg = np.where(
        eslot >= 0,
        at2(zones.case_group2d, case[ef], eslot.clip(0)),
        zones.group_of(zones.zone_skey[ez], zones.case_tz[case[ef]]),
    )
    eact, ecnt = actv.lookup(eg, fx.ts[ef])
    if not eact.all():
        k = np.flatnonzero(eact)
        ef, ez, eslot, eg, eact, ecnt = ef[k], ez[k], eslot[k], eg[k], eact[k], ecnt[k]
    return Pairs(ef, ez, eact, ecnt, eg, eslot)
