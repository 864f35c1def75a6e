"""Inferred exclusion crossings between consecutive fixes of a device (rows ``N``)."""

from __future__ import annotations

import numpy as np

from geofence.engine.activity import Activity
from geofence.engine.config import GeofenceConfig
from geofence.engine.kernels import F64, I64, at2, in_sorted, nonzero2, take_rows
from geofence.geometry import M_PER_DEG, haversine_m
from geofence.registry import CaseZones


def infer_crossings(
    zones: CaseZones,
    cfg: GeofenceConfig,
    actv: Activity,
    ets: I64,
    elat: F64,
    elon: F64,
    eacc: F64,
    em: F64,
    edc: I64,
    prev: I64,
    case: I64,
    dc_case: I64,
) -> dict[str, np.ndarray]:
    """Inferred exclusion crossings between consecutive fixes of a device (rows ``N``).

    Candidates: consecutive fixes <= ``segment_max_gap_ms`` apart, both with
    acc <= ``max_open_acc_m``; zones: the case's exclusion zones whose bounding disc,
    shrunk by M = max(m_a, m_b), meets the segment. Then: zone active at both ends in
    the same active stretch, both ends definitely outside, depth along the segment > M.
    """
    st = zones.store
    empty = {
        k: np.zeros(0, np.float64 if k == "depth" else np.int64)
        for k in ("b", "a", "z", "depth", "cnt", "g", "slot")
    }
    nb = prev.size
    # prev[i] is the fix before fix i (batch fixes first, then stored last fixes).
    ok = prev >= 0
    a_all = np.maximum(prev, 0)
    ok &= ets[:nb] - np.take(ets, a_all) <= cfg.segment_max_gap_ms
    good = eacc <= cfg.max_open_acc_m
    ok &= good[:nb]
    ok &= np.take(good, a_all)
    b = np.flatnonzero(ok)
    if b.size == 0:
        return empty
    a = np.take(prev, b)
    # a plausible speed between the two fixes (beyond both margins)
    sdt = np.maximum((ets[b] - ets[a]) / 1000.0, 1.0)
    seg_len = haversine_m(elat[a], elon[a], elat[b], elon[b])
    plaus = np.maximum(seg_len - em[a] - em[b], 0.0) / sdt <= cfg.segment_max_speed_mps
    b, a, seg_len = b[plaus], a[plaus], seg_len[plaus]
    if b.size == 0:
        return empty
    # Entering deeper than M with both ends outside by their margins needs a segment
    # longer than m_a + m_b + 2 M (a cheap cut for dense, slow trajectories). The
    # east-west scale uses the largest cos(lat) of the batch: the length is
    # overestimated, so the cut never drops a candidate.
    ema, emb = np.take(em, a), np.take(em, b)
    # a long chord strays from a curved path: it must pass deeper (segment_depth_per_m)
    mm = np.maximum(np.maximum(ema, emb), cfg.segment_depth_per_m * seg_len)
    la_a, la_b = np.take(elat, a), np.take(elat, b)
    dy = (la_b - la_a) * M_PER_DEG
    kx = M_PER_DEG * float(np.cos(np.radians(np.abs(elat).min())))
    dx = (np.take(elon, b) - np.take(elon, a)) * kx
    ok = np.sqrt(dx * dx + dy * dy) * 1.01 + 1.0 > ema + emb + 2.0 * mm
    sel = np.flatnonzero(ok)
    b, a, mm = b[sel], a[sel], mm[sel]
    if b.size == 0:
        return empty
    zone2 = take_rows(zones.case_zone2d, case[b])
    si, sl = nonzero2(take_rows(zones.case_excl2d, case[b]))
    cs = si.astype(np.int64)
    cz = at2(zone2, si, sl).astype(np.int64)
    cslot = sl.astype(np.int64)
    if zones.shared_zones.size:
        bi, zq, bigs = zones.seg_grid.query_segments(elat[a], elon[a], elat[b], elon[b])
        zq64 = zq.astype(np.int64)
        if bigs.size:
            sz = zones.shared_zones.astype(np.int64)
            bi = np.concatenate((bi, np.repeat(bigs, sz.size)))
            zq64 = np.concatenate((zq64, np.tile(sz, bigs.size)))
        ex = st.kind_excl[zq64]
        bi, zq64 = bi[ex], zq64[ex]
        attached = zones.att_all[zq64]
        if not attached.all() and zones.shared_keys.size:
            key = case[b[bi]].astype(np.int64) * max(len(zones.zone_ids), 1) + zq64
            attached |= in_sorted(key, zones.shared_keys)
        cs = np.concatenate((cs, bi[attached]))
        cz = np.concatenate((cz, zq64[attached]))
        cslot = np.concatenate((cslot, np.full(int(attached.sum()), -1, np.int64)))
    if cs.size == 0:
        return empty
    # Bounding-disc test in each zone's local frame: a point deeper than M lies within
    # bound_r - M of the reference point.
    cb, ca = b[cs], a[cs]
    xa = (elon[ca] - st.lon0[cz]) * st.kx[cz]
    ya = (elat[ca] - st.lat0[cz]) * st.ky[cz]
    vx = (elon[cb] - st.lon0[cz]) * st.kx[cz] - xa
    vy = (elat[cb] - st.lat0[cz]) * st.ky[cz] - ya
    l2 = vx * vx + vy * vy
    tt = np.clip(-(xa * vx + ya * vy) / np.where(l2 > 0, l2, 1.0), 0.0, 1.0)
    cx_ = xa + tt * vx
    cy_ = ya + tt * vy
    dcen = np.sqrt(cx_ * cx_ + cy_ * cy_)
    k = np.flatnonzero(dcen < st.bound_r[cz] - mm[cs])
    cs, cb, ca, cz, cslot, dcen = cs[k], cb[k], ca[k], cz[k], cslot[k], dcen[k]
    qx, qy = cx_[k], cy_[k]  # point of the segment nearest the zone's reference point
    if cs.size == 0:
        return empty
    # A shared zone may be found through several cells: keep one (segment, zone).
    u, first = np.unique(cs * max(len(zones.zone_ids), 1) + cz, return_index=True)
    if u.size < cs.size:
        first = np.sort(first)
        cs, cb, ca, cz, cslot, dcen = (
            cs[first],
            cb[first],
            ca[first],
            cz[first],
            cslot[first],
            dcen[first],
        )
        qx, qy = qx[first], qy[first]
    g = zones.group_of(zones.zone_skey[cz], zones.case_tz[dc_case[edc[cb]]])
    act_b, cnt_b = actv.lookup(g, ets[cb])
    act_a, cnt_a = actv.lookup(g, ets[ca])
    k = np.flatnonzero(act_a & act_b & (cnt_a == cnt_b))
    dd, _ = st.signed_distances(
        elat, elon, np.concatenate((ca[k], cb[k])), np.concatenate((cz[k], cz[k]))
    )
    both_out = (dd[: k.size] >= em[ca[k]]) & (dd[k.size :] >= em[cb[k]])
    k = k[np.flatnonzero(both_out)]
    cs, cb, ca, cz, g, cnt_b = cs[k], cb[k], ca[k], cz[k], g[k], cnt_b[k]
    cslot, dcen, qx, qy = cslot[k], dcen[k], qx[k], qy[k]
    mk = mm[cs]
    # Circles: radius minus the centre's distance to the segment; polygons: capsule gaps.
    depth = np.where(st.is_circle[cz], st.radius_m[cz] - dcen, -np.inf)
    pi_ = np.flatnonzero(~st.is_circle[cz])
    if pi_.size:
        # Quick positive: the segment's point nearest the zone's centre is deep enough
        # (its depth is then reported); otherwise the exact capsule test decides.
        zp = cz[pi_].astype(np.int32)
        dq = -st.polygon_signed(zp, qx[pi_], qy[pi_])
        depth[pi_] = dq
        rest = pi_[np.flatnonzero(dq <= mk[pi_])]
        if rest.size:
            depth[rest] = st.segments_deeper(
                cz[rest].astype(np.int32),
                elat[ca[rest]],
                elon[ca[rest]],
                elat[cb[rest]],
                elon[cb[rest]],
                mk[rest],
            )
    ok = depth > mk
    return {
        "b": cb[ok],
        "a": ca[ok],
        "z": cz[ok],
        "depth": depth[ok],
        "cnt": cnt_b[ok],
        "g": g[ok],
        "slot": cslot[ok],
    }
