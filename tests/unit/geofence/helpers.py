"""Test helpers: local-frame geometry builders and a straightforward per-fix reference
implementation of the monitoring rules (the engine must agree with it)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from geofence.geometry import M_PER_DEG, CompiledZone, ZoneStore, haversine_m
from geofence.outliers import HELD, RELEASED, Carry, detect

LAT0, LON0 = 43.24, 76.92
KX = M_PER_DEG * math.cos(math.radians(LAT0))
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def ll(x: Any, y: Any) -> tuple[Any, Any]:
    """Metres east/north of (LAT0, LON0) -> (lat, lon)."""
    return LAT0 + np.asarray(y) / M_PER_DEG, LON0 + np.asarray(x) / KX


def ring(points: Sequence[tuple[float, float]]) -> list[list[float]]:
    """Closed GeoJSON ring from metre coordinates."""
    out = []
    for x, y in points:
        la, lo = ll(x, y)
        out.append([float(lo), float(la)])
    return [*out, out[0]]


def square(cx: float, cy: float, half: float) -> dict[str, Any]:
    pts = [
        (cx - half, cy - half),
        (cx + half, cy - half),
        (cx + half, cy + half),
        (cx - half, cy + half),
    ]
    return {"type": "Polygon", "coordinates": [ring(pts)]}


def star(
    rng: np.random.Generator, cx: float, cy: float, r: float, k: int
) -> list[tuple[float, float]]:
    """Random star-shaped (simple, usually concave) polygon, counter-clockwise."""
    ang = np.sort((np.arange(k) + rng.uniform(0.05, 0.95, k)) * (2 * math.pi / k))
    rad = r * rng.uniform(0.4, 1.0, k)
    return [(cx + a * math.cos(b), cy + a * math.sin(b)) for a, b in zip(rad, ang, strict=True)]


def circle_zone(cx: float, cy: float, r: float) -> dict[str, Any]:
    la, lo = ll(cx, cy)
    return {"center": [float(lo), float(la)], "radius_m": r}


# --------------------------------------------------------------------------- schedules


def ref_active(
    schedule: Mapping[str, Any] | None, tz: str, exceptions: Sequence[tuple[int, int]], t_ms: int
) -> bool:
    """Per-timestamp reference: local wall clock via zoneinfo."""
    if any(a <= t_ms < b for a, b in exceptions):
        return False
    if schedule is None:
        return True
    loc = datetime.fromtimestamp(t_ms / 1000, ZoneInfo(tz))
    mod = loc.hour * 60 + loc.minute
    wd = loc.weekday()
    for w in schedule["windows"]:
        days = {DAYS.index(d) for d in w["days"]}
        s = int(w["start"][:2]) * 60 + int(w["start"][3:])
        e = int(w["end"][:2]) * 60 + int(w["end"][3:])
        if e > s:
            if wd in days and s <= mod < e:
                return True
        else:
            if wd in days and mod >= s:
                return True
            if (wd - 1) % 7 in days and mod < e:
                return True
    return False


# --------------------------------------------------------------------------- reference engine


@dataclass
class RefZone:
    zone_id: str
    compiled: CompiledZone
    schedule: Mapping[str, Any] | None = None
    exceptions: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class RefFix:
    device: str
    case: str
    ts: int
    lat: float
    lon: float
    acc: float


@dataclass
class _Key:
    status: int = 0  # 0 C0, 1 C1, 2 O0, 3 O1
    first: RefFix | None = None
    last: RefFix | None = None
    maxd: float = -math.inf
    started: int = 0
    right_ts: int = -1
    last_ts: int | None = None
    last_active: bool = False
    evidence_since_report: bool = False
    n: int = 0  # fixes of the pending run
    before: RefFix | None = None  # the device's fix before the pending run
    rn: int = 0  # right-side fixes of the closing run


def _fixd(f: RefFix) -> dict[str, Any]:
    return {"ts": f.ts, "lat": f.lat, "lon": f.lon, "acc": f.acc}


class Reference:
    """The monitoring rules evaluated fix by fix (slow, obvious, for tests)."""

    def __init__(
        self,
        cases: Mapping[str, tuple[str, Sequence[RefZone]]],
        *,
        min_margin: float = 10.0,
        gap_ms: int = 600_000,
        confirm_points: int = 2,
        confirm_ms: int = 30_000,
        close_points: int = 2,
        close_ms: int = 60_000,
        max_speed: float = 45.0,
    ) -> None:
        self.cases = cases
        self.min_margin = min_margin
        self.gap_ms = gap_ms
        self.confirm_points, self.confirm_ms = confirm_points, confirm_ms
        self.close_points, self.close_ms = close_points, close_ms
        self.max_speed = max_speed
        self.carry: dict[str, Carry] = {}
        zones = {z.zone_id: z.compiled for _, zs in cases.values() for z in zs}
        self._zidx = {zid: i for i, zid in enumerate(zones)}
        # Same distance function as the engine (float32 kernel): the geometry itself is
        # checked against shapely elsewhere; here the rules must agree bit for bit.
        self._store = ZoneStore(list(zones.values()))
        self.keys: dict[tuple[str, str, str, int], _Key] = {}
        self.last_fix: dict[str, RefFix] = {}

    def _active(self, z: RefZone, tz: str, t: int) -> bool:
        return ref_active(z.schedule, tz, z.exceptions, t)

    def _first_inactive(self, z: RefZone, tz: str, t0: int, t1: int) -> int | None:
        """First instant in (t0, t1] at which the zone is inactive (minute-aligned rules)."""
        if z.schedule is None and not z.exceptions:
            return None
        t = (t0 // 60_000 + 1) * 60_000
        cands = sorted({a for a, _ in z.exceptions if t0 < a <= t1})
        while t <= t1:
            cands.append(t)
            t += 60_000
        for c in sorted(set(cands)):
            if not self._active(z, tz, c):
                return c
        return None

    def _depth(self, z: RefZone, d: float, typ: int) -> float:
        if typ == 1:
            return z.compiled.buffer_m - d
        return -d if z.compiled.kind == "exclusion" else d

    def _sym(self, z: RefZone, d: float, m: float, acc: float, typ: int) -> str:
        b = z.compiled.buffer_m
        if typ == 1:
            wrong = m <= d <= b - m
            right = d >= b + m
        elif z.compiled.kind == "exclusion":
            wrong, right = d <= -m, d >= m
        else:
            wrong, right = d >= m, d <= -m
        if wrong:
            return "X" if acc > 500 else "W"  # no single fix opens, however deep
        return "R" if right else "U"

    def dist(self, z: RefZone, lat: Any, lon: Any) -> np.ndarray:
        la = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        lo = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        zi = np.full(la.size, self._zidx[z.zone_id])
        d, _ = self._store.signed_distances(la, lo, np.arange(la.size), zi)
        return d

    def _seg_depth(self, z: RefZone, a: RefFix, b: RefFix, margin: float) -> float:
        """Max depth along a-b by sampling (coarse, then finer near ``margin``)."""
        cz = z.compiled
        xa, ya = cz.to_local(a.lat, a.lon)
        xb, yb = cz.to_local(b.lat, b.lon)
        length = max(1e-6, math.hypot(float(xb - xa), float(yb - ya)))

        def sample(t: np.ndarray) -> np.ndarray:
            return -self.dist(z, a.lat + t * (b.lat - a.lat), a.lon + t * (b.lon - a.lon))

        t = np.linspace(0.0, 1.0, max(2, int(length / 5.0) + 1))  # 5 m: error <= 2.5 m
        depth = sample(t)
        best = float(depth.max())
        if best > margin + 2.6 or best < margin - 2.6:
            return best
        step = t[1] - t[0]
        for k in np.flatnonzero(depth >= margin - 2.6):
            tt = np.linspace(max(0.0, t[k] - step), min(1.0, t[k] + step), 10001)  # ~1 mm
            best = max(best, float(sample(tt).max()))
        return best

    def _suspects(self, fixes: Sequence[RefFix]
                  ) -> tuple[set[int], set[int], dict[int, int]]:
        """Indices of the fixes the kinematic outlier rule holds suspect (per device), of
        those whose previous fix it found a lone spike, and the hold flag of the held and
        released ones."""
        out: set[int] = set()
        lone: set[int] = set()
        held: dict[int, int] = {}
        by_dev: dict[str, list[int]] = {}
        for i in sorted(range(len(fixes)), key=lambda i: (fixes[i].ts, i)):
            by_dev.setdefault(fixes[i].device, []).append(i)
        for dev, idx in by_dev.items():
            cols = [np.array([getattr(fixes[i], k) for i in idx]) for k in ("ts", "lat", "lon",
                                                                            "acc")]
            res = detect(np.zeros(1, np.int64), cols[0].astype(np.int64), cols[1], cols[2],
                         cols[3], self.carry.get(dev))
            self.carry[dev] = res.carry
            out |= {i for i, s in zip(idx, res.suspect.tolist(), strict=True) if s}
            lone |= {i for i, s in zip(idx, res.after_lone.tolist(), strict=True) if s}
            held |= {i: h for i, h in zip(idx, res.held.tolist(), strict=True) if h}
        return out, lone, held

    def _transit(self, emit: Any, key: Any, z: RefZone, st: _Key, f: RefFix) -> None:
        """A pending run ended by a right-side fix while passing through: inferred."""
        b, f1 = st.before, st.first
        if b is None or f1 is None or f.ts - b.ts > self.gap_ms:
            return

        def mg(x: RefFix) -> float:
            return max(x.acc, self.min_margin)

        def dist(x: RefFix, y: RefFix) -> float:
            return float(haversine_m(x.lat, x.lon, y.lat, y.lon))

        v1 = max(dist(b, f1) - mg(b) - mg(f1), 0) / max((f1.ts - b.ts) / 1000, 1.0)
        v2 = max(dist(f1, f) - mg(f1) - mg(f), 0) / max((f.ts - f1.ts) / 1000, 1.0)
        if v1 > self.max_speed or v2 > self.max_speed:
            return
        if dist(b, f) < 0.5 * (dist(b, f1) + dist(f1, f)):
            return
        for kind in ("open", "close"):
            emit(kind, key, z, f.ts, st, ended=f.ts, inferred=True, first=f1, last=f,
                 maxd=st.maxd, started=f1.ts)

    def run(self, fixes: Sequence[RefFix]) -> list[dict[str, Any]]:
        """Process one batch; returns transition dicts (like `Transitions.records`)."""
        out: list[dict[str, Any]] = []
        order = sorted(range(len(fixes)), key=lambda i: (fixes[i].ts, i))
        touched: set[tuple[str, str, str, int]] = set()
        suspect, lone, held = self._suspects(fixes)

        def emit(
            kind: str,
            key: tuple[str, str, str, int],
            z: RefZone,
            at: int,
            st: _Key,
            ended: int | None = None,
            inferred: bool = False,
            first: RefFix | None = None,
            last: RefFix | None = None,
            maxd: float | None = None,
            started: int | None = None,
        ) -> None:
            if key[3] == 1:
                at_name = "exclusion_zone_approach"
            elif z.compiled.kind == "exclusion":
                at_name = "exclusion_zone_entered"
            else:
                at_name = "inclusion_zone_left"
            f0 = first if first is not None else st.first
            f1 = last if last is not None else st.last
            assert f0 is not None and f1 is not None
            out.append(
                {
                    "kind": kind,
                    "alert_type": at_name,
                    "device_id": key[0],
                    "case_id": key[1],
                    "zone_id": key[2],
                    "at": at,
                    "first_fix": _fixd(f0),
                    "last_fix": _fixd(f1),
                    "max_depth_m": st.maxd if maxd is None else maxd,
                    "started_at": st.started if started is None else started,
                    "ended_at": ended,
                    "inferred": inferred,
                }
            )

        def open_here(key: tuple[str, str, str, int], z: RefZone, st: _Key, f: RefFix,
                      depth: float) -> None:
            """The pending run opens at fix f."""
            assert st.first is not None
            first, base = st.first, st.maxd
            st.status, st.first, st.last = 2, first, f
            st.maxd = max(base, depth)
            st.started = first.ts
            st.right_ts = -1
            emit("open", key, z, f.ts, st)
            st.evidence_since_report = False
            touched.add(key)

        for i in order:
            f = fixes[i]
            if i in suspect:  # outliers (and fixes not yet decided) never decide
                continue
            tz, zones = self.cases[f.case]
            m = max(f.acc, self.min_margin)
            prev = self.last_fix.get(f.device)
            seg_ok = (
                prev is not None
                and prev.case == f.case
                and 0 <= f.ts - prev.ts <= self.gap_ms
                and prev.acc <= 500
                and f.acc <= 500
            )
            if i in lone:  # the fix before was a lone spike: no segment from it
                prev = None
                seg_ok = False
            if seg_ok:
                assert prev is not None
                dist = float(haversine_m(prev.lat, prev.lon, f.lat, f.lon))
                eff = max(dist - max(prev.acc, self.min_margin) - m, 0.0)
                seg_ok = eff / max((f.ts - prev.ts) / 1000, 1.0) <= self.max_speed
            for z in zones:
                cz = z.compiled
                types = [0, 1] if cz.kind == "exclusion" and cz.buffer_m > 0 else [0]
                active = self._active(z, tz, f.ts)
                d = float(self.dist(z, f.lat, f.lon)[0])
                for typ in types:
                    key = (f.device, f.case, z.zone_id, typ)
                    st = self.keys.setdefault(key, _Key())
                    # Inactive between the previous evaluation and now -> reset.
                    if st.status != 0 and st.last_ts is not None and st.last_active:
                        t_in = self._first_inactive(z, tz, st.last_ts, f.ts)
                        if t_in is not None:
                            if st.status >= 2:
                                emit("close", key, z, t_in, st, ended=t_in)
                            self.keys[key] = st = _Key()
                    # Inferred crossing (primary exclusion type only).
                    if typ == 0 and cz.kind == "exclusion" and seg_ok and st.status < 2 and active:
                        assert prev is not None
                        mp = max(prev.acc, self.min_margin)
                        dp = float(self.dist(z, prev.lat, prev.lon)[0])
                        same_stretch = (
                            self._active(z, tz, prev.ts)
                            and self._first_inactive(z, tz, prev.ts, f.ts) is None
                        )
                        if same_stretch and dp >= mp and d >= m:
                            chord = float(haversine_m(prev.lat, prev.lon, f.lat, f.lon))
                            need = max(m, mp, 0.1 * chord)
                            depth = self._seg_depth(z, prev, f, need)
                            if depth > need:
                                emit(
                                    "open",
                                    key,
                                    z,
                                    f.ts,
                                    st,
                                    ended=f.ts,
                                    inferred=True,
                                    first=prev,
                                    last=f,
                                    maxd=depth,
                                    started=prev.ts,
                                )
                                emit(
                                    "close",
                                    key,
                                    z,
                                    f.ts,
                                    st,
                                    ended=f.ts,
                                    inferred=True,
                                    first=prev,
                                    last=f,
                                    maxd=depth,
                                    started=prev.ts,
                                )
                    st.last_ts = f.ts
                    st.last_active = active
                    if not active:
                        continue
                    sym = self._sym(z, d, m, f.acc, typ)
                    depth = self._depth(z, d, typ)
                    s = st.status
                    if s < 2:
                        if sym == "W":
                            if s == 0:
                                st.status, st.first, st.maxd, st.n = 1, f, depth, 0
                                st.before = prev if prev is not None and prev.case == f.case \
                                    else None
                            st.n += 1
                            assert st.first is not None
                            if (held.get(i) != HELD and st.n >= self.confirm_points
                                    and f.ts - st.first.ts >= self.confirm_ms):
                                open_here(key, z, st, f, depth)
                        elif (held.get(i) == RELEASED and s == 1 and st.first is not None
                              and st.n >= self.confirm_points
                              and f.ts - st.first.ts >= self.confirm_ms):
                            # the held run was real: this fix (whatever its side) opens it
                            open_here(key, z, st, f, depth)
                        elif sym == "R":
                            if s == 1 and typ == 0 and cz.kind == "exclusion":
                                self._transit(emit, key, z, st, f)
                            self.keys[key] = _Key(last_ts=f.ts, last_active=True)
                    else:
                        if sym in ("W", "D", "X"):
                            st.status = 2
                            st.last = f
                            st.maxd = max(st.maxd, depth)
                            st.evidence_since_report = True
                            touched.add(key)
                        elif sym == "R":
                            if s == 2:
                                st.status, st.right_ts, st.rn = 3, f.ts, 0
                            st.rn += 1
                            if st.rn >= self.close_points and f.ts - st.right_ts >= self.close_ms:
                                emit("close", key, z, f.ts, st, ended=st.right_ts)
                                self.keys[key] = _Key(last_ts=f.ts, last_active=True)
            self.last_fix[f.device] = f
        for key in sorted(touched):
            st = self.keys.get(key)
            if st is not None and st.status >= 2 and st.evidence_since_report:
                tz, zones = self.cases[key[1]]
                z = next(zz for zz in zones if zz.zone_id == key[2])
                assert st.last is not None
                emit("update", key, z, st.last.ts, st)
                st.evidence_since_report = False
        return out


def canon(
    records: Sequence[Mapping[str, Any]], *, depth_for_inferred: bool = False
) -> list[tuple[Any, ...]]:
    """Comparable, order-independent form of transition records."""
    out = []
    for r in records:
        md = round(float(r["max_depth_m"]), 1)
        if r["inferred"] and not depth_for_inferred:
            md = None
        out.append(
            (
                r["at"],
                r["device_id"],
                r["case_id"],
                r["zone_id"],
                r["alert_type"],
                r["kind"],
                r["inferred"],
                r["started_at"],
                r["ended_at"],
                r["first_fix"]["ts"],
                r["last_fix"]["ts"],
                md,
            )
        )
    return sorted(out, key=repr)
