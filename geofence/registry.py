"""`CaseZones`: which zones apply to which case, packed for batch evaluation.

Build it once per zones-configuration version (e.g. when ``config_versions.zones``
changes) and reuse it for every batch; it also caches schedule flip instants.

Zones attached to fewer than ``shared_min_cases`` cases, and all inclusion zones, are
*direct*: every fix of such a case is tested against them (after a bounding-box
prefilter). Exclusion zones attached to more cases (schools, ...) are *shared*: they are found through a uniform grid
over their (buffer + ``near_m``)-expanded bounding boxes, so a fix is tested only
against shared zones whose box is near it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from geofence.geometry import M_PER_DEG, CompiledZone, ZoneStore
from geofence.schedule import (
    MS_DAY,
    Exceptions,
    Schedule,
    activity_changes,
    compile_exceptions,
    compile_schedule,
    get_tz,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
BoolA = npt.NDArray[np.bool_]

DEFAULT_TZ = "Asia/Almaty"


@dataclass(frozen=True)
class ZoneEntry:
    """A compiled zone with its schedule and approved exceptions."""

    zone: CompiledZone
    schedule: Schedule | None = None
    exceptions: Exceptions = ()

    @classmethod
    def make(
        cls, zone: CompiledZone, schedule: Any = None, exceptions: Iterable[Any] | None = None
    ) -> ZoneEntry:
        """Validate/compile the JSON schedule and exceptions of a zone."""
        return cls(zone, compile_schedule(schedule), compile_exceptions(exceptions))


class _Grid:
    """Uniform grid (degrees) over shared zones' expanded bboxes: cell -> zone indices."""

    def __init__(
        self, zones: I32, lat_lo: F64, lat_hi: F64, lon_lo: F64, lon_hi: F64, cell_m: float
    ) -> None:
        self.empty = zones.size == 0
        if self.empty:
            return
        lat_mid = float(np.mean(0.5 * (lat_lo + lat_hi)))
        self.dlat = cell_m / M_PER_DEG
        self.dlon = cell_m / (M_PER_DEG * max(0.05, math.cos(math.radians(lat_mid))))
        self.lat0 = float(lat_lo.min())
        self.lon0 = float(lon_lo.min())
        self.ny = int((lat_hi.max() - self.lat0) * (1.0 / self.dlat)) + 1
        self.nx = int((lon_hi.max() - self.lon0) * (1.0 / self.dlon)) + 1
        # Same arithmetic as the queries (multiply by the inverse cell size), so that a
        # point and a box edge at a cell boundary land in the same cell.
        ix0 = np.floor((lon_lo - self.lon0) * (1.0 / self.dlon)).astype(np.int64)
        ix1 = np.floor((lon_hi - self.lon0) * (1.0 / self.dlon)).astype(np.int64)
        iy0 = np.floor((lat_lo - self.lat0) * (1.0 / self.dlat)).astype(np.int64)
        iy1 = np.floor((lat_hi - self.lat0) * (1.0 / self.dlat)).astype(np.int64)
        cells: list[I64] = []
        owners: list[I64] = []
        for k in range(zones.size):
            xs = np.arange(ix0[k], ix1[k] + 1)
            ys = np.arange(iy0[k], iy1[k] + 1)
            c = (xs[:, None] * self.ny + ys[None, :]).ravel()
            cells.append(c)
            owners.append(np.full(c.size, zones[k], dtype=np.int64))
        cell = np.concatenate(cells)
        owner = np.concatenate(owners)
        order = np.lexsort((owner, cell))
        cell = cell[order]
        self.zone_list: I32 = owner[order].astype(np.int32)
        self.dense = self.nx * self.ny <= (1 << 22)
        if self.dense:
            counts = np.bincount(cell, minlength=self.nx * self.ny)
            self.ptr = np.zeros(self.nx * self.ny + 1, dtype=np.int64)
            np.cumsum(counts, out=self.ptr[1:])
            # Ranges per cell with an empty border: clipped indices need no bounds test.
            start = np.zeros((self.nx + 2, self.ny + 2), dtype=np.int64)
            end = np.zeros((self.nx + 2, self.ny + 2), dtype=np.int64)
            start[1:-1, 1:-1] = self.ptr[:-1].reshape(self.nx, self.ny)
            end[1:-1, 1:-1] = self.ptr[1:].reshape(self.nx, self.ny)
            self.cell_start: I64 = start.reshape(-1)
            self.cell_end: I64 = end.reshape(-1)
        else:
            self.keys, first = np.unique(cell, return_index=True)
            self.ptr = np.append(first, cell.size).astype(np.int64)

    def cell_ranges(self, ix: I64, iy: I64) -> tuple[I64, I64]:
        """CSR range ``[start, end)`` into ``zone_list`` for cells (out of grid -> empty)."""
        if self.dense:
            cid = np.clip(ix, -1, self.nx)
            cid *= self.ny + 2
            cid += np.clip(iy, -1, self.ny)
            cid += self.ny + 3
            return np.take(self.cell_start, cid), np.take(self.cell_end, cid)
        ok = (ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny)
        cid = np.where(ok, ix * self.ny + iy, 0)
        pos = np.searchsorted(self.keys, cid)
        pos = np.minimum(pos, self.keys.size - 1)
        ok &= self.keys[pos] == cid
        s = self.ptr[pos]
        e = self.ptr[pos + 1]
        e = np.where(ok, e, s)
        return s, e

    def query_points(self, lat: F64, lon: F64) -> tuple[I64, I32]:
        """Candidate (point index, zone index) pairs for points (sorted by point)."""
        if self.empty or lat.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        # Truncation (not floor) is fine: points left of/below the grid land in the
        # first cell and are filtered by the exact bbox test afterwards.
        ix = ((lon - self.lon0) * (1.0 / self.dlon)).astype(np.int64)
        iy = ((lat - self.lat0) * (1.0 / self.dlat)).astype(np.int64)
        s, e = self.cell_ranges(ix, iy)
        hit = np.flatnonzero(e > s)  # most points lie in empty cells
        item, z = expand(s[hit], e[hit], self.zone_list)
        return hit[item], z

    def query_segments(
        self, lat_a: F64, lon_a: F64, lat_b: F64, lon_b: F64, max_cells: int = 256
    ) -> tuple[I64, I32, I64]:
        """Candidate (segment, zone) pairs (may repeat) for segments a-b.

        Only cells of the segment's bbox whose centre lies within half a cell diagonal
        of the segment (in cell units) are visited. Segments spanning more than
        ``max_cells`` cells are returned separately (third array) for brute force.
        """
        if self.empty or lat_a.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        ua = (lon_a - self.lon0) / self.dlon
        va = (lat_a - self.lat0) / self.dlat
        ub = (lon_b - self.lon0) / self.dlon
        vb = (lat_b - self.lat0) / self.dlat
        ix0 = np.clip(np.floor(np.minimum(ua, ub)), -1, self.nx).astype(np.int64)
        ix1 = np.clip(np.floor(np.maximum(ua, ub)), -1, self.nx).astype(np.int64)
        iy0 = np.clip(np.floor(np.minimum(va, vb)), -1, self.ny).astype(np.int64)
        iy1 = np.clip(np.floor(np.maximum(va, vb)), -1, self.ny).astype(np.int64)
        wy = iy1 - iy0 + 1
        ncell = (ix1 - ix0 + 1) * wy
        big = np.flatnonzero(ncell > max_cells)
        ncell[big] = 0
        seg = np.repeat(np.arange(lat_a.size), ncell)
        k = np.arange(seg.size) - np.repeat(np.cumsum(ncell) - ncell, ncell)
        cx = ix0[seg] + k // wy[seg]
        cy = iy0[seg] + k % wy[seg]
        # Distance (cell units) from the cell centre to the segment: <= sqrt(2)/2 to touch.
        du = ub[seg] - ua[seg]
        dv = vb[seg] - va[seg]
        qu = cx + 0.5 - ua[seg]
        qv = cy + 0.5 - va[seg]
        l2 = du * du + dv * dv
        t = np.clip((qu * du + qv * dv) / np.where(l2 > 0, l2, 1.0), 0.0, 1.0)
        ru = qu - t * du
        rv = qv - t * dv
        near = ru * ru + rv * rv <= 0.5 + 1e-9
        seg, cx, cy = seg[near], cx[near], cy[near]
        s, e = self.cell_ranges(cx, cy)
        p, z = expand(s, e, self.zone_list)
        return seg[p], z, big


def expand(s: I64, e: I64, values: np.ndarray) -> tuple[I64, np.ndarray]:
    """For CSR ranges per item: (item index, value) for every element of every range."""
    cnt = e - s
    total = int(cnt.sum())
    item = np.repeat(np.arange(s.size, dtype=np.int64), cnt)
    shift = s - (np.cumsum(cnt) - cnt)
    return item, values[np.arange(total, dtype=np.int64) + shift[item]]


class CaseZones:
    """Registry of cases (timezone) and their zones, with packed arrays for the engine.

    Public attributes: ``case_ids``/``case_index`` (id <-> index), ``zone_ids``/
    ``zone_index``, ``store`` (`ZoneStore`), ``case_tz`` (index into ``tz_names``).
    """

    def __init__(
        self,
        cases: Mapping[str, str | None],
        zones: Mapping[str, ZoneEntry],
        attachments: Mapping[str, Sequence[str] | None],
        *,
        near_m: float = 100.0,
        shared_min_cases: int = 8,
        grid_cell_m: float = 250.0,
        confirm: Mapping[str, tuple[int | None, float | None]] | None = None,
    ) -> None:
        """``cases``: case_id -> IANA tz (None = Asia/Almaty); ``zones``: zone_id ->
        `ZoneEntry`; ``attachments``: zone_id -> case_ids it applies to (None = all
        cases). ``near_m``: fixes with ``max(acc, 10)`` up to this use the fast
        prefilter/grid (others are checked against every zone of their case).
        ``confirm``: case_id -> (points, seconds) a violation needs to open, per case
        (None in either place: the rule's default)."""
        self.near_m = float(near_m)
        self.case_ids: list[str] = list(cases)
        self.case_index: dict[str, int] = {c: i for i, c in enumerate(self.case_ids)}
        #: per case: points / milliseconds to confirm an opening (-1: the default)
        self.confirm_n: I64 = np.full(len(self.case_ids), -1, dtype=np.int64)
        self.confirm_ms: I64 = np.full(len(self.case_ids), -1, dtype=np.int64)
        for c, (pts, sec) in (confirm or {}).items():
            cix = self.case_index.get(c)
            if cix is None:
                continue
            if pts is not None:
                self.confirm_n[cix] = max(1, int(pts))
            if sec is not None:
                self.confirm_ms[cix] = max(0, int(float(sec) * 1000))
        tz_names: list[str] = []
        tz_idx: dict[str, int] = {}
        ctz = np.zeros(len(self.case_ids), dtype=np.int32)
        for i, c in enumerate(self.case_ids):
            tz = cases[c] or DEFAULT_TZ
            if tz not in tz_idx:
                get_tz(tz)
                tz_idx[tz] = len(tz_names)
                tz_names.append(tz)
            ctz[i] = tz_idx[tz]
        self.tz_names = tz_names
        self.case_tz: I32 = ctz
        self.zone_ids: list[str] = list(zones)
        self.zone_index: dict[str, int] = {z: i for i, z in enumerate(self.zone_ids)}
        entries = [zones[z] for z in self.zone_ids]
        self.entries: tuple[ZoneEntry, ...] = tuple(entries)
        self.store = ZoneStore([e.zone for e in entries])
        nz = len(entries)
        nc = len(self.case_ids)

        # Schedule keys: 0 = always active.
        skeys: list[tuple[Schedule | None, Exceptions]] = [(None, ())]
        sk_idx: dict[tuple[Schedule | None, Exceptions], int] = {(None, ()): 0}
        zsk = np.zeros(nz, dtype=np.int32)
        for i, e in enumerate(entries):
            k = (e.schedule, e.exceptions)
            if k not in sk_idx:
                sk_idx[k] = len(skeys)
                skeys.append(k)
            zsk[i] = sk_idx[k]
        self.skeys = skeys
        self.zone_skey: I32 = zsk
        self._changes: OrderedDict[tuple[int, int, int], tuple[bool, I64]] = OrderedDict()

        # Attachments.
        att_all = np.zeros(nz, dtype=bool)
        cases_of: list[I64] = []
        for zi, zid in enumerate(self.zone_ids):
            lst = attachments.get(zid, ())
            if lst is None:
                att_all[zi] = True
                cases_of.append(np.arange(nc, dtype=np.int64))
            else:
                try:
                    ci = np.fromiter((self.case_index[c] for c in lst), np.int64)
                except KeyError as exc:
                    raise KeyError(f"zone {zid} attached to unknown case {exc}") from None
                cases_of.append(np.unique(ci))
        for zid in attachments:
            if zid not in self.zone_index:
                raise KeyError(f"attachment for unknown zone {zid}")
        n_att = np.array([c.size for c in cases_of], dtype=np.int64)
        # Inclusion zones are always direct: every fix of the case is tested against them.
        self.shared: BoolA = (att_all | (n_att >= shared_min_cases)) & self.store.kind_excl
        self.att_all: BoolA = att_all & self.shared
        d_case = [cases_of[z] for z in range(nz) if not self.shared[z]]
        d_zone = [np.full(cases_of[z].size, z) for z in range(nz) if not self.shared[z]]
        dc = np.concatenate(d_case) if d_case else np.zeros(0, np.int64)
        dz = np.concatenate(d_zone) if d_zone else np.zeros(0, np.int64)
        order = np.lexsort((dz, dc))
        dc, dz = dc[order], dz[order]
        self.direct_ptr: I64 = np.zeros(nc + 1, dtype=np.int64)
        np.cumsum(np.bincount(dc, minlength=nc), out=self.direct_ptr[1:])
        self.direct_keys: I64 = dc * max(nz, 1) + dz  # sorted
        self.max_direct = int(np.diff(self.direct_ptr).max()) if nc else 0
        s_case = [cases_of[z] for z in range(nz) if self.shared[z] and not self.att_all[z]]
        s_zone = [
            np.full(cases_of[z].size, z)
            for z in range(nz)
            if self.shared[z] and not self.att_all[z]
        ]
        self.shared_keys: I64 = (
            np.sort(np.concatenate(s_case) * max(nz, 1) + np.concatenate(s_zone))
            if s_case
            else np.zeros(0, np.int64)
        )

        # Expanded degree bboxes for the prefilter and the grid.
        st = self.store
        exp = np.where(st.kind_excl, st.buffer_m, 0.0) + self.near_m
        self.exp_lat_lo = st.lat_min - exp / st.ky
        self.exp_lat_hi = st.lat_max + exp / st.ky
        self.exp_lon_lo = st.lon_min - exp / st.kx
        self.exp_lon_hi = st.lon_max + exp / st.kx
        self.shared_zones: I32 = np.flatnonzero(self.shared).astype(np.int32)
        sz = self.shared_zones
        self.shared_pos: I64 = np.full(nz, -1, dtype=np.int64)
        self.shared_pos[sz] = np.arange(sz.size)
        self.grid = _Grid(
            sz,
            self.exp_lat_lo[sz],
            self.exp_lat_hi[sz],
            self.exp_lon_lo[sz],
            self.exp_lon_hi[sz],
            grid_cell_m,
        )
        # Coarser grid over the zones' own bboxes for segment (crossing) queries.
        self.seg_grid = _Grid(
            sz,
            st.lat_min[sz],
            st.lat_max[sz],
            st.lon_min[sz],
            st.lon_max[sz],
            2000.0,
        )

        # Direct zones as dense (case, slot) tables: one row gather per fix.
        md = max(self.max_direct, 1)
        self.case_zone2d: I32 = np.full((nc, md), -1, dtype=np.int32)
        # float32, rounded outwards by ~6e-5 deg: a conservative prefilter.
        self.case_box2d: npt.NDArray[np.float32] = np.empty((nc, md, 4), dtype=np.float32)
        self.case_box2d[..., 0] = np.inf  # empty box: padding slots are always "far"
        self.case_box2d[..., 1] = -np.inf
        self.case_box2d[..., 2] = np.inf
        self.case_box2d[..., 3] = -np.inf
        self.case_group2d: I32 = np.zeros((nc, md), dtype=np.int32)
        if dz.size:
            slot = np.arange(dz.size) - self.direct_ptr[dc]
            self.case_zone2d[dc, slot] = dz
            ex = st.kind_excl[dz]
            # Exclusion zones only: inclusion zones are never "far" (their depth outside
            # is evidence) and are listed separately in case_islot.
            pad = 6e-5
            e_dc, e_slot, e_z = dc[ex], slot[ex], dz[ex]
            self.case_box2d[e_dc, e_slot, 0] = self.exp_lat_lo[e_z] - pad
            self.case_box2d[e_dc, e_slot, 1] = self.exp_lat_hi[e_z] + pad
            self.case_box2d[e_dc, e_slot, 2] = self.exp_lon_lo[e_z] - pad
            self.case_box2d[e_dc, e_slot, 3] = self.exp_lon_hi[e_z] + pad
            self.case_group2d[dc, slot] = self.group_of(zsk[dz], ctz[dc])
        # Union of each case's direct exclusion boxes (a one-box-per-fix first test).
        self.case_ebox: npt.NDArray[np.float32] = np.empty((nc, 4), dtype=np.float32)
        self.case_ebox[:, 0] = self.case_box2d[..., 0].min(axis=1)
        self.case_ebox[:, 1] = self.case_box2d[..., 1].max(axis=1)
        self.case_ebox[:, 2] = self.case_box2d[..., 2].min(axis=1)
        self.case_ebox[:, 3] = self.case_box2d[..., 3].max(axis=1)
        # Inclusion slots per case (-1 padded).
        # (`kind_excl` is empty when there are cases but no zone at all.)
        excl_of = np.append(st.kind_excl, False)
        is_incl = (self.case_zone2d >= 0) & ~excl_of[
            np.where(self.case_zone2d >= 0, self.case_zone2d, -1)
        ]
        # Direct exclusion slots per case.
        self.case_excl2d: BoolA = (self.case_zone2d >= 0) & excl_of[
            np.where(self.case_zone2d >= 0, self.case_zone2d, -1)
        ]
        mi = max(int(is_incl.sum(axis=1).max()) if nc else 0, 1)
        self.case_islot: I32 = np.full((nc, mi), -1, dtype=np.int32)
        ic, isl = np.nonzero(is_incl)
        if ic.size:
            rank = np.arange(ic.size) - np.searchsorted(ic, ic)
            self.case_islot[ic, rank] = isl
        self.case_id_arr = np.empty(nc, dtype=object)
        self.case_id_arr[:] = self.case_ids
        self.zone_id_arr = np.empty(nz, dtype=object)
        self.zone_id_arr[:] = self.zone_ids
        self.token = object()  # identity of this build (for cached indices in states)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_cases(
        cls,
        cases: Mapping[str, tuple[str | None, Sequence[tuple[Any, ...]]]],
        **kwargs: Any,
    ) -> CaseZones:
        """From ``case_id -> (tz, [(zone_id, CompiledZone, schedule, exceptions), ...])``.

        A zone listed under several cases is one shared zone (its schedule and
        exceptions must be the same everywhere).
        """
        tzs: dict[str, str | None] = {}
        zones: dict[str, ZoneEntry] = {}
        att: dict[str, list[str]] = {}
        for case_id, (tz, items) in cases.items():
            tzs[case_id] = tz
            for item in items:
                zid, cz = item[0], item[1]
                sch = item[2] if len(item) > 2 else None
                exc = item[3] if len(item) > 3 else None
                entry = ZoneEntry.make(cz, sch, exc)
                old = zones.get(zid)
                if old is None:
                    zones[zid] = entry
                elif (old.schedule, old.exceptions) != (entry.schedule, entry.exceptions):
                    raise ValueError(f"zone {zid}: different schedules in different cases")
                att.setdefault(zid, []).append(case_id)
        return cls(tzs, zones, {z: c for z, c in att.items()}, **kwargs)

    # ------------------------------------------------------------------ lookups

    def is_attached(self, case: I64, zone: I64) -> BoolA:
        """Vectorised: whether each zone is attached to the corresponding case."""
        nz = max(len(self.zone_ids), 1)
        key = case.astype(np.int64) * nz + zone
        out = self.att_all[zone].copy()
        for keys in (self.direct_keys, self.shared_keys):
            if keys.size:
                pos = np.minimum(np.searchsorted(keys, key), keys.size - 1)
                out |= keys[pos] == key
        return out

    def direct_slot(self, case: I64, zone: I64) -> I64:
        """Position of ``zone`` in ``case``'s direct zone list, or -1."""
        nz = max(len(self.zone_ids), 1)
        key = case.astype(np.int64) * nz + zone
        if self.direct_keys.size == 0:
            return np.full(key.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.direct_keys, key), self.direct_keys.size - 1)
        hit = self.direct_keys[pos] == key
        return np.where(hit, pos - self.direct_ptr[case], -1)

    def group_of(self, skey: npt.ArrayLike, tz: npt.ArrayLike) -> I64:
        """Activity group per (zone schedule key, case tz): ``skey * n_tz + tz``, 0 = always."""
        sk = np.asarray(skey, dtype=np.int64)
        ntz = max(len(self.tz_names), 1)
        return np.where(sk == 0, 0, sk * ntz + np.asarray(tz, dtype=np.int64))

    @property
    def n_groups(self) -> int:
        return len(self.skeys) * max(len(self.tz_names), 1)

    def changes(self, gid: int, lo_ms: int, hi_ms: int) -> tuple[int, bool, I64]:
        """``(t0, active_at_t0, flips in (t0, t1])`` covering ``[lo, hi]`` (day-aligned, cached)."""
        d0 = lo_ms // MS_DAY - 1
        d1 = hi_ms // MS_DAY + 1
        key = (gid, d0, d1)
        hit = self._changes.get(key)
        if hit is None:
            sk, tz = divmod(gid, max(len(self.tz_names), 1))
            spec, exc = self.skeys[sk]
            hit = activity_changes(spec, self.tz_names[tz], exc, d0 * MS_DAY, d1 * MS_DAY)
            self._changes[key] = hit
            if len(self._changes) > 4096:
                self._changes.popitem(last=False)
        else:
            self._changes.move_to_end(key)
        return d0 * MS_DAY, hit[0], hit[1]
