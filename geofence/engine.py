"""Batch evaluation: saved states + a batch of fixes -> new states + transitions.

`advance` is pure and deterministic: it never mutates its inputs. Pipeline:

1. order the batch by (device, ts) (stable; it arrives in time order across devices,
   and device order makes the table and edge reads sequential); group per (device, case);
2. candidate (fix, zone) pairs: the case's direct zones through dense (case, slot)
   tables and an expanded-bbox prefilter; shared zones through the uniform grid;
   plus every fix of a (device, zone) whose episode state is not idle;
3. schedules: flip instants per (schedule, tz) group, one ``searchsorted``;
4. signed distances (exact only within the rule cutoff, see `ZoneStore`);
5. classification into symbols (`geofence.episodes`), sparse-segment crossing
   inference, and the vectorised scan of the episode state machine over the few
   (device, zone, type) keys that can change (a wrong-side fix or a stored state);
6. evidence (first/last fix, max depth, start/end) and new states, columnar.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from geofence.confirm import confirm as confirm_runs
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
    SYM_U,
    SYM_W,
    SYM_X,
    EngineState,
    Fix,
    Transitions,
    scan_states,
)
from geofence.geometry import M_PER_DEG, ZoneStore, haversine_m
from geofence.outliers import DEFAULT_OUTLIER_CONFIG, Carry, OutlierConfig, detect
from geofence.registry import CaseZones, _expand
from geofence.schedule import MS_DAY, to_epoch_ms

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]
BoolA = npt.NDArray[np.bool_]
ObjA = npt.NDArray[np.object_]


@dataclass(frozen=True)
class RuleConfig:
    """Rule thresholds (defaults from the monitoring rules).

    Opening needs ``confirm_points`` consecutive definite wrong-side fixes spanning
    ``confirm_ms`` (per case through `CaseZones`' ``confirm``), closing
    ``close_points`` right-side fixes spanning ``close_ms``. Inferred crossings need a
    plausible speed between their two fixes (``segment_max_speed_mps``, after both
    margins). ``outliers``: the kinematic outlier rule (`geofence.outliers`).
    ``threads``: workers for the distance kernel (<= 1: none).
    """

    min_margin_m: float = 10.0
    deep_factor: float = 3.0
    deep_min_m: float = 100.0
    max_open_acc_m: float = 500.0
    segment_max_gap_ms: int = 600_000
    segment_max_speed_mps: float = 45.0
    segment_depth_per_m: float = 0.1
    confirm_points: int = 2
    confirm_ms: int = 30_000
    close_points: int = 2
    close_ms: int = 60_000
    outliers: OutlierConfig = DEFAULT_OUTLIER_CONFIG
    threads: int = 1


DEFAULT_CONFIG = RuleConfig()
_EXECUTORS: dict[int, ThreadPoolExecutor] = {}


def _executor(threads: int) -> ThreadPoolExecutor | None:
    threads = min(threads, os.cpu_count() or 1)
    if threads <= 1:
        return None
    ex = _EXECUTORS.get(threads)
    if ex is None:
        ex = _EXECUTORS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="geofence")
    return ex


# --------------------------------------------------------------------------- batch


@dataclass(frozen=True, eq=False)
class FixBatch:
    """A batch of fixes as numpy columns.

    ``case``: registry case index per fix (`CaseZones.case_index`); ``device``:
    index into ``device_ids`` (the device's stable id, e.g. its UUID string);
    ``ts``: epoch ms int64; ``lat``/``lon`` degrees; ``acc`` metres.
    """

    case: I32
    device: I32
    device_ids: ObjA
    ts: I64
    lat: F64
    lon: F64
    acc: F64

    def __post_init__(self) -> None:
        n = np.asarray(self.ts).shape[0]
        for name, dt in (
            ("case", np.int32),
            ("device", np.int32),
            ("ts", np.int64),
            ("lat", np.float64),
            ("lon", np.float64),
            ("acc", np.float64),
        ):
            a = np.ascontiguousarray(np.asarray(getattr(self, name), dtype=dt))
            if a.shape != (n,):
                raise ValueError(f"FixBatch.{name}: expected shape ({n},), got {a.shape}")
            object.__setattr__(self, name, a)
        ids = np.empty(len(self.device_ids), dtype=object)
        ids[:] = list(self.device_ids)
        object.__setattr__(self, "device_ids", ids)
        if n:
            if not (np.isfinite(self.lat).all() and np.isfinite(self.lon).all()):
                raise ValueError("FixBatch: non-finite coordinates")
            if not (np.isfinite(self.acc).all() and (self.acc >= 0).all()):
                raise ValueError("FixBatch: acc must be finite and >= 0")
            if self.device.min() < 0 or self.device.max() >= ids.size:
                raise ValueError("FixBatch: device index out of range")

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def from_columns(
        cls,
        zones: CaseZones,
        case_ids: Sequence[str],
        device_ids: Sequence[str],
        ts: Any,
        lat: Any,
        lon: Any,
        acc: Any,
    ) -> FixBatch:
        """Build from per-fix ids; ``ts`` as epoch ms, datetime64, datetimes or RFC 3339."""
        uniq = sorted(set(device_ids))
        dmap = {d: i for i, d in enumerate(uniq)}
        dev = np.fromiter((dmap[d] for d in device_ids), np.int32, len(device_ids))
        case = np.fromiter((zones.case_index[c] for c in case_ids), np.int32, len(case_ids))
        t = np.asarray(ts)
        if np.issubdtype(t.dtype, np.datetime64):
            t = t.astype("datetime64[ms]").astype(np.int64)
        elif t.dtype == object or t.dtype.kind in "US":
            t = np.fromiter((to_epoch_ms(v, "ts") for v in ts), np.int64, len(ts))
        return cls(case, dev, np.array(uniq, dtype=object), t, lat, lon, acc)

    @classmethod
    def from_records(cls, zones: CaseZones, records: Iterable[Mapping[str, Any]]) -> FixBatch:
        """From dicts with ``case_id, device_id, ts, lat, lon, acc``."""
        recs = list(records)
        return cls.from_columns(
            zones,
            [r["case_id"] for r in recs],
            [r["device_id"] for r in recs],
            [r["ts"] for r in recs] if recs else np.zeros(0, np.int64),
            [float(r["lat"]) for r in recs],
            [float(r["lon"]) for r in recs],
            [float(r["acc"]) for r in recs],
        )

    def select(self, idx: Any) -> FixBatch:
        """Sub-batch (boolean mask or indices); keeps the device id table."""
        return FixBatch(
            self.case[idx],
            self.device[idx],
            self.device_ids,
            self.ts[idx],
            self.lat[idx],
            self.lon[idx],
            self.acc[idx],
        )


# --------------------------------------------------------------------------- gathers
# numpy's fancy indexing of a 2-D array by row indices, or by (row, column) index
# pairs, runs a generic per-element loop that is 5-17x slower than ``np.take`` on
# the same data; the engine gathers from (case x slot) tables on every batch.


def _rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[idx]`` for a 2-D or 3-D table ``a`` and 1-D row indices."""
    return np.take(a, idx, axis=0)


def _at2(a: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``a[i, j]`` for a C-contiguous 2-D table and equally shaped index arrays."""
    return np.take(a.reshape(-1), i.astype(np.int64, copy=False) * a.shape[1] + j)


def _nonzero2(mask: BoolA) -> tuple[I64, I64]:
    """``np.nonzero`` of a C-contiguous 2-D mask (~4x faster: flat indices, then divmod)."""
    k = np.flatnonzero(mask)
    w = mask.shape[1]
    if k.size == 0:
        return k, k.copy()
    if w & (w - 1) == 0:  # power of two: shift and mask
        sh = w.bit_length() - 1
        return k >> sh, k & (w - 1)
    r, c = np.divmod(k, w)
    return r, c


def _in_sorted(x: np.ndarray, keys: np.ndarray) -> BoolA:
    """``np.isin(x, keys)`` for sorted ``keys``: one binary search per element, no sort."""
    if keys.size == 0:
        return np.zeros(x.shape, dtype=bool)
    pos = np.searchsorted(keys, x)
    np.minimum(pos, keys.size - 1, out=pos)
    hit: BoolA = np.take(keys, pos) == x
    return hit


def _lookup_ids(index: dict[Any, int], ids: np.ndarray) -> I64:
    """Positions of ``ids`` (an object array) in ``index``; -1 where absent."""
    get = index.get
    return np.fromiter(map(get, ids.tolist(), itertools.repeat(-1, ids.size)), np.int64, ids.size)


# --------------------------------------------------------------------------- sorting


def _argsort_int(keys: np.ndarray, bound: int) -> I64:
    """Stable argsort of integer keys in ``[0, bound)`` (LSD radix on 16-bit digits)."""
    if bound <= 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    if bound <= 1 << 32:
        k = keys.astype(np.int64)
        o = np.argsort((k & 0xFFFF).astype(np.uint16), kind="stable")
        return o[np.argsort((k[o] >> 16).astype(np.uint16), kind="stable")]
    return np.argsort(keys, kind="stable")


def _lexsort2(primary: np.ndarray, p_bound: int, secondary: np.ndarray, s_bound: int) -> I64:
    """Stable order by (primary, secondary) for bounded non-negative integer keys.

    One stable argsort of a combined int64 key when it fits: the rows come in a few
    long sorted runs, which numpy's timsort merges in a fraction of two radix passes.
    """
    if p_bound * s_bound < 1 << 62:
        key = primary.astype(np.int64) * s_bound + secondary
        return np.argsort(key, kind="stable")
    o = _argsort_int(secondary, s_bound)
    return o[_argsort_int(primary[o], p_bound)]


def _order_by(primary: I64, secondary: I64, s_bound: int) -> I64:
    """Order by (primary, secondary) for unique pairs, ``0 <= secondary < s_bound``.

    One argsort of a combined int64 key when it fits (``np.lexsort`` is several times
    slower), else ``np.lexsort``.
    """
    if primary.size == 0:
        return np.zeros(0, np.int64)
    lo = int(primary.min())
    if (int(primary.max()) - lo + 1) * s_bound < 1 << 62:
        return np.argsort((primary - lo) * s_bound + secondary)
    return np.lexsort((secondary, primary))


# --------------------------------------------------------------------------- activity


class _Activity:
    """Schedule status lookups for one batch: all groups share a day-aligned base."""

    def __init__(self, zones: CaseZones, lo: int, hi: int) -> None:
        self.zones = zones
        self.lo = lo
        self.hi = hi
        self.base = (lo // MS_DAY - 1) * MS_DAY
        self.span = (hi // MS_DAY + 2) * MS_DAY - self.base + 1
        self.tabs: dict[int, tuple[bool, I64]] = {}
        self.glist = np.zeros(0, dtype=np.int64)
        self.goff = np.zeros(1, dtype=np.int64)
        self.ga0 = np.zeros(0, dtype=bool)
        self.flat = np.zeros(0, dtype=np.int64)

    def _ensure(self, gs: I64) -> None:
        ng = self.zones.n_groups + 1
        small = ng <= 1 << 20
        present = np.flatnonzero(np.bincount(gs, minlength=ng)) if small else np.unique(gs)
        missing = [int(g) for g in present if int(g) not in self.tabs]
        if not missing:
            return
        for g in missing:
            base, a0, ch = self.zones.changes(g, self.lo, self.hi)
            assert base == self.base
            self.tabs[g] = (a0, ch)
        self.glist = np.array(sorted(self.tabs), dtype=np.int64)
        parts = [g * self.span + (self.tabs[int(g)][1] - self.base) for g in self.glist]
        sizes = np.array([p.size for p in parts], dtype=np.int64)
        self.goff = np.zeros(sizes.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.goff[1:])
        self.flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        self.ga0 = np.array([self.tabs[int(g)][0] for g in self.glist], dtype=bool)

    def lookup(self, g: I64, t: I64) -> tuple[BoolA, I64]:
        """(active, number of flips since the base) per (group, instant); group 0 = always."""
        act = np.ones(g.shape, dtype=bool)
        cnt = np.zeros(g.shape, dtype=np.int64)
        nzg = g != 0
        if not nzg.any():
            return act, cnt
        sel: Any = slice(None) if nzg.all() else np.flatnonzero(nzg)
        gs = g[sel]
        self._ensure(gs)
        if self.glist.size == 1:  # one schedule group: plain searchsorted
            a0, ch = self.tabs[int(self.glist[0])]
            c = np.searchsorted(ch, t[sel], side="right")
            cnt[sel] = c
            act[sel] = a0 ^ ((c & 1) == 1)
            return act, cnt
        gp = np.searchsorted(self.glist, gs)
        idx = np.searchsorted(self.flat, gs * self.span + (t[sel] - self.base), side="right")
        c = idx - self.goff[gp]
        cnt[sel] = c
        act[sel] = self.ga0[gp] ^ ((c & 1) == 1)
        return act, cnt

    def flip_time(self, g: I64, k: I64) -> I64:
        """Instant of flip number ``k`` (0-based) of each group."""
        gp = np.searchsorted(self.glist, g)
        v = self.flat[np.minimum(self.goff[gp] + k, max(self.flat.size - 1, 0))]
        return v - g * self.span + self.base


# --------------------------------------------------------------------------- advance


def _obj(values: ObjA, idx: I64) -> ObjA:
    out: ObjA = values[idx]
    return out


def advance(
    state: EngineState,
    batch: FixBatch,
    zones: CaseZones,
    config: RuleConfig = DEFAULT_CONFIG,
) -> tuple[EngineState, Transitions]:
    """Evaluate a batch of fixes from ``state``; returns the new state and transitions.

    Devices not in the batch keep their state unchanged. To re-evaluate after a
    late fix, call again with the state saved before the late fix's time and the
    device's fixes from that time on.
    """
    new, trans, _ = advance_ex(state, batch, zones, config)
    return new, trans


#: Outlier ranges decided by a batch: (device_id, from_ms, to_ms), from <= ts < to.
OutlierRanges = list[tuple[str, int, int]]


def advance_ex(
    state: EngineState,
    batch: FixBatch,
    zones: CaseZones,
    config: RuleConfig = DEFAULT_CONFIG,
) -> tuple[EngineState, Transitions, OutlierRanges]:
    """`advance`, also returning the outlier ranges the batch decided.

    Fixes the kinematic rule holds suspect (`geofence.outliers`) are stored by the
    caller but never evaluated: they neither open, close nor infer an episode, and the
    device's last fix (the start of the next segment) stays the last accepted one.
    """
    n = len(batch)
    if n == 0:
        return state, Transitions.empty(), []
    ts, dev = batch.ts, batch.device
    o = np.lexsort((ts, dev))
    d_s = dev[o]
    starts = np.flatnonzero(np.concatenate(([True], d_s[1:] != d_s[:-1]))).astype(np.int64)
    ids = batch.device_ids[d_s[starts]]
    carry = _carry_in(state, ids)
    res = detect(starts, ts[o], batch.lat[o], batch.lon[o], batch.acc[o], carry,
                 config.outliers)
    # rows (batch order) whose previous fix was a lone spike: no segment from it
    lone = np.zeros(n, dtype=bool)
    lone[o[res.after_lone]] = True
    if res.suspect.any():
        keep = np.sort(o[~res.suspect])
        inner, lone = batch.select(keep), lone[keep]
    else:
        inner = batch
    new, trans = _advance(state, inner, zones, config, lone if lone.any() else None)
    new = _with_carry(new, state, ids, res.carry)
    ranges = [(str(ids[g]), a, b) for g, a, b in res.ranges]
    return new, trans, ranges


def _carry_in(state: EngineState, ids: ObjA) -> Carry:
    c = Carry.empty(ids.size)
    if state.o_id.size == 0:
        return c
    idx = state.out_index()
    rows = np.fromiter((idx.get(d, -1) for d in ids.tolist()), np.int64, ids.size)
    hit = np.flatnonzero(rows >= 0)
    for k in OUT_FIELDS:
        getattr(c, k)[hit] = state.col(f"o_{k}")[rows[hit]]
    return c


def _with_carry(new: EngineState, old: EngineState, ids: ObjA, carry: Carry) -> EngineState:
    """``new`` with the outlier carry of ``ids`` replaced (others kept from ``old``)."""
    cols = {k: new.col(k) for k in new._cols if not k.startswith("o_")}
    keep = ~np.isin(old.o_id, ids) if old.o_id.size else np.zeros(0, bool)
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
    config: RuleConfig = DEFAULT_CONFIG,
    no_segment: BoolA | None = None,
) -> tuple[EngineState, Transitions]:
    cfg = config
    n = len(batch)
    if n == 0:
        return state, Transitions.empty()
    st = zones.store
    nz = max(len(zones.zone_ids), 1)
    nc = max(len(zones.case_ids), 1)
    ndev = len(batch.device_ids)
    near_m = zones.near_m
    if batch.case.min() < 0 or batch.case.max() >= len(zones.case_ids):
        raise ValueError("FixBatch.case: index outside this CaseZones registry")

    # ---- 0. (device, ts) order -----------------------------------------------
    # A batch arrives in time order across devices. Evaluated in (device, ts) order,
    # a device's fixes are contiguous and in time order, so the per-case tables and
    # the zones' edge rows are read in runs instead of at random (cache misses were
    # a good part of the time); within a key, fix order is still time order.
    ts, dev = batch.ts, batch.device
    o_ts = np.argsort(ts, kind="stable") if np.any(ts[1:] < ts[:-1]) else None
    o = _argsort_int(dev if o_ts is None else dev[o_ts], max(ndev, 1))
    if o_ts is not None:
        o = o_ts[o]
    if np.any(o[1:] < o[:-1]):
        ts, case, dev = ts[o], batch.case[o], dev[o]
        lat, lon, acc = batch.lat[o], batch.lon[o], batch.acc[o]
        if no_segment is not None:
            no_segment = no_segment[o]
    else:
        case, lat, lon, acc = batch.case, batch.lat, batch.lon, batch.acc
    # int64 once: an int32 index array costs numpy a cast on every gather it drives.
    case = case.astype(np.int64)
    m = np.clip(acc, cfg.min_margin_m, np.inf)  # np.maximum(a, scalar) is ~3x slower

    # ---- 1. per (device, case) sequences ------------------------------------
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
        odc = _argsort_int(dc, max(ndc, 1))
        dc_ptr = np.searchsorted(dc[odc], np.arange(ndc + 1))
    # Previous fix of the same device (segments); only usable within the same case.
    prev = od - 1
    prev[1:][dev[1:] != dev[:-1]] = -1
    if multi:
        prev[(prev >= 0) & (case[np.maximum(prev, 0)] != case)] = -1

    # ---- 2. device table: previous fix (for segments) -----------------------
    dmap = dict(zip(batch.device_ids.tolist(), range(ndev), strict=True))
    drow = np.full(ndev, -1, dtype=np.int64)  # batch device -> row of the device table
    if state.d_id.size:
        code = _lookup_ids(dmap, state.d_id)
        hit_rows = np.flatnonzero(code >= 0)
        drow[code[hit_rows]] = hit_rows
    okv = (drow >= 0) & has_fix
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
        v_dc = dc[ffix]
        prev[ffix] = n + np.arange(nv)
    if no_segment is not None:
        prev[no_segment] = -1
    ets = np.concatenate((ts, v_ts))
    elat = np.concatenate((lat, v_lat))
    elon = np.concatenate((lon, v_lon))
    eacc = np.concatenate((acc, v_acc))
    em = np.clip(eacc, cfg.min_margin_m, np.inf)
    edc = np.concatenate((dc, v_dc))

    # ---- 3. stored states that take part --------------------------------------
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
        rdev = _lookup_ids(dmap, state.dev)
        valid = (rdev >= 0) & (ci >= 0) & (zi >= 0)
        rdc = np.full(R, -1, dtype=np.int64)
        if not multi:
            rdc[valid] = rdev[valid]
            valid &= dev_case[np.maximum(rdev, 0)] == ci
        else:
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
    s_key_sorted = s_key[s_order]
    s_slot = zones.direct_slot(s_case, s_zone) if s_rows.size else np.zeros(0, np.int64)
    maxd = zones.case_zone2d.shape[1]

    lo = int(ts.min())
    if s_rows.size:
        lo = min(lo, int(state.last_ts[s_rows].min()))
    if nv:
        lo = min(lo, int(v_ts.min()))
    actv = _Activity(zones, lo, int(ts.max()))

    # ---- 4. direct pairs (dense case x slot tables) -------------------------
    zone2 = _rows(zones.case_zone2d, case)
    # Fixes with acc > max_open_acc_m cannot move an idle key: only stated pairs.
    weak_fix = acc > cfg.max_open_acc_m
    big = (m > near_m) & ~weak_fix
    stated_tab: BoolA | None = None
    dc_stated = np.zeros(ndc, dtype=bool)
    if s_rows.size and (s_slot >= 0).any():
        stated_tab = np.zeros((ndc, maxd), dtype=bool)
        dsel = s_slot >= 0
        stated_tab.reshape(-1)[s_dc[dsel] * maxd + s_slot[dsel]] = True
        dc_stated[s_dc[dsel]] = True
    # Inclusion zones: every fix (when active).
    isl = _rows(zones.case_islot, case)
    fi_, ki_ = _nonzero2(isl >= 0)
    ps_i = _at2(isl, fi_, ki_).astype(np.int64)
    pf_i = fi_.astype(np.int64)
    # Exclusion zones: only fixes inside their case's union box (or imprecise, or stated).
    eb = _rows(zones.case_ebox, case)
    la32 = lat.astype(np.float32)
    lo32 = lon.astype(np.float32)
    near_any = (la32 >= eb[:, 0]) & (la32 <= eb[:, 1]) & (lo32 >= eb[:, 2]) & (lo32 <= eb[:, 3])
    near_any |= big
    near_any &= ~weak_fix
    near_any |= dc_stated[dc]
    rows = np.flatnonzero(near_any)
    # Flat (row x slot) columns: broadcasting a (rows, 1) column against (rows, maxd)
    # runs an inner loop of maxd elements per row.
    box = _rows(zones.case_box2d, case[rows]).reshape(-1, 4)
    la = np.repeat(la32[rows], maxd)
    lo_ = np.repeat(lo32[rows], maxd)
    keep2 = la >= box[:, 0]
    keep2 &= la <= box[:, 1]
    keep2 &= lo_ >= box[:, 2]
    keep2 &= lo_ <= box[:, 3]
    keep2 = keep2.reshape(-1, maxd)
    bigr = big[rows]
    if bigr.any():
        keep2[bigr] |= _rows(zones.case_excl2d, case[rows[bigr]])
    weakr = weak_fix[rows]
    if weakr.any():
        keep2[weakr] = False
    stated2: BoolA | None = None
    if stated_tab is not None:
        stated2 = _rows(stated_tab, dc[rows])
        keep2 |= stated2 & _rows(zones.case_excl2d, case[rows])
    ri, sl = _nonzero2(keep2)
    pf = np.concatenate((pf_i, rows[ri].astype(np.int64)))
    pslot = np.concatenate((ps_i, sl.astype(np.int64)))
    pz = _at2(zone2, pf, pslot).astype(np.int64)
    pg = _at2(zones.case_group2d, case[pf], pslot).astype(np.int64)
    pact, pcnt = actv.lookup(pg, ts[pf])
    keep_p = pact & ~weak_fix[pf]
    keep_p[pf_i.size :] = pact[pf_i.size :]  # exclusion pairs: weak ones only when stated
    if stated_tab is not None:
        keep_p |= _at2(stated_tab, dc[pf], pslot)
    if not keep_p.all():
        k = np.flatnonzero(keep_p)
        pf, pslot, pz, pg, pact, pcnt = pf[k], pslot[k], pz[k], pg[k], pact[k], pcnt[k]
    pf = pf.astype(np.int64)
    pslot = pslot.astype(np.int64)

    # ---- 5. shared pairs (grid) ----------------------------------------------
    if zones.shared_zones.size:
        small = np.flatnonzero(~big & ~weak_fix)
        fi, zq = zones.grid.query_points(lat[small], lon[small])
        fi = small[fi]
        zq64 = zq.astype(np.int64)
        inb = (
            (lat[fi] >= zones.exp_lat_lo[zq64])
            & (lat[fi] <= zones.exp_lat_hi[zq64])
            & (lon[fi] >= zones.exp_lon_lo[zq64])
            & (lon[fi] <= zones.exp_lon_hi[zq64])
        )
        k = np.flatnonzero(inb)
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
            attached[nota] = _in_sorted(key[nota], zones.shared_keys)
        k = np.flatnonzero(attached)
        sf, szn = sf[k], szn[k]
        shared_state = s_slot < 0
        if shared_state.any():
            # Every fix of a stated (device, shared zone) not already found above.
            uk = np.unique(s_dc[shared_state] * nz + s_zone[shared_state])
            kd, kz = uk // nz, uk % nz
            item, fs = _expand(dc_ptr[kd], dc_ptr[kd + 1], odc)
            fs = fs.astype(np.int64)
            fz = kz[item]
            had = (
                (lat[fs] >= zones.exp_lat_lo[fz])
                & (lat[fs] <= zones.exp_lat_hi[fz])
                & (lon[fs] >= zones.exp_lon_lo[fz])
                & (lon[fs] <= zones.exp_lon_hi[fz])
                & ~weak_fix[fs]
            ) | big[fs]
            k = np.flatnonzero(~had)
            sf = np.concatenate((sf, fs[k]))
            szn = np.concatenate((szn, fz[k]))
        sg = zones.group_of(zones.zone_skey[szn], zones.case_tz[case[sf]])
        sact, scnt = actv.lookup(sg, ts[sf])
        if shared_state.any():
            sk = dc[sf] * nz + szn
            stated_keys = np.unique(s_dc[shared_state] * nz + s_zone[shared_state])
            keep_s = sact | _in_sorted(sk, stated_keys)
        else:
            keep_s = sact
        k = np.flatnonzero(keep_s)
        sf, szn, sact, scnt, sg = sf[k], szn[k], sact[k], scnt[k], sg[k]
        pf = np.concatenate((pf, sf))
        pz = np.concatenate((pz, szn))
        pact = np.concatenate((pact, sact))
        pcnt = np.concatenate((pcnt, scnt))
        pg = np.concatenate((pg, sg))
        pslot = np.concatenate((pslot, np.full(sf.size, -1, dtype=np.int64)))

    # ---- 6./7. distances and symbols ------------------------------------------------
    ex_ = _executor(cfg.threads)
    obs = _observe(st, cfg, lat, lon, acc, m, pf, pz, pact, pcnt, pg, pslot, ex_)

    # Keys that leave idle during the batch without a stored state need every later
    # fix of their device, including those the prefilters dropped: far fixes (R) and
    # weak fixes (X/R). Add them now.
    kept2 = np.zeros(zone2.shape, dtype=bool)
    dpair = pslot >= 0
    kept2.reshape(-1)[pf[dpair] * maxd + pslot[dpair]] = True  # flat: 2-D fancy is slow
    extra = _late_pairs(
        zones,
        obs,
        kept2,
        stated_tab,
        s_key,
        s_slot,
        dc,
        case,
        odc,
        dc_ptr,
        ndc,
        maxd,
        n,
        nz,
        dc_case,
        weak_fix,
        big,
        lat,
        lon,
    )
    if extra is not None:
        ef, ez, eslot = extra
        eg = np.where(
            eslot >= 0,
            _at2(zones.case_group2d, case[ef], eslot.clip(0)),
            zones.group_of(zones.zone_skey[ez], zones.case_tz[case[ef]]),
        )
        eact, ecnt = actv.lookup(eg, ts[ef])
        if not eact.all():  # inactive fixes are no-ops for keys without a stored state
            k = np.flatnonzero(eact)
            ef, ez, eslot, eg, eact, ecnt = ef[k], ez[k], eslot[k], eg[k], eact[k], ecnt[k]
        obs2 = _observe(st, cfg, lat, lon, acc, m, ef, ez, eact, ecnt, eg, eslot, ex_)
        obs = {k: np.concatenate((obs[k], obs2[k])) for k in obs}
    o_f, o_z, o_t, o_sym, o_depth = obs["f"], obs["z"], obs["t"], obs["sym"], obs["depth"]
    o_act, o_cnt, o_g, o_slot = obs["act"], obs["cnt"], obs["g"], obs["slot"]

    # Keys that can change: a W/D symbol, or a stored state.
    o_dc = dc[o_f]
    trig = (o_sym == SYM_W) | (o_sym == SYM_D)
    dense_n = ndc * maxd * 2
    o_dense = (o_dc * maxd + np.maximum(o_slot, 0)) * 2 + o_t
    flag = np.zeros(dense_n, dtype=bool)
    dsel = trig & (o_slot >= 0)
    flag[o_dense[dsel]] = True
    if s_rows.size:
        sdir = s_slot >= 0
        flag[((s_dc[sdir] * maxd + s_slot[sdir]) * 2 + s_t[sdir])] = True
    interesting = flag[o_dense] & (o_slot >= 0)
    shared_obs = np.flatnonzero(o_slot < 0)
    if shared_obs.size:
        sk = (o_dc[shared_obs] * nz + o_z[shared_obs]) * 2 + o_t[shared_obs]
        trig_keys = sk[trig[shared_obs]]
        st_keys = s_key[s_slot < 0] if s_rows.size else np.zeros(0, np.int64)
        kset = np.unique(np.concatenate((trig_keys, st_keys)))
        interesting[shared_obs] = _in_sorted(sk, kset)
    rsel = np.flatnonzero(interesting)

    # ---- 8. segment crossings (inferred) -------------------------------------------
    n_rows = _segments(zones, cfg, actv, ets, elat, elon, eacc, em, edc, prev, case, dc_case)

    # ---- 9. rows, resets, scan -------------------------------------------------------
    r_fix = np.concatenate((o_f[rsel], n_rows["b"]))
    r_zone = np.concatenate((o_z[rsel], n_rows["z"]))
    r_t = np.concatenate((o_t[rsel], np.zeros(n_rows["b"].size, np.int64)))
    r_sym = np.concatenate((o_sym[rsel], np.full(n_rows["b"].size, SYM_U, np.int8)))
    r_depth = np.concatenate((o_depth[rsel], n_rows["depth"]))
    r_act = np.concatenate((o_act[rsel], np.ones(n_rows["b"].size, bool)))
    r_cnt = np.concatenate((o_cnt[rsel], n_rows["cnt"]))
    r_g = np.concatenate((o_g[rsel], n_rows["g"]))
    r_afix = np.concatenate((np.full(rsel.size, -1, np.int64), n_rows["a"]))
    r_tie = np.concatenate((np.full(rsel.size, 2, np.int64), np.ones(n_rows["b"].size, np.int64)))
    r_dc = edc[r_fix]
    r_key = (r_dc * nz + r_zone) * 2 + r_t
    r_ts = ets[r_fix]
    dev_arrays = (ndev, dev_ptr, od, ts, lat, lon, acc, drow, case)
    if r_key.size == 0:
        return _finish_empty(state, zones, batch, dev_arrays)
    # Order rows by (key, ts, tie): a key's fixes are in time order, so (key, fix, tie)
    # is equivalent.
    n_sh = max(int(zones.shared_zones.size), 1)
    r_slot = np.concatenate((o_slot[rsel], n_rows["slot"]))
    r_dense = (r_dc * maxd + r_slot) * 2 + r_t
    sh = np.flatnonzero(r_slot < 0)
    r_dense[sh] = ndc * maxd * 2 + (r_dc[sh] * n_sh + zones.shared_pos[r_zone[sh]]) * 2 + r_t[sh]
    order = _lexsort2(r_dense, ndc * (maxd + n_sh) * 2, r_fix * 2 + (r_tie == 2), 2 * n + 2)
    # Rows before a key's first wrong-side fix are no-ops when it has no stored state.
    k_s = r_key[order]
    sym_s = r_sym[order]
    trig_s = ((sym_s == SYM_W) | (sym_s == SYM_D)) & r_act[order]
    pos0 = np.arange(order.size)
    fst = np.empty(order.size, dtype=bool)
    fst[0] = True
    fst[1:] = k_s[1:] != k_s[:-1]
    starts0 = np.flatnonzero(fst)
    ftrig = np.minimum.reduceat(pos0 + (~trig_s) * order.size, starts0)
    if s_rows.size:
        p0 = np.minimum(np.searchsorted(s_key_sorted, k_s[starts0]), s_key_sorted.size - 1)
        ftrig[s_key_sorted[p0] == k_s[starts0]] = 0
    tie_s = r_tie[order]
    keep_r = (pos0 >= ftrig[np.cumsum(fst) - 1]) | (tie_s == 1)
    # Uncertain rows are identities (a window end between rows shows in the flip count
    # of the next row; a trailing one gets an end row below). (Right-side runs are no
    # longer dropped: a closing needs its fixes to span `close_ms`.)
    last_s = np.append(k_s[1:] != k_s[:-1], True)
    keep_r &= (sym_s != SYM_U) | (tie_s == 1) | last_s
    order = order[np.flatnonzero(keep_r)]
    if order.size == 0:
        return _finish_empty(state, zones, batch, dev_arrays)
    r_fix, r_zone, r_t, r_sym, r_depth = (
        r_fix[order],
        r_zone[order],
        r_t[order],
        r_sym[order],
        r_depth[order],
    )
    r_act, r_cnt, r_g, r_afix = r_act[order], r_cnt[order], r_g[order], r_afix[order]
    r_dc, r_key, r_ts, r_tie = r_dc[order], r_key[order], r_ts[order], r_tie[order]
    r_sym[~r_act] = SYM_U

    # Rows are now sorted by key; a key's previous evaluation is the previous row, or
    # the stored state's last_ts for its first row.
    nr0 = r_key.size
    first0 = np.empty(nr0, dtype=bool)
    first0[0] = True
    first0[1:] = r_key[1:] != r_key[:-1]
    fpos0 = np.flatnonzero(first0)
    last_r = np.append(fpos0[1:], nr0) - 1
    prev_act = np.empty(nr0, dtype=bool)
    prev_cnt = np.empty(nr0, dtype=np.int64)
    prev_act[1:] = r_act[:-1]
    prev_cnt[1:] = r_cnt[:-1]
    prev_act[fpos0] = False
    prev_cnt[fpos0] = 0
    if s_rows.size:
        p = np.minimum(np.searchsorted(s_key_sorted, r_key[fpos0]), s_key_sorted.size - 1)
        hit = np.flatnonzero(s_key_sorted[p] == r_key[fpos0])
        fr = fpos0[hit]
        a0, c0 = actv.lookup(r_g[fr], state.last_ts[s_rows[s_order[p[hit]]]])
        prev_act[fr] = a0
        prev_cnt[fr] = c0
    # Resets: the zone was inactive somewhere between two evaluations of a key (the
    # number of schedule flips changed): insert an I row at the first flip.
    rs = np.flatnonzero(prev_act & (r_g != 0) & (r_cnt != prev_cnt))
    # A scheduled key whose device has later fixes in the batch (dropped because the
    # zone was inactive then) gets a no-op row at the device's last fix, so that a
    # window end after its last row is seen within this batch.
    dc_last = odc[np.maximum(dc_ptr[1:] - 1, 0)]
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
    first = np.empty(r_key.size, dtype=bool)
    first[0] = True
    first[1:] = r_key[1:] != r_key[:-1]
    fpos = np.flatnonzero(first)
    srow_of_first = np.full(fpos.size, -1, dtype=np.int64)
    if s_rows.size:
        p = np.minimum(np.searchsorted(s_key_sorted, r_key[fpos]), s_key_sorted.size - 1)
        hit = s_key_sorted[p] == r_key[fpos]
        srow_of_first[hit] = s_order[p[hit]]  # index into s_rows
    has_st = srow_of_first >= 0

    nr = r_key.size
    pos = np.arange(nr, dtype=np.int64)
    seg_start = np.maximum.accumulate(pos * first)
    seg_id = np.cumsum(first) - 1
    s0_seg = np.zeros(fpos.size, dtype=np.int8)
    if has_st.any():
        s0_seg[has_st] = state.status[s_rows[srow_of_first[has_st]]]
    s0 = s0_seg[seg_id]
    r_sym, run_n = _confirmations(cfg, zones, state, r_sym, r_ts, r_dc, dc_case, seg_start,
                                  seg_id, s0_seg, s_rows, srow_of_first)
    before, after = scan_states(r_sym, seg_start, s0)

    return _evidence(
        state=state,
        zones=zones,
        batch=batch,
        n=n,
        ets=ets,
        elat=elat,
        elon=elon,
        eacc=eacc,
        r=dict(
            fix=r_fix,
            zone=r_zone,
            t=r_t,
            sym=r_sym,
            depth=r_depth,
            afix=r_afix,
            dc=r_dc,
            ts=r_ts,
            tie=r_tie,
        ),
        first=first,
        fpos=fpos,
        seg_start=seg_start,
        seg_id=seg_id,
        before=before,
        after=after,
        s0_seg=s0_seg,
        s_rows=s_rows,
        srow_of_first=srow_of_first,
        dc_dev=dc_dev,
        dc_case=dc_case,
        dev_arrays=dev_arrays,
        run_n=run_n,
        prev=prev,
        cfg=cfg,
    )


def _transits(
    cfg: RuleConfig, zones: CaseZones, r: dict[str, np.ndarray], before: I8, after: I8,
    lc1: I64, seg_start: I64, seg_id: I64, st_first: I64, st_maxd: F64, st_before: I64,
    prev: I64, p_ts: I64, p_lat: F64, p_lon: F64, p_acc: F64,
) -> tuple[I64, I64, I64, F64]:
    """Rows where a pending run (wrong-side fixes that did not confirm) of an exclusion
    zone ends with a right-side fix, and the person passed through: the fix before the
    run, the run's first fix and the closing fix are at most `segment_max_gap_ms`
    apart, both legs have a plausible speed and the path goes on (the straight line
    from before to after is at least half the way through the run's first fix: not a
    spike out and back). Returns (rows, first fix, closing fix, depth)."""
    sym, fix, depth = r["sym"], r["fix"], r["depth"]
    cand = (before == C1) & (after == 0) & ((sym == SYM_R) | (sym == SYM_RC)) & (r["t"] == 0)
    cand &= zones.store.kind_excl[r["zone"]]
    rows = np.flatnonzero(cand)
    e = np.zeros(0, np.int64)
    if rows.size == 0:
        return e, e, e, np.zeros(0)
    pr = lc1[rows]
    inb = pr >= seg_start[rows]
    seg = seg_id[rows]
    f1 = np.where(inb, fix[np.maximum(pr, 0)], st_first[seg])
    dep = np.where(inb, depth[np.maximum(pr, 0)], st_maxd[seg])
    b = np.where(inb, np.where(f1 < prev.size, prev[np.minimum(f1, prev.size - 1)], -1),
                 st_before[seg])
    nf = fix[rows]
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


def _confirmations(
    cfg: RuleConfig, zones: CaseZones, state: EngineState, sym: I8, rts: I64, rdc: I64,
    dc_case: I64, seg_start: I64, seg_id: I64, s0_seg: I8, s_rows: I64, srow_of_first: I64,
) -> tuple[I8, I64]:
    """Mark the wrong-side fixes that confirm an opening and the right-side fixes that
    confirm a closing (`geofence.confirm`), with the runs the stored states carry."""
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
    case = dc_case[rdc]
    n_open = zones.confirm_n[case]
    n_open = np.where(n_open >= 0, n_open, cfg.confirm_points)
    t_open = zones.confirm_ms[case]
    t_open = np.where(t_open >= 0, t_open, cfg.confirm_ms)
    return confirm_runs(
        sym, rts, seg_start, (s0_seg == C1)[seg_id], c_first[seg_id], c_count[seg_id],
        (s0_seg == O1)[seg_id], c_right[seg_id], n_open, t_open, cfg.close_points,
        cfg.close_ms,
    )


def _symbols(wrong: BoolA, right: BoolA, weak: BoolA, deep: BoolA) -> I8:
    """Symbol per observation through a 16-entry table (no masked selects)."""
    key = wrong.view(np.uint8) << 3
    key |= right.view(np.uint8) << 2
    key |= weak.view(np.uint8) << 1
    key |= deep.view(np.uint8)
    out: I8 = _SYM_TABLE[key]
    return out


def _sym_table() -> I8:
    t = np.empty(16, dtype=np.int8)
    for k in range(16):
        wrong, right, weak = k >> 3 & 1, k >> 2 & 1, k >> 1 & 1  # bit 0 (deep): unused
        if wrong:  # no single fix opens, however deep: confirmation marks D later
            t[k] = SYM_X if weak else SYM_W
        else:
            t[k] = SYM_R if right else SYM_U
    return t


_SYM_TABLE = _sym_table()


def _observe(
    st: ZoneStore,
    cfg: RuleConfig,
    lat: F64,
    lon: F64,
    acc: F64,
    m: F64,
    pf: I64,
    pz: I64,
    pact: BoolA,
    pcnt: I64,
    pg: I64,
    pslot: I64,
    executor: ThreadPoolExecutor | None,
) -> dict[str, np.ndarray]:
    """Signed distances and symbols for (fix, zone) pairs; approach rows for buffered zones."""
    pm = m[pf]
    d = np.full(pf.size, np.nan)  # inactive: NaN -> neither wrong nor right -> U
    asel = np.flatnonzero(pact)
    if asel.size:
        za = pz[asel]
        cutoff = pm[asel] + st.cut_add[za]  # exclusion: m + buffer; inclusion: inf
        d[asel], _ = st.signed_distances(lat, lon, pf[asel], za, cutoff, executor)
    weak = acc[pf] > cfg.max_open_acc_m
    thr = np.clip(cfg.deep_factor * pm, cfg.deep_min_m, np.inf)
    depth = d * st.depth_sign[pz]  # exclusion: -d (inside), inclusion: d (outside)
    sym = _symbols(depth >= pm, depth <= -pm, weak, depth > thr)
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
        asym = _symbols(in_ring, da >= ba + ma, weak[appr], adepth > thr[appr])
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


def _late_pairs(
    zones: CaseZones,
    obs: dict[str, np.ndarray],
    kept2: BoolA,
    stated_tab: BoolA | None,
    s_key: I64,
    s_slot: I64,
    dc: I64,
    case: I32,
    odc: I64,
    dc_ptr: I64,
    ndc: int,
    maxd: int,
    n: int,
    nz: int,
    dc_case: I64,
    weak_fix: BoolA,
    big: BoolA,
    lat: F64,
    lon: F64,
) -> tuple[I64, I64, I64] | None:
    """(fix, zone, slot) pairs missing for keys that leave idle inside the batch.

    For a (device, zone) whose first wrong-side fix (W/D) is in this batch and that had
    no stored state, every later fix of the device matters; the first pass only kept
    fixes near the zone (and no weak fixes). Returns the pairs not yet evaluated.
    """
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
        kzone = _at2(zones.case_zone2d, dc_case[kdc], kslot)
        # Exclusion zones: every later fix not yet paired (far ones become R).
        kx = zones.store.kind_excl[kzone]
        item, fx = _expand(dc_ptr[kdc[kx]], dc_ptr[kdc[kx] + 1], odc)
        fx = fx.astype(np.int64)
        ks = kslot[kx][item]
        ok = (fx > first[keys[kx]][item]) & ~_at2(kept2, fx, ks)
        fx, ks = fx[ok], ks[ok]
        parts_f.append(fx)
        parts_z.append(_at2(zones.case_zone2d, case[fx], ks).astype(np.int64))
        parts_s.append(ks)
        # Inclusion zones are never far: only weak fixes (and inactive ones) are missing.
        wf = np.flatnonzero(weak_fix)
        if wf.size and not kx.all():
            wk = dc[wf][:, None] * maxd + np.arange(maxd)[None, :]
            z2 = _rows(zones.case_zone2d, case[wf])
            hit = (first[wk] < wf[:, None]) & (z2 >= 0) & ~zones.store.kind_excl[z2]
            hit &= ~_rows(kept2, wf)
            wi, ws = _nonzero2(hit)
            parts_f.append(wf[wi])
            parts_z.append(_at2(z2, wi, ws).astype(np.int64))
            parts_s.append(ws.astype(np.int64))
    ssel = ~dsel
    if ssel.any():
        skey = tdc[ssel] * nz + z[ssel]
        u, inv = np.unique(skey, return_inverse=True)
        first_u = np.full(u.size, n, dtype=np.int64)
        np.minimum.at(first_u, inv, f[ssel])
        sd = s_slot < 0
        if sd.any():
            first_u[np.isin(u, s_key[sd] // 2)] = n
        keep = first_u < n
        u, first_u = u[keep], first_u[keep]
        kdc = u // nz
        item, fx = _expand(dc_ptr[kdc], dc_ptr[kdc + 1], odc)
        fx = fx.astype(np.int64)
        zz = u[item] % nz
        ok = fx > first_u[item]
        fx, zz = fx[ok], zz[ok]
        # Already paired in the first pass: inside the zone's expanded box (and not
        # weak), or an imprecise fix checked against every shared zone.
        had = (
            (lat[fx] >= zones.exp_lat_lo[zz])
            & (lat[fx] <= zones.exp_lat_hi[zz])
            & (lon[fx] >= zones.exp_lon_lo[zz])
            & (lon[fx] <= zones.exp_lon_hi[zz])
            & ~weak_fix[fx]
        ) | big[fx]
        k = np.flatnonzero(~had)
        parts_f.append(fx[k])
        parts_z.append(zz[k])
        parts_s.append(np.full(k.size, -1, dtype=np.int64))
    if not parts_f:
        return None
    ef = np.concatenate(parts_f)
    if ef.size == 0:
        return None
    return ef, np.concatenate(parts_z), np.concatenate(parts_s)


def _segments(
    zones: CaseZones,
    cfg: RuleConfig,
    actv: _Activity,
    ets: I64,
    elat: F64,
    elon: F64,
    eacc: F64,
    em: F64,
    edc: I64,
    prev: I64,
    case: I32,
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
    sd = haversine_m(elat[a], elon[a], elat[b], elon[b])
    plaus = np.maximum(sd - em[a] - em[b], 0.0) / sdt <= cfg.segment_max_speed_mps
    b, a, seg_len = b[plaus], a[plaus], sd[plaus]
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
    ema, emb = ema[sel], emb[sel]
    if b.size == 0:
        return empty
    zone2 = _rows(zones.case_zone2d, case[b])
    si, sl = _nonzero2(_rows(zones.case_excl2d, case[b]))
    cs = si.astype(np.int64)
    cz = _at2(zone2, si, sl).astype(np.int64)
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
            attached |= _in_sorted(key, zones.shared_keys)
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


_ATYPE = np.array([AT_LEFT, AT_ENTERED, AT_APPROACH, AT_APPROACH], dtype=np.int8)


def _atype(zones: CaseZones, zone: I64, t: I64) -> I8:
    """Alert type per row: approach rows (t == 1), else by the zone's kind."""
    out: I8 = _ATYPE[t * 2 + zones.store.kind_excl[zone]]
    return out


def _device_table(
    state: EngineState,
    zones: CaseZones,
    batch: FixBatch,
    dev_arrays: tuple[Any, ...],
) -> dict[str, np.ndarray]:
    _, dev_ptr, od, ts, lat, lon, acc, drow, case = dev_arrays
    has = dev_ptr[1:] > dev_ptr[:-1]
    devs = np.flatnonzero(has)
    last = od[dev_ptr[1:][has] - 1]  # a device's fixes are in time order: last = newest
    ids = batch.device_ids[devs]
    keep = np.ones(state.d_id.size, dtype=bool)
    dr = drow[devs]
    keep[dr[dr >= 0]] = False
    return {
        "d_id": np.concatenate((state.d_id[keep], ids)),
        "d_case": np.concatenate((state.d_case[keep], zones.case_id_arr[case[last]])),
        "d_ts": np.concatenate((state.d_ts[keep], ts[last])),
        "d_lat": np.concatenate((state.d_lat[keep], lat[last])),
        "d_lon": np.concatenate((state.d_lon[keep], lon[last])),
        "d_acc": np.concatenate((state.d_acc[keep], acc[last])),
    }


_EP_NAMES = (
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


def _finish_empty(
    state: EngineState, zones: CaseZones, batch: FixBatch, dev_arrays: tuple[Any, ...]
) -> tuple[EngineState, Transitions]:
    """No key changed: same episodes, updated device table."""
    cols = {k: state.col(k) for k in _EP_NAMES}
    cols.update(_device_table(state, zones, batch, dev_arrays))
    cols.update(_out_cols(state))
    new = EngineState(cols)
    new._ix = state._ix
    return new, Transitions.empty()


def _evidence(
    *,
    state: EngineState,
    zones: CaseZones,
    batch: FixBatch,
    n: int,
    ets: I64,
    elat: F64,
    elon: F64,
    eacc: F64,
    r: dict[str, np.ndarray],
    first: BoolA,
    fpos: I64,
    seg_start: I64,
    seg_id: I64,
    before: I8,
    after: I8,
    s0_seg: I8,
    s_rows: I64,
    srow_of_first: I64,
    dc_dev: I64,
    dc_case: I64,
    dev_arrays: tuple[Any, ...],
    run_n: I64,
    prev: I64,
    cfg: RuleConfig,
) -> tuple[EngineState, Transitions]:
    """Episodes, transitions and new states from the scanned rows."""
    nr = r["sym"].size
    pos = np.arange(nr, dtype=np.int64)
    sym, depth, fix, rts = r["sym"], r["depth"], r["fix"], r["ts"]
    ne = ets.size
    # Fix pool: batch fixes, virtual fixes, then the stored states' first/last fixes.
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

    dc = r["dc"]
    zone = r["zone"]
    t = r["t"]
    atype = _atype(zones, zone, t)
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
        seq: I64,
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
        tr["seq"].append(seq)

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
    nrow = np.flatnonzero((r["tie"] == 1) & (before < O0))
    af = r["afix"][nrow]
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

    # Transits: a pending run of an exclusion zone ended by a right-side fix, the person
    # passing through (not out and back) at a plausible speed: an inferred crossing.
    trow, t_f1, t_n, t_dep = _transits(
        cfg, zones, r, before, after, lc1, seg_start, seg_id, st_first, st_maxd, st_before,
        prev, p_ts, p_lat, p_lon, p_acc)
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
    order = _order_by(cat["at"], cat["seq"], 4 * nr + 4)
    ff = cat["ffix"][order]
    lf = cat["lfix"][order]
    trans = Transitions(
        {
            "kind": cat["kind"][order],
            "atype": tat[order],
            "inferred": cat["inferred"][order],
            "dev": _obj(batch.device_ids, tdev[order]),
            "case": _obj(zones.case_id_arr, tcase[order]),
            "zone": _obj(zones.zone_id_arr, tzone[order]),
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

    # ---- new states -------------------------------------------------------------
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
    n_b[pst] = st_before[keep_seg[pst]]
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
        "dev": np.concatenate((state.dev[ut], _obj(batch.device_ids, dc_dev[kdc]))),
        "case": np.concatenate((state.case[ut], _obj(zones.case_id_arr, dc_case[kdc]))),
        "zone": np.concatenate((state.zone[ut], _obj(zones.zone_id_arr, kz))),
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
        "pend_n": np.concatenate((state.pend_n[ut], np.where(fs_ == C1, run_n[lr], 0))),
        "b_ts": np.concatenate((state.b_ts[ut], np.where(has_b, p_ts[nb_], -1))),
        "b_lat": np.concatenate((state.b_lat[ut], p_lat[nb_])),
        "b_lon": np.concatenate((state.b_lon[ut], p_lon[nb_])),
        "b_acc": np.concatenate((state.b_acc[ut], p_acc[nb_])),
    }
    new_cols.update(_device_table(state, zones, batch, dev_arrays))
    new = EngineState(new_cols)
    if state._ix is not None and state._ix[0] is zones.token:
        new._ix = (
            zones.token,
            np.concatenate((state._ix[1][ut], dc_case[kdc])),
            np.concatenate((state._ix[2][ut], kz)),
        )
    return new, trans


# --------------------------------------------------------------------------- no-fix events


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
    actv = _Activity(zones, lo, hi)
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
    cols = {k2: state.col(k2)[keep] for k2 in _EP_NAMES}
    for k2 in ("d_id", "d_case", "d_ts", "d_lat", "d_lon", "d_acc"):
        cols[k2] = state.col(k2)
    cols.update(_out_cols(state))
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
    config: RuleConfig = DEFAULT_CONFIG,
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
    cols = {k: state.col(k)[keep] for k in _EP_NAMES}
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
    for k in _EP_NAMES:
        v = np.empty(1, dtype=cols[k].dtype)
        v[0] = add[k]
        cols[k] = np.concatenate((cols[k], v))
    for k2 in ("d_id", "d_case", "d_ts", "d_lat", "d_lon", "d_acc"):
        cols[k2] = state.col(k2)
    cols.update(_out_cols(state))
    one = {
        "kind": np.array([K_OPEN], np.int8),
        "atype": np.array([AT_LEFT], np.int8),
        "inferred": np.zeros(1, bool),
        "dev": _objs([device_id]),
        "case": _objs([case_id]),
        "zone": _objs([zone_id]),
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


def _out_cols(state: EngineState) -> dict[str, np.ndarray]:
    """The outlier carry columns, unchanged."""
    return {k: state.col(k) for k in ("o_id", *(f"o_{f}" for f in OUT_FIELDS))}


def _objs(v: list[str]) -> ObjA:
    a = np.empty(len(v), dtype=object)
    a[:] = v
    return a
