"""Events without fixes: a zone that went inactive (`close_inactive`), a curfew start
with the last fix outside (`open_at_window_start`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from geofence.engine.activity import Activity
from geofence.engine.config import DEFAULT_CONFIG, GeofenceConfig
from geofence.engine.evidence import EP_NAMES, out_cols
from geofence.engine.kernels import objs
from geofence.episodes import AT_LEFT, K_CLOSE, K_OPEN, O0, EngineState, Fix, Transitions
from geofence.registry import CaseZones


def close_inactive(
    state: EngineState, zones: CaseZones, now_ms: int
) -> tuple[EngineState, Transitions]:
    """Close stored episodes whose zone became inactive after their last evaluation.

    For a periodic job: a curfew that ends without any further fix still closes its
    episode at the window's end. Pending (not yet open) states are dropped likewise.
    """
    R = state.n_episodes
    if R == 0:
        return state, Transitions.empty()
    ci = np.fromiter((zones.case_index.get(c, -1) for c in state.case.tolist()), np.int64, R)
    zi = np.fromiter((zones.zone_index.get(z, -1) for z in state.zone.tolist()), np.int64, R)
    ok = np.flatnonzero((ci >= 0) & (zi >= 0))
    g = np.zeros(R, dtype=np.int64)
    g[ok] = zones.group_of(zones.zone_skey[zi[ok]], zones.case_tz[ci[ok]])
    sel = np.flatnonzero(g != 0)
    if sel.size == 0:
        return state, Transitions.empty()
    lo = int(state.last_ts[sel].min())
    hi = max(int(now_ms), lo)
    actv = Activity(zones, lo, hi)
    a_last, c_last = actv.lookup(g[sel], state.last_ts[sel])
    _, c_now = actv.lookup(g[sel], np.full(sel.size, hi, dtype=np.int64))
    flip = a_last & (c_now > c_last)
    rows = sel[flip]
    t_end = actv.flip_time(g[rows], c_last[flip])
    is_open = state.status[rows] >= O0
    orow = rows[is_open]
    tend = t_end[is_open]
    k = orow.size
    c = state
    trans = Transitions(
        {
            "kind": np.full(k, K_CLOSE, np.int8),
            "atype": c.atype[orow],
            "inferred": np.zeros(k, bool),
            "dev": c.dev[orow],
            "case": c.case[orow],
            "zone": c.zone[orow],
            "at": tend,
            "started": c.started[orow],
            "ended": tend,
            "max_depth": c.max_depth[orow],
            "f_ts": c.f_ts[orow],
            "f_lat": c.f_lat[orow],
            "f_lon": c.f_lon[orow],
            "f_acc": c.f_acc[orow],
            "l_ts": c.l_ts[orow],
            "l_lat": c.l_lat[orow],
            "l_lon": c.l_lon[orow],
            "l_acc": c.l_acc[orow],
        }
    ).sorted()
    keep = np.ones(R, dtype=bool)
    keep[rows] = False
    cols = {k2: state.col(k2)[keep] for k2 in EP_NAMES}
    for k2 in ("d_id", "d_case", "d_ts", "d_lat", "d_lon", "d_acc"):
        cols[k2] = state.col(k2)
    cols.update(out_cols(state))
    return EngineState(cols), trans


def open_at_window_start(
    state: EngineState,
    zones: CaseZones,
    *,
    device_id: str,
    case_id: str,
    zone_id: str,
    window_start_ms: int,
    last_fix: Fix,
    config: GeofenceConfig = DEFAULT_CONFIG,
) -> tuple[EngineState, Transitions]:
    """Curfew start: open an ``inclusion_zone_left`` episode if the last fix is definitely outside.

    The caller checks freshness (no fix in the last 15 minutes -> location_lost or
    communication_lost instead). No-op if the episode is already open or the fix is
    not definitely outside. Later fixes update/close the episode as usual.
    """
    zi = zones.zone_index[zone_id]
    cz = zones.store.zones[zi]
    if cz.kind != "inclusion":
        raise ValueError("open_at_window_start applies to inclusion zones")
    for e in state.episodes():
        if (e.device_id, e.case_id, e.zone_id, e.alert_type) == (
            device_id,
            case_id,
            zone_id,
            "inclusion_zone_left",
        ) and e.status != "pending":
            return state, Transitions.empty()
    d = float(cz.signed_distance(last_fix.lat, last_fix.lon)[0])
    mg = max(last_fix.acc, config.min_margin_m)
    if not d >= mg or last_fix.acc > config.max_open_acc_m:
        return state, Transitions.empty()
    drop = np.array(
        [
            (dv, c, z, int(a)) == (device_id, case_id, zone_id, AT_LEFT)
            for dv, c, z, a in zip(
                state.dev.tolist(),
                state.case.tolist(),
                state.zone.tolist(),
                state.atype.tolist(),
                strict=True,
            )
        ],
        dtype=bool,
    )
    keep = ~drop
    cols = {k: state.col(k)[keep] for k in EP_NAMES}
    add: dict[str, Any] = {
        "dev": device_id,
        "case": case_id,
        "zone": zone_id,
        "atype": AT_LEFT,
        "status": O0,
        "f_ts": last_fix.ts,
        "f_lat": last_fix.lat,
        "f_lon": last_fix.lon,
        "f_acc": last_fix.acc,
        "l_ts": last_fix.ts,
        "l_lat": last_fix.lat,
        "l_lon": last_fix.lon,
        "l_acc": last_fix.acc,
        "max_depth": d,
        "started": window_start_ms,
        "right_ts": -1,
        "last_ts": window_start_ms,
        "pend_n": 0,
        "b_ts": -1,
        "b_lat": 0.0,
        "b_lon": 0.0,
        "b_acc": 0.0,
    }
    for k in EP_NAMES:
        v = np.empty(1, dtype=cols[k].dtype)
        v[0] = add[k]
        cols[k] = np.concatenate((cols[k], v))
    for k2 in ("d_id", "d_case", "d_ts", "d_lat", "d_lon", "d_acc"):
        cols[k2] = state.col(k2)
    cols.update(out_cols(state))
    one = {
        "kind": np.array([K_OPEN], np.int8),
        "atype": np.array([AT_LEFT], np.int8),
        "inferred": np.zeros(1, bool),
        "dev": objs([device_id]),
        "case": objs([case_id]),
        "zone": objs([zone_id]),
        "at": np.array([window_start_ms], np.int64),
        "started": np.array([window_start_ms], np.int64),
        "ended": np.array([-1], np.int64),
        "max_depth": np.array([d]),
        "f_ts": np.array([last_fix.ts], np.int64),
        "f_lat": np.array([last_fix.lat]),
        "f_lon": np.array([last_fix.lon]),
        "f_acc": np.array([last_fix.acc]),
        "l_ts": np.array([last_fix.ts], np.int64),
        "l_lat": np.array([last_fix.lat]),
        "l_lon": np.array([last_fix.lon]),
        "l_acc": np.array([last_fix.acc]),
    }
    return EngineState(cols), Transitions(one)
