"""`advance`: saved states + a batch of fixes -> new states + transitions.

`advance` is pure and deterministic: it never mutates its inputs. Its steps, each a
function over the frozen frames of `geofence.engine.frames`:

0. `order_fixes`: the batch in (device, ts) order (stable; it arrives in time order
   across devices, and device order makes the table and edge reads sequential);
1. `sequences`: runs per device and per (device, case);
2. `extend_with_stored`: each device's stored last fix as the start of a segment;
3. `stated_keys`: the stored episode states that take part;
4. `pairs.direct_pairs`: the case's own zones through dense (case, slot) tables and
   an expanded-bbox prefilter (schedules: flip instants per (schedule, tz) group,
   one ``searchsorted``, `geofence.engine.activity`);
5. `pairs.shared_pairs`: shared zones through the uniform grid, plus every fix of a
   (device, zone) whose episode state is not idle;
6. `observations`: signed distances (exact only within the rule cutoff, see
   `ZoneStore`) and symbols (`geofence.engine.observe`), with `pairs.late_pairs`;
7. `changeable_rows`: the (device, zone, type) keys that can change (a wrong-side
   fix or a stored state);
8. `segments.infer_crossings`: sparse-segment crossing inference;
9. `candidate_rows`, `prune_rows`, `with_resets`, `scan_rows`: the vectorised scan of
   the episode state machine (`geofence.episodes`);
10. `evidence.evidence`: first/last fix, max depth, start/end, new states, columnar.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from geofence.confirm import confirm as confirm_runs
from geofence.engine.activity import Activity
from geofence.engine.batch import FixBatch
from geofence.engine.config import DEFAULT_CONFIG, GeofenceConfig, executor
from geofence.engine.evidence import evidence, finish_empty
from geofence.engine.frames import (
    Extended,
    Fixes,
    Pairs,
    Prefilter,
    Rows,
    Scan,
    ScannedRows,
    Sequences,
    Stated,
)
from geofence.engine.kernels import (
    I64,
    argsort_int,
    in_sorted,
    lexsort2,
    lookup_ids,
    run_starts,
)
from geofence.engine.observe import observe
from geofence.engine.pairs import (
    direct_pairs,
    late_pairs,
    late_pairs_active,
    prefilter,
    shared_pairs,
)
from geofence.engine.segments import infer_crossings
from geofence.episodes import (
    AT_APPROACH,
    C1,
    O1,
    OUT_FIELDS,
    SYM_D,
    SYM_I,
    SYM_U,
    SYM_W,
    EngineState,
    Transitions,
    scan_states,
)
from geofence.outliers import RELEASED, Carry, detect
from geofence.registry import CaseZones

#: Outlier ranges decided by a batch: (device_id, from_ms, to_ms), from <= ts < to.
OutlierRanges = list[tuple[str, int, int]]


def advance(
    state: EngineState,
    batch: FixBatch,
    zones: CaseZones,
    config: GeofenceConfig = DEFAULT_CONFIG,
) -> tuple[EngineState, Transitions]:
    """Evaluate a batch of fixes from ``state``; returns the new state and transitions.

    Devices not in the batch keep their state unchanged. To re-evaluate after a
    late fix, call again with the state saved before the late fix's time and the
    device's fixes from that time on.
    """
    new, trans, _ = advance_ex(state, batch, zones, config)
    return new, trans


def advance_ex(
    state: EngineState,
    batch: FixBatch,
    zones: CaseZones,
    config: GeofenceConfig = DEFAULT_CONFIG,
) -> tuple[EngineState, Transitions, OutlierRanges]:
    """`advance`, also returning the outlier ranges the batch decided.

    Fixes the kinematic rule holds suspect (`geofence.outliers`) are stored by the
    caller but never evaluated: they neither open, close nor infer an episode, and the
    device's last fix (the start of the next segment) stays the last accepted one. A
    fix whose previous fix turned out a lone spike starts no segment from it.
    """
    n = len(batch)
    if n == 0:
        return state, Transitions.empty(), []
    o = _device_order(batch)
    # the batch in (device, ts) order once: the outlier layer and the evaluation share it
    sb = batch.select(o) if np.any(o[1:] < o[:-1]) else batch
    d_s = sb.device
    starts = np.flatnonzero(np.concatenate(([True], d_s[1:] != d_s[:-1]))).astype(np.int64)
    ids = batch.device_ids[d_s[starts]]
    rows = _carry_rows(state, ids)
    res = detect(starts, sb.ts, sb.lat, sb.lon, sb.acc, _carry_in(state, rows),
                 config.outliers, own_carry=True)
    if res.suspect.any():  # the accepted fixes, still in (device, ts) order
        keep = np.flatnonzero(~res.suspect)
        inner, lone, held = sb.select(keep), res.after_lone[keep], res.held[keep]
    else:
        inner, lone, held = sb, res.after_lone, res.held
    new, trans = _advance(state, inner, zones, config, lone if lone.any() else None,
                          held if held.any() else None, ordered=True)
    new = _with_carry(new, state, ids, rows, res.carry)
    return new, trans, [(str(ids[g]), a, b) for g, a, b in res.ranges]


def _device_order(batch: FixBatch) -> I64:
    """(device, ts) order, stable: a counting sort by device of a batch that arrives in
    time order (computed once: the outlier layer and `order_fixes` share it)."""
    ts, dev = batch.ts, batch.device
    o_ts = np.argsort(ts, kind="stable") if np.any(ts[1:] < ts[:-1]) else None
    o = argsort_int(dev if o_ts is None else dev[o_ts], max(len(batch.device_ids), 1))
    return o if o_ts is None else o_ts[o]


def _carry_rows(state: EngineState, ids: np.ndarray) -> I64:
    """Each device's row in the stored outlier carry (-1: none yet)."""
    if state.o_id.size == 0:
        return np.full(ids.size, -1, dtype=np.int64)
    return lookup_ids(state.out_index(), ids)


def _carry_in(state: EngineState, rows: I64) -> Carry:
    """The stored carry of each row (-1: a device with none yet: empty)."""
    if rows.size == 0 or state.o_id.size == 0:
        return Carry.empty(rows.size)
    at = np.maximum(rows, 0)
    c = Carry(**{k: state.col(f"o_{k}")[at] for k in OUT_FIELDS})
    miss = np.flatnonzero(rows < 0)
    if miss.size:
        e = Carry.empty(miss.size)
        for k in OUT_FIELDS:
            getattr(c, k)[miss] = getattr(e, k)
    return c


def _with_carry(new: EngineState, old: EngineState, ids: np.ndarray, rows: I64,
                carry: Carry) -> EngineState:
    """``new`` with the outlier carry of ``ids`` (stored at ``rows``, -1: none)
    replaced; the other devices' kept from ``old``."""
    cols = {k: v for k, v in new.columns().items() if not k.startswith("o_")}
    keep = np.ones(old.o_id.size, dtype=bool)
    keep[rows[rows >= 0]] = False
    cols["o_id"] = np.concatenate((old.o_id[keep], ids))
    for k in OUT_FIELDS:
        cols[f"o_{k}"] = np.concatenate((old.col(f"o_{k}")[keep], getattr(carry, k)))
    out = EngineState(cols)
    out._ix = new._ix
    return out


def _advance(
    state: EngineState,
    batch: FixBatch,
    zones: CaseZones,
    config: GeofenceConfig = DEFAULT_CONFIG,
    no_segment: np.ndarray | None = None,
    held: np.ndarray | None = None,
    ordered: bool = False,
) -> tuple[EngineState, Transitions]:
    """`advance` on the accepted fixes; ``no_segment``: per fix (in (device, ts)
    order), no segment from its previous fix; ``held``: per fix, `geofence.outliers`'
    hold flag (HELD: counts but cannot confirm; RELEASED: the held run confirms);
    ``ordered``: the batch is already in (device, ts) order (`advance_ex` sorts it)."""
    cfg = config
    if len(batch) == 0:
        return state, Transitions.empty()
    nz = max(len(zones.zone_ids), 1)
    nc = max(len(zones.case_ids), 1)
    if batch.case.min() < 0 or batch.case.max() >= len(zones.case_ids):
        raise ValueError("FixBatch.case: index outside this CaseZones registry")
    fx = order_fixes(batch, cfg, ordered)
    seq = sequences(fx, nc)
    ext = extend_with_stored(state, batch, zones, cfg, fx, seq)
    if no_segment is not None:
        ext.prev[no_segment] = -1
    sd = stated_keys(state, zones, seq, ext.dmap, nz, nc)
    actv = batch_activity(state, zones, fx, ext, sd)
    pre = prefilter(zones, cfg, fx, seq, sd)
    pairs = direct_pairs(zones, fx, seq, pre, actv)
    if zones.shared_zones.size:
        pairs = pairs.concat(shared_pairs(zones, fx, seq, sd, pre, actv, nz))
    obs = observations(zones, cfg, fx, seq, sd, pre, pairs, actv, nz)
    rsel = changeable_rows(obs, seq, sd, pre.maxd, nz)
    crossings = infer_crossings(
        zones,
        cfg,
        actv,
        ext.ets,
        ext.elat,
        ext.elon,
        ext.eacc,
        ext.em,
        ext.edc,
        ext.prev,
        fx.case,
        seq.dc_case,
    )
    rows, r_slot = candidate_rows(obs, rsel, crossings, ext, nz)
    if rows.key.size == 0:
        return finish_empty(state, zones, batch, fx, seq, ext.drow)
    pruned = prune_rows(rows, r_slot, zones, sd, seq.ndc, pre.maxd, fx.n, held)
    if pruned is None:
        return finish_empty(state, zones, batch, fx, seq, ext.drow)
    merged = with_resets(pruned, state, sd, seq, fx, actv)
    merged, scan = scan_rows(merged, state, sd, zones, seq, cfg, held)
    return evidence(state, zones, batch, fx, seq, ext, sd.rows, merged, scan, cfg)


# --------------------------------------------------------------------------- 0.-3. frames


def order_fixes(batch: FixBatch, cfg: GeofenceConfig, ordered: bool = False) -> Fixes:
    """Step 0: the batch in (device, ts) order.

    A batch arrives in time order across devices. Evaluated in (device, ts) order,
    a device's fixes are contiguous and in time order, so the per-case tables and
    the zones' edge rows are read in runs instead of at random (cache misses were
    a good part of the time); within a key, fix order is still time order.
    """
    n = len(batch)
    ndev = len(batch.device_ids)
    ts, dev = batch.ts, batch.device
    o = None if ordered else _device_order(batch)
    if o is not None and np.any(o[1:] < o[:-1]):
        ts, case, dev = ts[o], batch.case[o], dev[o]
        lat, lon, acc = batch.lat[o], batch.lon[o], batch.acc[o]
    else:
        case, lat, lon, acc = batch.case, batch.lat, batch.lon, batch.acc
    # int64 once: an int32 index array costs numpy a cast on every gather it drives.
    case64 = case.astype(np.int64)
    m = np.clip(acc, cfg.min_margin_m, np.inf)  # np.maximum(a, scalar) is ~3x slower
    return Fixes(n, ndev, ts, case64, dev, lat, lon, acc, m)


def sequences(fx: Fixes, nc: int) -> Sequences:
    """Step 1: per device and per (device, case) runs of fixes."""
    n, ndev, dev, case = fx.n, fx.ndev, fx.dev, fx.case
    od = np.arange(n, dtype=np.int64)  # fixes are in device order now
    dev_ptr = np.zeros(ndev + 1, dtype=np.int64)
    np.cumsum(np.bincount(dev, minlength=ndev), out=dev_ptr[1:])
    has_fix = dev_ptr[1:] > dev_ptr[:-1]
    dev_case = np.full(ndev, -1, dtype=np.int64)
    dev_case[has_fix] = case[dev_ptr[:-1][has_fix]]
    multi = bool(np.any(case != dev_case[dev]))
    if not multi:
        dc = dev.astype(np.int64)
        ndc = ndev
        dc_dev = np.arange(ndev, dtype=np.int64)
        dc_case = dev_case
        odc, dc_ptr = od, dev_ptr
        u_dc = np.zeros(0, np.int64)
    else:
        u_dc, inv = np.unique(dev.astype(np.int64) * nc + case, return_inverse=True)
        dc = inv.astype(np.int64)
        ndc = u_dc.size
        dc_dev = u_dc // nc
        dc_case = u_dc % nc
        odc = argsort_int(dc, max(ndc, 1))
        dc_ptr = np.searchsorted(dc[odc], np.arange(ndc + 1))
    return Sequences(
        od, dev_ptr, has_fix, dev_case, multi, dc, ndc, dc_dev, dc_case, odc, dc_ptr, u_dc
    )


def extend_with_stored(
    state: EngineState,
    batch: FixBatch,
    zones: CaseZones,
    cfg: GeofenceConfig,
    fx: Fixes,
    seq: Sequences,
) -> Extended:
    """Step 2: the previous fix of each batch fix (segments), a stored last fix for a
    device's first fix in the batch (same case, at most ``segment_max_gap_ms`` before)."""
    n, ndev, ts, case, dev = fx.n, fx.ndev, fx.ts, fx.case, fx.dev
    od, dev_ptr = seq.od, seq.dev_ptr
    # Previous fix of the same device (segments); only usable within the same case.
    prev = od - 1
    prev[1:][dev[1:] != dev[:-1]] = -1
    if seq.multi:
        prev[(prev >= 0) & (case[np.maximum(prev, 0)] != case)] = -1
    dmap = dict(zip(batch.device_ids.tolist(), range(ndev), strict=True))
    drow = np.full(ndev, -1, dtype=np.int64)  # batch device -> row of the device table
    if state.d_id.size:
        code = lookup_ids(dmap, state.d_id)
        hit_rows = np.flatnonzero(code >= 0)
        drow[code[hit_rows]] = hit_rows
    okv = (drow >= 0) & seq.has_fix
    nv = 0
    v_ts = np.zeros(0, np.int64)
    v_lat = v_lon = v_acc = np.zeros(0, np.float64)
    v_dc = np.zeros(0, np.int64)
    if okv.any() and state.d_id.size:
        cand = np.flatnonzero(okv)  # devices with a stored last fix
        ffix = od[dev_ptr[cand]]  # their first fix in this batch
        same_case = state.d_case[drow[cand]] == zones.case_id_arr[case[ffix]]
        gap = ts[ffix] - state.d_ts[drow[cand]]
        keep = np.flatnonzero(same_case.astype(bool) & (gap >= 0) & (gap <= cfg.segment_max_gap_ms))
        cand, ffix = cand[keep], ffix[keep]
        nv = cand.size
        rows_v = drow[cand]
        v_ts = state.d_ts[rows_v]
        v_lat = state.d_lat[rows_v]
        v_lon = state.d_lon[rows_v]
        v_acc = state.d_acc[rows_v]
        v_dc = seq.dc[ffix]
        prev[ffix] = n + np.arange(nv)
    eacc = np.concatenate((fx.acc, v_acc))
    return Extended(
        dmap=dmap,
        drow=drow,
        nv=nv,
        v_ts=v_ts,
        prev=prev,
        ets=np.concatenate((ts, v_ts)),
        elat=np.concatenate((fx.lat, v_lat)),
        elon=np.concatenate((fx.lon, v_lon)),
        eacc=eacc,
        em=np.clip(eacc, cfg.min_margin_m, np.inf),
        edc=np.concatenate((seq.dc, v_dc)),
    )


def stated_keys(
    state: EngineState,
    zones: CaseZones,
    seq: Sequences,
    dmap: dict[object, int],
    nz: int,
    nc: int,
) -> Stated:
    """Step 3: stored states of the batch's (device, case) keys on attached zones."""
    R = state.n_episodes
    s_rows = np.zeros(0, np.int64)
    if R:
        ix = state._ix
        if ix is None or ix[0] is not zones.token:
            ci = np.fromiter(
                (zones.case_index.get(c, -1) for c in state.case.tolist()), np.int64, R
            )
            zi = np.fromiter(
                (zones.zone_index.get(z, -1) for z in state.zone.tolist()), np.int64, R
            )
            state._ix = (zones.token, ci, zi)
        else:
            ci, zi = ix[1], ix[2]
        rdev = lookup_ids(dmap, state.dev)
        valid = (rdev >= 0) & (ci >= 0) & (zi >= 0)
        rdc = np.full(R, -1, dtype=np.int64)
        if not seq.multi:
            rdc[valid] = rdev[valid]
            valid &= seq.dev_case[np.maximum(rdev, 0)] == ci
        else:
            u_dc = seq.u_dc
            code = np.maximum(rdev, 0) * nc + ci
            pos = np.minimum(np.searchsorted(u_dc, code), u_dc.size - 1)
            valid &= u_dc[pos] == code
            rdc[valid] = pos[valid]
        vsel = np.flatnonzero(valid)
        if vsel.size:
            att = zones.is_attached(ci[vsel], zi[vsel])
            vsel = vsel[att]
        s_rows = vsel
        s_dc = rdc[s_rows]
        s_zone = zi[s_rows]
        s_case = ci[s_rows]
    else:
        s_dc = s_zone = s_case = np.zeros(0, np.int64)
    s_t = (state.atype[s_rows] == AT_APPROACH).astype(np.int64)
    s_key = (s_dc * nz + s_zone) * 2 + s_t
    s_order = np.argsort(s_key, kind="stable")
    s_slot = zones.direct_slot(s_case, s_zone) if s_rows.size else np.zeros(0, np.int64)
    return Stated(s_rows, s_dc, s_zone, s_case, s_t, s_key, s_order, s_key[s_order], s_slot)


def batch_activity(
    state: EngineState, zones: CaseZones, fx: Fixes, ext: Extended, sd: Stated
) -> Activity:
    """Schedule lookups over the batch's span, from the oldest stored instant it needs."""
    lo = int(fx.ts.min())
    if sd.rows.size:
        lo = min(lo, int(state.last_ts[sd.rows].min()))
    if ext.nv:
        lo = min(lo, int(ext.v_ts.min()))
    return Activity(zones, lo, int(fx.ts.max()))


# --------------------------------------------------------------------------- 6.-7. observations


def observations(
    zones: CaseZones,
    cfg: GeofenceConfig,
    fx: Fixes,
    seq: Sequences,
    sd: Stated,
    pre: Prefilter,
    pairs: Pairs,
    actv: Activity,
    nz: int,
) -> dict[str, np.ndarray]:
    """Step 6: distances and symbols of the pairs, then of the late pairs.

    Keys that leave idle during the batch without a stored state need every later
    fix of their device, including those the prefilters dropped: far fixes (R) and
    weak fixes (X/R).
    """
    ex_ = executor(cfg.threads)
    obs = observe(zones.store, cfg, fx, pairs, ex_)
    maxd = pre.maxd
    kept2 = np.zeros(pre.zone2.shape, dtype=bool)
    dpair = pairs.slot >= 0
    kept2.reshape(-1)[pairs.f[dpair] * maxd + pairs.slot[dpair]] = True  # flat: 2-D fancy is slow
    extra = late_pairs(zones, obs, kept2, fx, seq, sd, pre, nz)
    if extra is not None:
        obs2 = observe(zones.store, cfg, fx, late_pairs_active(zones, fx, extra, actv), ex_)
        obs = {k: np.concatenate((obs[k], obs2[k])) for k in obs}
    return obs


def changeable_rows(
    obs: dict[str, np.ndarray], seq: Sequences, sd: Stated, maxd: int, nz: int
) -> I64:
    """Step 7: observations of keys that can change: a W/D symbol, or a stored state."""
    o_z, o_t, o_sym, o_slot = obs["z"], obs["t"], obs["sym"], obs["slot"]
    o_dc = seq.dc[obs["f"]]
    trig = (o_sym == SYM_W) | (o_sym == SYM_D)
    dense_n = seq.ndc * maxd * 2
    o_dense = (o_dc * maxd + np.maximum(o_slot, 0)) * 2 + o_t
    flag = np.zeros(dense_n, dtype=bool)
    dsel = trig & (o_slot >= 0)
    flag[o_dense[dsel]] = True
    if sd.rows.size:
        sdir = sd.slot >= 0
        flag[((sd.dc[sdir] * maxd + sd.slot[sdir]) * 2 + sd.t[sdir])] = True
    interesting = flag[o_dense] & (o_slot >= 0)
    shared_obs = np.flatnonzero(o_slot < 0)
    if shared_obs.size:
        sk = (o_dc[shared_obs] * nz + o_z[shared_obs]) * 2 + o_t[shared_obs]
        trig_keys = sk[trig[shared_obs]]
        st_keys = sd.key[sd.slot < 0] if sd.rows.size else np.zeros(0, np.int64)
        kset = np.unique(np.concatenate((trig_keys, st_keys)))
        interesting[shared_obs] = in_sorted(sk, kset)
    return np.flatnonzero(interesting)


# --------------------------------------------------------------------------- 9. rows and scan


def candidate_rows(
    obs: dict[str, np.ndarray],
    rsel: I64,
    crossings: dict[str, np.ndarray],
    ext: Extended,
    nz: int,
) -> tuple[Rows, I64]:
    """Step 9a: the selected observations, then the inferred crossings (rows ``N``);
    with each row's zone slot (-1: shared)."""
    nb = crossings["b"].size
    r_fix = np.concatenate((obs["f"][rsel], crossings["b"]))
    r_zone = np.concatenate((obs["z"][rsel], crossings["z"]))
    r_t = np.concatenate((obs["t"][rsel], np.zeros(nb, np.int64)))
    r_dc = ext.edc[r_fix]
    rows = Rows(
        fix=r_fix,
        zone=r_zone,
        t=r_t,
        sym=np.concatenate((obs["sym"][rsel], np.full(nb, SYM_U, np.int8))),
        depth=np.concatenate((obs["depth"][rsel], crossings["depth"])),
        act=np.concatenate((obs["act"][rsel], np.ones(nb, bool))),
        cnt=np.concatenate((obs["cnt"][rsel], crossings["cnt"])),
        g=np.concatenate((obs["g"][rsel], crossings["g"])),
        afix=np.concatenate((np.full(rsel.size, -1, np.int64), crossings["a"])),
        tie=np.concatenate((np.full(rsel.size, 2, np.int64), np.ones(nb, np.int64))),
        dc=r_dc,
        key=(r_dc * nz + r_zone) * 2 + r_t,
        ts=ext.ets[r_fix],
    )
    return rows, np.concatenate((obs["slot"][rsel], crossings["slot"]))


def prune_rows(
    r: Rows, r_slot: I64, zones: CaseZones, sd: Stated, ndc: int, maxd: int, n: int,
    held: np.ndarray | None = None,
) -> Rows | None:
    """Step 9b: rows by (key, ts, tie), without the no-ops; None if none is left.

    A key's fixes are in time order, so (key, fix, tie) is the same order. An uncertain
    fix that releases a hold (``held``, per batch fix) is kept: it confirms the run.
    """
    n_sh = max(int(zones.shared_zones.size), 1)
    r_dense = (r.dc * maxd + r_slot) * 2 + r.t
    sh = np.flatnonzero(r_slot < 0)
    r_dense[sh] = ndc * maxd * 2 + (r.dc[sh] * n_sh + zones.shared_pos[r.zone[sh]]) * 2 + r.t[sh]
    order = lexsort2(r_dense, ndc * (maxd + n_sh) * 2, r.fix * 2 + (r.tie == 2), 2 * n + 2)
    # Rows before a key's first wrong-side fix are no-ops when it has no stored state.
    k_s = r.key[order]
    sym_s = r.sym[order]
    trig_s = ((sym_s == SYM_W) | (sym_s == SYM_D)) & r.act[order]
    pos0 = np.arange(order.size)
    fst = run_starts(k_s)
    starts0 = np.flatnonzero(fst)
    ftrig = np.minimum.reduceat(pos0 + (~trig_s) * order.size, starts0)
    if sd.rows.size:
        p0 = np.minimum(np.searchsorted(sd.key_sorted, k_s[starts0]), sd.key_sorted.size - 1)
        ftrig[sd.key_sorted[p0] == k_s[starts0]] = 0
    tie_s = r.tie[order]
    keep_r = (pos0 >= ftrig[np.cumsum(fst) - 1]) | (tie_s == 1)
    # Uncertain rows are identities (a window end between rows shows in the flip count
    # of the next row; a trailing one gets an end row below). Right-side runs are kept
    # whole: a closing needs its fixes to span `close_ms`.
    last_s = np.append(k_s[1:] != k_s[:-1], True)
    keep_u = (sym_s != SYM_U) | (tie_s == 1) | last_s
    if held is not None:
        keep_u |= _hold_of(r.fix[order], held) == RELEASED
    keep_r &= keep_u
    order = order[np.flatnonzero(keep_r)]
    if order.size == 0:
        return None
    r_act = r.act[order]
    r_sym = r.sym[order]
    r_sym[~r_act] = SYM_U
    return Rows(
        fix=r.fix[order],
        zone=r.zone[order],
        t=r.t[order],
        sym=r_sym,
        depth=r.depth[order],
        act=r_act,
        cnt=r.cnt[order],
        g=r.g[order],
        afix=r.afix[order],
        tie=r.tie[order],
        dc=r.dc[order],
        key=r.key[order],
        ts=r.ts[order],
    )


def with_resets(
    r: Rows, state: EngineState, sd: Stated, seq: Sequences, fx: Fixes, actv: Activity
) -> ScannedRows:
    """Step 9c: reset rows (I) where a zone was inactive between two evaluations of a
    key, and end rows (U) at the device's last fix for a scheduled key.

    Rows are sorted by key; a key's previous evaluation is the previous row, or the
    stored state's last_ts for its first row.
    """
    ts = fx.ts
    r_fix, r_ts, r_sym, r_tie, r_depth, r_afix = r.fix, r.ts, r.sym, r.tie, r.depth, r.afix
    r_zone, r_t, r_dc, r_key = r.zone, r.t, r.dc, r.key
    r_act, r_cnt, r_g = r.act, r.cnt, r.g
    nr0 = r_key.size
    first0 = run_starts(r_key)
    fpos0 = np.flatnonzero(first0)
    last_r = np.append(fpos0[1:], nr0) - 1
    prev_act = np.empty(nr0, dtype=bool)
    prev_cnt = np.empty(nr0, dtype=np.int64)
    prev_act[1:] = r_act[:-1]
    prev_cnt[1:] = r_cnt[:-1]
    prev_act[fpos0] = False
    prev_cnt[fpos0] = 0
    if sd.rows.size:
        p = np.minimum(np.searchsorted(sd.key_sorted, r_key[fpos0]), sd.key_sorted.size - 1)
        hit = np.flatnonzero(sd.key_sorted[p] == r_key[fpos0])
        fr = fpos0[hit]
        a0, c0 = actv.lookup(r_g[fr], state.last_ts[sd.rows[sd.order[p[hit]]]])
        prev_act[fr] = a0
        prev_cnt[fr] = c0
    # Resets: the zone was inactive somewhere between two evaluations of a key (the
    # number of schedule flips changed): insert an I row at the first flip.
    rs = np.flatnonzero(prev_act & (r_g != 0) & (r_cnt != prev_cnt))
    # A scheduled key whose device has later fixes in the batch (dropped because the
    # zone was inactive then) gets a no-op row at the device's last fix, so that a
    # window end after its last row is seen within this batch.
    dc_last = seq.odc[np.maximum(seq.dc_ptr[1:] - 1, 0)]
    lf = dc_last[r_dc[last_r]]
    en = np.flatnonzero((r_g[last_r] != 0) & (ts[lf] > r_ts[last_r]))
    el = last_r[en]
    e_fix = lf[en]
    _, e_cnt = actv.lookup(r_g[el], ts[e_fix])
    er = np.flatnonzero(r_act[el] & (e_cnt != r_cnt[el]))  # resets before end rows
    # Extra rows: (reset before row i), (reset before end row), (end row); order keys
    # 8 i + 7 for row i, 8 i + 5 for its reset, 8 (j + 1) + 1 / + 2 for the reset and
    # end row after row j.
    xk = np.concatenate((8 * rs + 5, 8 * (el[er] + 1) + 1, 8 * (el + 1) + 2))
    if xk.size:
        xrow = np.concatenate((rs, el[er], el))  # row whose key/zone/... they share
        xfix = np.concatenate((np.full(rs.size + er.size, -1, np.int64), e_fix))
        t_res = actv.flip_time(
            np.concatenate((r_g[rs], r_g[el[er]])), np.concatenate((prev_cnt[rs], r_cnt[el[er]]))
        )
        xts = np.concatenate((t_res, ts[e_fix]))
        xsym = np.concatenate(
            (np.full(rs.size + er.size, SYM_I, np.int8), np.full(el.size, SYM_U, np.int8))
        )
        xtie = np.concatenate((np.zeros(rs.size + er.size, np.int64), np.full(el.size, 3)))
        xo = np.argsort(xk, kind="stable")
        xk = xk[xo]
        nx = xk.size
        # Destinations: row i goes after the extras with smaller keys, and vice versa.
        # Extras before real row i: keys below 8 i + 7, i.e. those with key // 8 <= i.
        d_real = np.arange(nr0) + np.cumsum(np.bincount(xk // 8, minlength=nr0 + 1)[:nr0])
        d_x = np.arange(nx) + np.minimum(xk // 8, nr0)
        tot = nr0 + nx

        def merge(real: np.ndarray, extra: np.ndarray) -> np.ndarray:
            out = np.empty(tot, dtype=real.dtype)
            out[d_real] = real
            out[d_x] = extra[xo]
            return out

        r_fix = merge(r_fix, xfix)
        r_ts = merge(r_ts, xts)
        r_sym = merge(r_sym, xsym)
        r_tie = merge(r_tie, xtie)
        r_depth = merge(r_depth, np.full(nx, np.nan))
        r_afix = merge(r_afix, np.full(nx, -1, np.int64))
        r_zone = merge(r_zone, r_zone[xrow])
        r_t = merge(r_t, r_t[xrow])
        r_dc = merge(r_dc, r_dc[xrow])
        r_key = merge(r_key, r_key[xrow])
    return ScannedRows(
        fix=r_fix,
        zone=r_zone,
        t=r_t,
        sym=r_sym,
        depth=r_depth,
        afix=r_afix,
        dc=r_dc,
        ts=r_ts,
        tie=r_tie,
        key=r_key,
    )


def scan_rows(
    r: ScannedRows, state: EngineState, sd: Stated, zones: CaseZones, seq: Sequences,
    cfg: GeofenceConfig, held: np.ndarray | None = None,
) -> tuple[ScannedRows, Scan]:
    """Step 9d: a segment per key, its stored starting state, the confirmations
    (`geofence.confirm`; ``held`` fixes, per batch fix, confirm nothing), the state
    machine's scan."""
    first = run_starts(r.key)
    fpos = np.flatnonzero(first)
    srow_of_first = np.full(fpos.size, -1, dtype=np.int64)
    if sd.rows.size:
        p = np.minimum(np.searchsorted(sd.key_sorted, r.key[fpos]), sd.key_sorted.size - 1)
        hit = sd.key_sorted[p] == r.key[fpos]
        srow_of_first[hit] = sd.order[p[hit]]  # index into sd.rows
    has_st = srow_of_first >= 0
    nr = r.key.size
    seg_start = np.repeat(fpos, np.diff(fpos, append=nr))  # each row's key's first row
    seg_id = np.cumsum(first) - 1
    s0_seg = np.zeros(fpos.size, dtype=np.int8)
    if has_st.any():
        s0_seg[has_st] = state.status[sd.rows[srow_of_first[has_st]]]
    s0 = s0_seg[seg_id]
    hold = _hold_of(r.fix, held) if held is not None else None
    sym, run_n, rel = _confirmations(cfg, zones, state, r, seq.dc_case, seg_start, seg_id,
                                     s0_seg, sd.rows, srow_of_first, hold)
    before, after = scan_states(sym, seg_start, s0)
    pending = np.flatnonzero(rel)
    base = r.sym
    while pending.size:  # a released row opens a pending run: it counts as wrong-side
        ok = pending[before[pending] == C1]
        if ok.size == 0:
            break
        sid = seg_id[ok]
        firsts = ok[np.concatenate(([True], sid[1:] != sid[:-1]))]  # the earliest per key
        base = base.copy()
        base[firsts] = SYM_W
        sym, run_n, _ = _confirmations(cfg, zones, state, replace(r, sym=base), seq.dc_case,
                                       seg_start, seg_id, s0_seg, sd.rows, srow_of_first, hold)
        before, after = scan_states(sym, seg_start, s0)
        pending = np.setdiff1d(pending, firsts)
    r = replace(r, sym=sym)
    return r, Scan(first, fpos, seg_start, seg_id, s0_seg, srow_of_first, before, after, run_n)


def _hold_of(fix: I64, held: np.ndarray) -> np.ndarray:
    """Per row: its fix's hold flag (`geofence.outliers`; 0 for a row of no batch fix).
    One gather from the flags framed by zeros: -1 and anything past the batch read 0."""
    framed = np.zeros(held.shape[0] + 2, dtype=np.int8)
    framed[1:-1] = held
    out: np.ndarray = np.take(framed, fix + 1, mode="clip")
    return out


def _confirmations(
    cfg: GeofenceConfig, zones: CaseZones, state: EngineState, r: ScannedRows, dc_case: I64,
    seg_start: I64, seg_id: I64, s0_seg: np.ndarray, s_rows: I64, srow_of_first: I64,
    hold: np.ndarray | None = None,
) -> tuple[np.ndarray, I64, np.ndarray]:
    """Mark the wrong-side fixes that confirm an opening and the right-side fixes that
    confirm a closing, with the runs the stored states carry."""
    nseg = s0_seg.size
    c_first = np.zeros(nseg, dtype=np.int64)
    c_count = np.zeros(nseg, dtype=np.int64)
    c_right = np.zeros(nseg, dtype=np.int64)
    hs = np.flatnonzero(srow_of_first >= 0)
    if hs.size:
        sr = s_rows[srow_of_first[hs]]
        c_first[hs] = state.f_ts[sr]
        c_count[hs] = np.maximum(state.pend_n[sr], 1)
        c_right[hs] = state.right_ts[sr]
    n_open, t_open = _open_thresholds(cfg, zones, dc_case, r.dc)
    return confirm_runs(
        r.sym, r.ts, seg_start, seg_id, s0_seg == C1, c_first, c_count, s0_seg == O1, c_right,
        n_open, t_open, cfg.close_points, cfg.close_ms, hold,
    )


def _open_thresholds(
    cfg: GeofenceConfig, zones: CaseZones, dc_case: I64, dc: I64
) -> tuple[I64 | int, I64 | int]:
    """Points and milliseconds an opening needs: per row (its case's, else the default),
    or the defaults alone when no case of the registry sets its own."""
    n_c, t_c = zones.confirm_n, zones.confirm_ms
    if not (np.any(n_c >= 0) or np.any(t_c >= 0)):
        return cfg.confirm_points, cfg.confirm_ms
    case = dc_case[dc]
    n_open = n_c[case]
    t_open = t_c[case]
    return (np.where(n_open >= 0, n_open, cfg.confirm_points),
            np.where(t_open >= 0, t_open, cfg.confirm_ms))
