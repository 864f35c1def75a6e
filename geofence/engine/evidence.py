"""Evidence: episodes, transitions and new states from the scanned rows, columnar."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geofence.engine.batch import FixBatch
from geofence.engine.config import GeofenceConfig
from geofence.engine.frames import Extended, Fixes, Scan, ScannedRows, Sequences
from geofence.engine.kernels import F64, I8, I64, BoolA, obj, order_by
from geofence.episodes import (
    AT_APPROACH,
    AT_ENTERED,
    AT_LEFT,
    C1,
    K_CLOSE,
    K_OPEN,
    K_UPDATE,
    O0,
    O1,
    OUT_FIELDS,
    SYM_D,
    SYM_I,
    SYM_R,
    SYM_RC,
    SYM_W,
    SYM_X,
    EngineState,
    Transitions,
)
from geofence.geometry import haversine_m
from geofence.registry import CaseZones

_ATYPE = np.array([AT_LEFT, AT_ENTERED, AT_APPROACH, AT_APPROACH], dtype=np.int8)


def _atype(zones: CaseZones, zone: I64, t: I64) -> I8:
    """Alert type per row: approach rows (t == 1), else by the zone's kind."""
    out: I8 = _ATYPE[t * 2 + zones.store.kind_excl[zone]]
    return out


def _device_table(
    state: EngineState, zones: CaseZones, batch: FixBatch, fx: Fixes, seq: Sequences, drow: I64
) -> dict[str, np.ndarray]:
    """Each batch device's newest fix replaces its row of the device table."""
    dev_ptr, od = seq.dev_ptr, seq.od
    has = dev_ptr[1:] > dev_ptr[:-1]
    devs = np.flatnonzero(has)
    last = od[dev_ptr[1:][has] - 1]  # a device's fixes are in time order: last = newest
    ids = batch.device_ids[devs]
    keep = np.ones(state.d_id.size, dtype=bool)
    dr = drow[devs]
    keep[dr[dr >= 0]] = False
    return {
        "d_id": np.concatenate((state.d_id[keep], ids)),
        "d_case": np.concatenate((state.d_case[keep], zones.case_id_arr[fx.case[last]])),
        "d_ts": np.concatenate((state.d_ts[keep], fx.ts[last])),
        "d_lat": np.concatenate((state.d_lat[keep], fx.lat[last])),
        "d_lon": np.concatenate((state.d_lon[keep], fx.lon[last])),
        "d_acc": np.concatenate((state.d_acc[keep], fx.acc[last])),
    }


EP_NAMES = (
    "dev",
    "case",
    "zone",
    "atype",
    "status",
    "f_ts",
    "f_lat",
    "f_lon",
    "f_acc",
    "l_ts",
    "l_lat",
    "l_lon",
    "l_acc",
    "max_depth",
    "started",
    "right_ts",
    "last_ts",
    "pend_n",
    "b_ts",
    "b_lat",
    "b_lon",
    "b_acc",
)


def out_cols(state: EngineState) -> dict[str, np.ndarray]:
    """The outlier carry columns, unchanged."""
    return {k: state.col(k) for k in ("o_id", *(f"o_{f}" for f in OUT_FIELDS))}


def finish_empty(
    state: EngineState, zones: CaseZones, batch: FixBatch, fx: Fixes, seq: Sequences, drow: I64
) -> tuple[EngineState, Transitions]:
    """No key changed: same episodes, updated device table."""
    cols = {k: state.col(k) for k in EP_NAMES}
    cols.update(_device_table(state, zones, batch, fx, seq, drow))
    cols.update(out_cols(state))
    new = EngineState(cols)
    new._ix = state._ix
    return new, Transitions.empty()


@dataclass(frozen=True, eq=False)
class FixPool:
    """Evidence fixes: batch fixes, virtual fixes, then the stored states' first/last
    fixes; and per scan segment, its stored state's row and evidence (-1/-inf: none)."""

    ts: I64
    lat: F64
    lon: F64
    acc: F64
    seg_srow: I64
    st_first: I64
    st_last: I64
    st_maxd: F64
    st_started: I64
    st_right: I64
    st_before: I64  # the fix before a stored pending run (-1: none)


@dataclass(frozen=True, eq=False)
class Episodes:
    """One episode per opening row, plus one per segment that starts open.

    ``ep``: episode of each row (its last opening); ``mrow``: each episode's marker
    row; ``lc1``/``lo1``: per row, the last row entering C1 / O1 (-1: none).
    """

    closed: BoolA
    lc1: I64
    lo1: I64
    ep: I64
    mrow: I64
    e_seg: I64
    e_cont: BoolA
    e_first: I64
    e_base: F64
    e_started: I64
    e_maxd: F64
    e_lastrow: I64
    e_last: I64


def evidence(
    state: EngineState,
    zones: CaseZones,
    batch: FixBatch,
    fx: Fixes,
    seq: Sequences,
    ext: Extended,
    s_rows: I64,
    r: ScannedRows,
    scan: Scan,
    cfg: GeofenceConfig,
) -> tuple[EngineState, Transitions]:
    """Episodes, transitions and new states from the scanned rows."""
    pool = fix_pool(state, ext, s_rows, scan)
    eps = episodes(r, scan, pool)
    atype = _atype(zones, r.zone, r.t)
    tra = transits(cfg, zones, r, scan, pool, eps, ext.prev)
    trans = transitions(zones, batch, seq, r, scan, pool, eps, atype, tra)
    new = new_states(state, zones, batch, fx, seq, ext, r, scan, pool, eps, atype)
    return new, trans


def fix_pool(state: EngineState, ext: Extended, s_rows: I64, scan: Scan) -> FixPool:
    """The evidence fix pool and the stored evidence of each segment."""
    ets, elat, elon, eacc = ext.ets, ext.elat, ext.elon, ext.eacc
    fpos, srow_of_first = scan.fpos, scan.srow_of_first
    ne = ets.size
    nseg = fpos.size
    seg_srow = np.full(srow_of_first.size, -1, dtype=np.int64)
    hs = srow_of_first >= 0
    seg_srow[hs] = s_rows[srow_of_first[hs]]
    used = np.flatnonzero(seg_srow >= 0)
    ur = seg_srow[used]
    nu = ur.size
    p_ts = np.concatenate((ets, state.f_ts[ur], state.l_ts[ur], state.b_ts[ur]))
    p_lat = np.concatenate((elat, state.f_lat[ur], state.l_lat[ur], state.b_lat[ur]))
    p_lon = np.concatenate((elon, state.f_lon[ur], state.l_lon[ur], state.b_lon[ur]))
    p_acc = np.concatenate((eacc, state.f_acc[ur], state.l_acc[ur], state.b_acc[ur]))
    st_before = np.full(nseg, -1, dtype=np.int64)
    st_before[used] = np.where(state.b_ts[ur] >= 0, ne + 2 * nu + np.arange(nu), -1)
    st_first = np.full(nseg, -1, dtype=np.int64)
    st_last = np.full(nseg, -1, dtype=np.int64)
    st_first[used] = ne + np.arange(nu)
    st_last[used] = ne + nu + np.arange(nu)
    st_maxd = np.full(nseg, -np.inf)
    st_maxd[used] = state.max_depth[ur]
    st_started = np.zeros(nseg, dtype=np.int64)
    st_started[used] = state.started[ur]
    st_right = np.full(nseg, -1, dtype=np.int64)
    st_right[used] = state.right_ts[ur]
    return FixPool(
        p_ts, p_lat, p_lon, p_acc, seg_srow, st_first, st_last, st_maxd, st_started, st_right,
        st_before,
    )


def transits(
    cfg: GeofenceConfig, zones: CaseZones, r: ScannedRows, scan: Scan, pool: FixPool,
    eps: Episodes, prev: I64,
) -> tuple[I64, I64, I64, F64]:
    """Passing through: a pending run (wrong-side fixes that did not confirm) of an
    exclusion zone ended by a right-side fix, where the fix before the run, the run's
    first fix and the closing fix are at most `segment_max_gap_ms` apart, both legs have
    a plausible speed and the path goes on (the straight line from before to after is
    at least half the way through the run's first fix: no spike out and back). An
    inferred crossing, like a segment through the zone. Returns (rows, first fix,
    closing fix, depth)."""
    sym, fix, depth = r.sym, r.fix, r.depth
    before, after = scan.before, scan.after
    cand = (before == C1) & (after == 0) & ((sym == SYM_R) | (sym == SYM_RC)) & (r.t == 0)
    cand &= zones.store.kind_excl[r.zone]
    rows = np.flatnonzero(cand)
    e = np.zeros(0, np.int64)
    if rows.size == 0:
        return e, e, e, np.zeros(0)
    pr = eps.lc1[rows]
    inb = pr >= scan.seg_start[rows]
    seg = scan.seg_id[rows]
    f1 = np.where(inb, fix[np.maximum(pr, 0)], pool.st_first[seg])
    dep = np.where(inb, depth[np.maximum(pr, 0)], pool.st_maxd[seg])
    b = np.where(inb, np.where(f1 < prev.size, prev[np.minimum(f1, prev.size - 1)], -1),
                 pool.st_before[seg])
    nf = fix[rows]
    p_ts, p_lat, p_lon, p_acc = pool.ts, pool.lat, pool.lon, pool.acc
    ok = (b >= 0) & (f1 >= 0)
    b0, f0 = np.maximum(b, 0), np.maximum(f1, 0)
    ok &= p_ts[nf] - p_ts[b0] <= cfg.segment_max_gap_ms
    m_b = np.maximum(p_acc[b0], cfg.min_margin_m)
    m_f = np.maximum(p_acc[f0], cfg.min_margin_m)
    m_n = np.maximum(p_acc[nf], cfg.min_margin_m)
    d_bf = haversine_m(p_lat[b0], p_lon[b0], p_lat[f0], p_lon[f0])
    d_fn = haversine_m(p_lat[f0], p_lon[f0], p_lat[nf], p_lon[nf])
    d_bn = haversine_m(p_lat[b0], p_lon[b0], p_lat[nf], p_lon[nf])
    v1 = np.maximum(d_bf - m_b - m_f, 0) / np.maximum((p_ts[f0] - p_ts[b0]) / 1000, 1.0)
    v2 = np.maximum(d_fn - m_f - m_n, 0) / np.maximum((p_ts[nf] - p_ts[f0]) / 1000, 1.0)
    ok &= (v1 <= cfg.segment_max_speed_mps) & (v2 <= cfg.segment_max_speed_mps)
    ok &= d_bn >= 0.5 * (d_bf + d_fn)
    k = np.flatnonzero(ok)
    return rows[k], f1[k], nf[k], dep[k]


def episodes(r: ScannedRows, scan: Scan, pool: FixPool) -> Episodes:
    """Episodes: their first fix, start, maximum depth and last evidence row."""
    sym, depth, fix = r.sym, r.depth, r.fix
    first, seg_start, seg_id = scan.first, scan.seg_start, scan.seg_id
    before, after, s0_seg = scan.before, scan.after, scan.s0_seg
    st_first, st_maxd, st_started, st_last = (
        pool.st_first,
        pool.st_maxd,
        pool.st_started,
        pool.st_last,
    )
    p_ts = pool.ts
    pos = np.arange(sym.size, dtype=np.int64)
    is_open_a = after >= O0
    opened = (before < O0) & is_open_a
    closed = (before >= O0) & ~is_open_a
    wrongsym = (sym == SYM_W) | (sym == SYM_D) | (sym == SYM_X)
    member = wrongsym & is_open_a
    c1_entry = (before < C1) & (after == C1)
    o1_entry = (before == O0) & (after == O1)
    lc1 = np.maximum.accumulate((pos + 1) * c1_entry - 1)
    lo1 = np.maximum.accumulate((pos + 1) * o1_entry - 1)

    # Episodes: one per opening row, plus one per segment that starts open.
    cont_marker = first & (s0_seg[seg_id] >= O0)
    marker = opened | cont_marker
    ep = np.cumsum(marker) - 1
    mrow = np.flatnonzero(marker)
    nep = mrow.size
    e_seg = seg_id[mrow]
    e_cont = cont_marker[mrow]
    # Pending fix of an opening from C1: last C1 entry of the segment, else the stored one.
    from_pending = ~e_cont & (before[mrow] == C1)
    pr = lc1[mrow]
    pend_in_batch = pr >= seg_start[mrow]
    e_first = np.where(e_cont, st_first[e_seg], fix[mrow])
    e_base = np.where(e_cont, st_maxd[e_seg], -np.inf)
    fp = np.flatnonzero(from_pending & pend_in_batch)
    e_first[fp] = fix[pr[fp]]
    e_base[fp] = depth[pr[fp]]
    fs = np.flatnonzero(from_pending & ~pend_in_batch)
    e_first[fs] = st_first[e_seg[fs]]
    e_base[fs] = st_maxd[e_seg[fs]]
    e_started = np.where(e_cont, st_started[e_seg], p_ts[e_first])
    # Maximum depth and last evidence row per episode.
    mem = np.flatnonzero(member)
    e_maxd = e_base.copy()
    e_lastrow = np.full(nep, -1, dtype=np.int64)
    if mem.size:
        me = ep[mem]
        starts = np.flatnonzero(np.concatenate(([True], me[1:] != me[:-1])))
        ue = me[starts]
        e_maxd[ue] = np.maximum(e_maxd[ue], np.maximum.reduceat(depth[mem], starts))
        ends = np.append(starts[1:], mem.size) - 1
        e_lastrow[ue] = mem[ends]
    e_last = np.where(e_lastrow >= 0, fix[np.maximum(e_lastrow, 0)], st_last[e_seg])
    return Episodes(
        closed,
        lc1,
        lo1,
        ep,
        mrow,
        e_seg,
        e_cont,
        e_first,
        e_base,
        e_started,
        e_maxd,
        e_lastrow,
        e_last,
    )


def transitions(
    zones: CaseZones,
    batch: FixBatch,
    seq: Sequences,
    r: ScannedRows,
    scan: Scan,
    pool: FixPool,
    eps: Episodes,
    atype: I8,
    tra: tuple[I64, I64, I64, F64],
) -> Transitions:
    """Opens, closes, updates and inferred crossings, in time order."""
    sym, depth, fix, rts, dc, zone = r.sym, r.depth, r.fix, r.ts, r.dc, r.zone
    fpos, before, after = scan.fpos, scan.before, scan.after
    p_ts, p_lat, p_lon, p_acc, st_right = pool.ts, pool.lat, pool.lon, pool.acc, pool.st_right
    closed, lo1, ep, mrow, e_seg, e_cont = (
        eps.closed,
        eps.lo1,
        eps.ep,
        eps.mrow,
        eps.e_seg,
        eps.e_cont,
    )
    e_first, e_base, e_started = eps.e_first, eps.e_base, eps.e_started
    e_maxd, e_lastrow, e_last = eps.e_maxd, eps.e_lastrow, eps.e_last
    dc_dev, dc_case = seq.dc_dev, seq.dc_case
    nr = sym.size
    tr: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "kind",
            "inferred",
            "row",
            "at",
            "started",
            "ended",
            "maxd",
            "ffix",
            "lfix",
            "seq",
        )
    }

    def emit(
        kind: int,
        rows: I64,
        at: I64,
        started: I64,
        ended: I64,
        maxd: F64,
        ffix: I64,
        lfix: I64,
        inferred: bool,
        rank: I64,
    ) -> None:
        tr["kind"].append(np.full(rows.size, kind, np.int8))
        tr["inferred"].append(np.full(rows.size, inferred, bool))
        tr["row"].append(rows)
        tr["at"].append(at)
        tr["started"].append(started)
        tr["ended"].append(ended)
        tr["maxd"].append(maxd)
        tr["ffix"].append(ffix)
        tr["lfix"].append(lfix)
        tr["seq"].append(rank)

    # Opens (evidence at opening time).
    no = ~e_cont
    orow = mrow[no]
    emit(
        K_OPEN,
        orow,
        rts[orow],
        e_started[no],
        np.full(orow.size, -1, np.int64),
        np.maximum(e_base[no], depth[orow]),
        e_first[no],
        fix[orow],
        False,
        orow * 4,
    )
    # Closes (final evidence).
    crow = np.flatnonzero(closed)
    ce = ep[crow]
    ended = np.where(sym[crow] == SYM_I, rts[crow], -1)
    rclose = sym[crow] != SYM_I
    l1 = lo1[crow]
    own_m = rclose & (l1 >= mrow[ce])
    own = np.flatnonzero(own_m)
    ended[own] = rts[l1[own]]
    inh = np.flatnonzero(rclose & ~own_m)
    ended[inh] = st_right[e_seg[ce[inh]]]
    emit(
        K_CLOSE,
        crow,
        rts[crow],
        e_started[ce],
        ended,
        e_maxd[ce],
        e_first[ce],
        e_last[ce],
        False,
        crow * 4 + 3,
    )
    # Updates: episodes still open at the end with evidence after their opening row.
    last_row = np.append(fpos[1:], nr) - 1
    seg_last_ep = ep[last_row]
    still = after[last_row] >= O0
    ue = seg_last_ep[still]
    newer = np.where(e_cont[ue], e_lastrow[ue] >= 0, e_lastrow[ue] > mrow[ue])
    ue = ue[newer]
    urow = e_lastrow[ue]
    emit(
        K_UPDATE,
        urow,
        rts[urow],
        e_started[ue],
        np.full(ue.size, -1, np.int64),
        e_maxd[ue],
        e_first[ue],
        e_last[ue],
        False,
        urow * 4 + 2,
    )
    # Inferred crossings: rows N (tie 1) while the key is not open.
    nrow = np.flatnonzero((r.tie == 1) & (before < O0))
    af = r.afix[nrow]
    emit(
        K_OPEN,
        nrow,
        rts[nrow],
        p_ts[af],
        p_ts[fix[nrow]],
        depth[nrow],
        af,
        fix[nrow],
        True,
        nrow * 4,
    )
    emit(
        K_CLOSE,
        nrow,
        rts[nrow],
        p_ts[af],
        p_ts[fix[nrow]],
        depth[nrow],
        af,
        fix[nrow],
        True,
        nrow * 4 + 1,
    )

    # Transits: inferred crossings too (see `transits`).
    trow, t_f1, t_n, t_dep = tra
    if trow.size:
        for kind, off in ((K_OPEN, 0), (K_CLOSE, 1)):
            emit(kind, trow, rts[trow], p_ts[t_f1], p_ts[t_n], t_dep, t_f1, t_n, True,
                 trow * 4 + off)

    cat = {k: np.concatenate(v) for k, v in tr.items()}
    rows = cat["row"]
    tdc = dc[rows]
    tdev = dc_dev[tdc]
    tcase = dc_case[tdc]
    tzone = zone[rows]
    tat = atype[rows]
    # Time order; within an instant, row order (device, zone, type) then kind.
    order = order_by(cat["at"], cat["seq"], 4 * nr + 4)
    ff = cat["ffix"][order]
    lf = cat["lfix"][order]
    trans = Transitions(
        {
            "kind": cat["kind"][order],
            "atype": tat[order],
            "inferred": cat["inferred"][order],
            "dev": obj(batch.device_ids, tdev[order]),
            "case": obj(zones.case_id_arr, tcase[order]),
            "zone": obj(zones.zone_id_arr, tzone[order]),
            "at": cat["at"][order],
            "started": cat["started"][order],
            "ended": cat["ended"][order],
            "max_depth": cat["maxd"][order],
            "f_ts": p_ts[ff],
            "f_lat": p_lat[ff],
            "f_lon": p_lon[ff],
            "f_acc": p_acc[ff],
            "l_ts": p_ts[lf],
            "l_lat": p_lat[lf],
            "l_lon": p_lon[lf],
            "l_acc": p_acc[lf],
        }
    )
    return trans


def new_states(
    state: EngineState,
    zones: CaseZones,
    batch: FixBatch,
    fx: Fixes,
    seq: Sequences,
    ext: Extended,
    r: ScannedRows,
    scan: Scan,
    pool: FixPool,
    eps: Episodes,
    atype: I8,
) -> EngineState:
    """Each segment's final state (idle ones dropped), untouched stored states, and the
    updated device table."""
    depth, fix, rts, dc, zone = r.depth, r.fix, r.ts, r.dc, r.zone
    fpos, seg_start, seg_id, after = scan.fpos, scan.seg_start, scan.seg_id, scan.after
    p_ts, p_lat, p_lon, p_acc = pool.ts, pool.lat, pool.lon, pool.acc
    seg_srow, st_first, st_maxd, st_right = (
        pool.seg_srow,
        pool.st_first,
        pool.st_maxd,
        pool.st_right,
    )
    lc1, lo1, ep, mrow = eps.lc1, eps.lo1, eps.ep, eps.mrow
    e_first, e_started, e_maxd, e_last = eps.e_first, eps.e_started, eps.e_maxd, eps.e_last
    dc_dev, dc_case = seq.dc_dev, seq.dc_case
    last_row = np.append(fpos[1:], r.sym.size) - 1
    fin = after[last_row]
    keep_seg = np.flatnonzero(fin != 0)
    lr = last_row[keep_seg]
    fs_ = fin[keep_seg]
    n_f = np.empty(keep_seg.size, dtype=np.int64)
    n_l = np.empty(keep_seg.size, dtype=np.int64)
    n_maxd = np.empty(keep_seg.size)
    n_started = np.empty(keep_seg.size, dtype=np.int64)
    n_right = np.full(keep_seg.size, -1, dtype=np.int64)
    n_b = np.full(keep_seg.size, -1, dtype=np.int64)  # the fix before the pending run
    prev = ext.prev
    pend_m = fs_ == C1
    pl = lc1[lr]
    pin_m = pend_m & (pl >= seg_start[lr])
    pin = np.flatnonzero(pin_m)
    n_f[pin] = fix[pl[pin]]
    n_maxd[pin] = depth[pl[pin]]
    fin_ = n_f[pin]
    n_b[pin] = np.where(fin_ < prev.size, prev[np.minimum(fin_, prev.size - 1)], -1)
    pst = np.flatnonzero(pend_m & ~pin_m)
    n_f[pst] = st_first[keep_seg[pst]]
    n_maxd[pst] = st_maxd[keep_seg[pst]]
    n_b[pst] = pool.st_before[keep_seg[pst]]
    has_b = n_b >= 0
    nb_ = np.maximum(n_b, 0)
    pend = np.flatnonzero(pend_m)
    n_l[pend] = n_f[pend]
    n_started[pend] = p_ts[n_f[pend]]
    op = np.flatnonzero(~pend_m)
    oe = ep[lr[op]]
    n_f[op] = e_first[oe]
    n_l[op] = e_last[oe]
    n_maxd[op] = e_maxd[oe]
    n_started[op] = e_started[oe]
    closing = np.flatnonzero(fs_ == O1)
    ce2 = ep[lr[closing]]
    l1b = lo1[lr[closing]]
    own2 = l1b >= mrow[ce2]
    rt = np.where(own2, rts[np.maximum(l1b, 0)], st_right[seg_id[lr[closing]]])
    n_right[closing] = rt
    kdc = dc[lr]
    kz = zone[lr]
    untouched = np.ones(state.n_episodes, dtype=bool)
    untouched[seg_srow[seg_srow >= 0]] = False
    ut = np.flatnonzero(untouched)
    new_cols: dict[str, np.ndarray] = {
        "dev": np.concatenate((state.dev[ut], obj(batch.device_ids, dc_dev[kdc]))),
        "case": np.concatenate((state.case[ut], obj(zones.case_id_arr, dc_case[kdc]))),
        "zone": np.concatenate((state.zone[ut], obj(zones.zone_id_arr, kz))),
        "atype": np.concatenate((state.atype[ut], atype[lr])),
        "status": np.concatenate((state.status[ut], fs_.astype(np.int8))),
        "f_ts": np.concatenate((state.f_ts[ut], p_ts[n_f])),
        "f_lat": np.concatenate((state.f_lat[ut], p_lat[n_f])),
        "f_lon": np.concatenate((state.f_lon[ut], p_lon[n_f])),
        "f_acc": np.concatenate((state.f_acc[ut], p_acc[n_f])),
        "l_ts": np.concatenate((state.l_ts[ut], p_ts[n_l])),
        "l_lat": np.concatenate((state.l_lat[ut], p_lat[n_l])),
        "l_lon": np.concatenate((state.l_lon[ut], p_lon[n_l])),
        "l_acc": np.concatenate((state.l_acc[ut], p_acc[n_l])),
        "max_depth": np.concatenate((state.max_depth[ut], n_maxd)),
        "started": np.concatenate((state.started[ut], n_started)),
        "right_ts": np.concatenate((state.right_ts[ut], n_right)),
        "last_ts": np.concatenate((state.last_ts[ut], rts[lr])),
        "pend_n": np.concatenate((state.pend_n[ut], np.where(fs_ == C1, scan.run_n[lr], 0))),
        "b_ts": np.concatenate((state.b_ts[ut], np.where(has_b, p_ts[nb_], -1))),
        "b_lat": np.concatenate((state.b_lat[ut], p_lat[nb_])),
        "b_lon": np.concatenate((state.b_lon[ut], p_lon[nb_])),
        "b_acc": np.concatenate((state.b_acc[ut], p_acc[nb_])),
    }
    new_cols.update(_device_table(state, zones, batch, fx, seq, ext.drow))
    new = EngineState(new_cols)
    if state._ix is not None and state._ix[0] is zones.token:
        new._ix = (
            zones.token,
            np.concatenate((state._ix[1][ut], dc_case[kdc])),
            np.concatenate((state._ix[2][ut], kz)),
        )
    return new
