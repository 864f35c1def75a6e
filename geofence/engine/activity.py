"""Schedule status lookups for one batch: active or not, and flip counts, per (group, instant)."""

from __future__ import annotations

from typing import Any

import numpy as np

from geofence.engine.kernels import I64, BoolA
from geofence.registry import CaseZones
from geofence.schedule import MS_DAY


class Activity:
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
