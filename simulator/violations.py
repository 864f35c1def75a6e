"""Planned violations and their truth.

Planning (`plan_violations`, from the seed): per person and simulated day, at the given
rates (Poisson counts over the run's span):

- curfew breaks: during the 22:00-06:00 window the person leaves home; 30 % are "a step
  outside" (20-80 m past the zone's edge for up to 2 minutes: the rules may or may not
  confirm them), the rest go 0.4-1.5 km away for 5-60 minutes;
- exclusion entries: from wherever they are, the person goes into their exclusion zone
  (to within 40 % of its radius from the centre), stays 3-30 minutes and comes back;
- strap opened (`strap_open`, then `strap_closed` 1-15 minutes later), device switched
  off (`power_off`, silence for 15-120 minutes, `power_on`), coverage gaps (5-45 minutes
  in which the device records but cannot upload; the buffer is uploaded late).

Truth: the simulator runs the monitoring rules itself (`RuleEvaluator`: the engine's
episode state machine and margins (no single-fix opening) on exactly the fixes it publishes) and
writes a zone violation to the truth file only when those rules say an alert is due
while the person really is on the wrong side (a planned excursion). A rule-due episode
without a planned excursion is GPS noise: it is counted (`noise_due`) but is no truth,
so the alert it causes is scored as a false alarm, unless the person really was on the
wrong side then (every ground-truth stretch is also written as a ``wrong_side`` record:
an alert on one is right even where these rules, on fixes without the noise bursts, did
not make it due). `start`/`end` of a zone violation are the true crossing times (from the
trajectory, 1 s resolution).

Noise (the realistic GPS model, `simulator.gps`): spikes after gaps and multipath
excursions are written as ``noise`` records (kind, start, end, offset, the `acc` they
report), never as violations, and their fixes are left out of `RuleEvaluator`: truth
treats every one of them as an outlier that never decides (monitoring-rules.md,
"Outliers"). It does not guess which of them the engine's kinematic rule will call
outliers: a burst fix the engine counts and turns into an alert is a false alarm, and
`simulator.score` reports how many false alarms lie near a noise burst of their case.
Outages (no fix) are simply fixes that are never sent: the rules never see them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from simulator.geo import (
    Frame,
    Zone,
    haversine_m,
    polygon_signed_distance,
    segment_point_distance,
)
from simulator.people import (
    BUS,
    DRIVE,
    WALK,
    Excursion,
    Person,
    Place,
    Stay,
    Trajectory,
    random_point_near,
    trip_duration,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BoolA = npt.NDArray[np.bool_]

CURFEW_FROM_S = 22 * 3600
CURFEW_TO_S = 6 * 3600


@dataclass(frozen=True)
class Rates:
    """Planned events per person per simulated day (check-in shares are per request)."""

    curfew: float = 0.2
    exclusion: float = 0.1
    strap: float = 0.05
    power_off: float = 0.05
    gap: float = 1.0
    forget_charge: float = 0.1
    checkin_requests: float = 0.5  # officer-asked check-ins per person per simulated day
    checkin_missed: float = 0.1
    checkin_failed: float = 0.1


@dataclass(frozen=True)
class DeviceEvent:
    """A planned device-side event pair: `kind` over [start, end] (simulated seconds)."""

    person: int
    kind: str  # "strap", "power_off", "gap"
    start: float
    end: float


@dataclass(frozen=True)
class GroundTruth:
    """When a person really was on the wrong side of a zone (simulated seconds)."""

    person: int
    zone: str  # "home" or "exclusion"
    start: float
    end: float
    kind: str  # the excursion's kind


@dataclass
class Plan:
    excursions: list[list[Excursion]]
    events: list[DeviceEvent]


# --------------------------------------------------------------------------- time helpers


def local_seconds(ts: npt.ArrayLike, tz: ZoneInfo) -> F64:
    """Seconds since local midnight (vectorised over UTC epoch seconds)."""
    t = np.asarray(ts, dtype=np.float64)
    if t.size == 0:
        return t.copy()
    hours = np.floor(t / 3600).astype(np.int64)
    uniq, inv = np.unique(hours, return_inverse=True)
    offs = np.array([datetime.fromtimestamp(int(h) * 3600, tz).utcoffset().total_seconds()  # type: ignore[union-attr]
                     for h in uniq])
    return np.mod(t + offs[inv].reshape(t.shape), 86400.0)


def curfew_active(ts: npt.ArrayLike, tz: ZoneInfo) -> BoolA:
    s = local_seconds(ts, tz)
    return np.asarray((s >= CURFEW_FROM_S) | (s < CURFEW_TO_S))


def iso(ts: float) -> str:
    """UTC RFC 3339 with milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- planning


def _count(rng: np.random.Generator, rate: float, days: float) -> int:
    return int(rng.poisson(max(rate, 0.0) * days)) if rate > 0 else 0


def _stay_for(stays: Sequence[Stay], t: float, need: float) -> Stay | None:
    for s in stays:
        if s.start + 120 <= t and t + need <= s.end - 300:
            return s
    return None


def _free(busy: list[tuple[float, float]], a: float, b: float) -> bool:
    return all(b <= x or a >= y for x, y in busy)


def _exclusion_target(person: Person, rng: np.random.Generator) -> Place:
    z = person.exclusion
    f = Frame(z.lat, z.lon)
    extent = z.extent_m()
    for _ in range(50):
        r = 0.4 * extent * math.sqrt(rng.random())
        a = rng.uniform(0, 2 * math.pi)
        la, lo = f.to_latlon(r * math.cos(a), r * math.sin(a))
        if float(z.signed_distance(la, lo)[()]) < -0.35 * extent or z.is_circle:
            return Place("exclusion", float(la), float(lo))
    return Place("exclusion", z.lat, z.lon)


def _curfew_target(person: Person, rng: np.random.Generator, short: bool) -> Place:
    home = person.home
    for _ in range(50):
        if short:
            p = random_point_near(home, rng, person.home_radius_m + 20, person.home_radius_m + 80)
        else:
            p = random_point_near(home, rng, 400, 1_500)
        if float(person.exclusion.signed_distance(p.lat, p.lon)[()]) > 800:
            return p
    return random_point_near(home, rng, person.home_radius_m + 20, person.home_radius_m + 80)


def plan_violations(
    people: Sequence[Person], stays: Sequence[Sequence[Stay]], *, start: float, end: float,
    rates: Rates, tz: ZoneInfo, rng: np.random.Generator,
) -> Plan:
    """Excursions (spliced into trajectories) and device events for the span [start, end)."""
    days = max(end - start, 0.0) / 86400
    excursions: list[list[Excursion]] = [[] for _ in people]
    events: list[DeviceEvent] = []
    for p, st in zip(people, stays, strict=True):
        busy: list[tuple[float, float]] = []
        # curfew breaks
        for _ in range(_count(rng, rates.curfew, days)):
            for _try in range(60):
                t = rng.uniform(start + 300, end - 600)
                sec = float(local_seconds(t, tz))
                if not (sec >= 22 * 3600 + 600 or sec < 5 * 3600 + 900):
                    continue
                short = bool(rng.random() < 0.3)
                target = _curfew_target(p, rng, short)
                mode = WALK if short or haversine_m(p.home.lat, p.home.lon, target.lat, target.lon) < 1_300 \
                    else (DRIVE if p.car else WALK)
                dwell = rng.uniform(0, 120) if short else rng.uniform(300, 3_600)
                need = 2 * trip_duration(p.home, target, mode) + dwell
                s = _stay_for(st, t, need)
                if s is None or s.place.kind != "home" or not _free(busy, t, t + need):
                    continue
                # back before the window ends (else the window's end closes the episode)
                if float(local_seconds(t + need, tz)) > 5.75 * 3600 and sec < 12 * 3600:
                    continue
                excursions[p.index].append(Excursion(t, target, dwell, mode, "curfew"))
                busy.append((t, t + need))
                break
        # exclusion entries
        for _ in range(_count(rng, rates.exclusion, days)):
            for _try in range(60):
                t = rng.uniform(start + 300, end - 600)
                target = _exclusion_target(p, rng)
                mode = DRIVE if p.car else BUS
                dwell = rng.uniform(180, 1_800)
                s0 = next((s for s in st if s.start <= t < s.end), None)
                if s0 is None:
                    continue
                need = 2 * trip_duration(s0.place, target, mode) + dwell
                s = _stay_for(st, t, need)
                if s is None or not _free(busy, t, t + need):
                    continue
                excursions[p.index].append(Excursion(t, target, dwell, mode, "exclusion"))
                busy.append((t, t + need))
                break
        # device events
        for kind, rate, lo, hi in (("strap", rates.strap, 60, 900),
                                   ("power_off", rates.power_off, 900, 7_200),
                                   ("gap", rates.gap, 300, 2_700)):
            taken: list[tuple[float, float]] = []
            for _ in range(_count(rng, rate, days)):
                for _try in range(20):
                    a = rng.uniform(start + 60, end - 60)
                    b = a + rng.uniform(lo, hi)
                    if _free(taken, a - 600, b + 600):
                        taken.append((a, b))
                        events.append(DeviceEvent(p.index, kind, a, b))
                        break
    events.sort(key=lambda e: e.start)
    return Plan(excursions=excursions, events=events)


def ground_truth(person: Person, tr: Trajectory, excursions: Sequence[Excursion],
                 tz: ZoneInfo, *, step: float = 1.0) -> list[GroundTruth]:
    """The intervals in which an excursion really had the person on a zone's wrong side."""
    out: list[GroundTruth] = []
    home = Zone(person.home.lat, person.home.lon, person.home_radius_m)
    for e in excursions:
        la0, lo0 = tr.position([e.leave])
        origin = Place("", float(la0[0]), float(lo0[0]))
        # trip_duration is a slow estimate: this span covers the whole excursion
        until = min(tr.end, e.leave + 2 * trip_duration(origin, e.target, e.mode) + e.dwell + 1_800)
        ts = np.arange(e.leave, until, step)
        la, lo = tr.position(ts)
        for zone_name, zone in (("home", home), ("exclusion", person.exclusion)):
            d = zone.signed_distance(la, lo)
            wrong = (d > 0) & curfew_active(ts, tz) if zone_name == "home" else d < 0
            for i, j in _runs(np.asarray(wrong)):
                out.append(GroundTruth(person.index, zone_name, float(ts[i]),
                                       float(ts[j - 1] + step), e.kind))
    return _merge_truths(out)


def _merge_truths(gts: list[GroundTruth]) -> list[GroundTruth]:
    """One interval per stretch on the wrong side (sampled spans of excursions overlap)."""
    out: list[GroundTruth] = []
    for g in sorted(gts, key=lambda g: (g.zone, g.start)):
        last = out[-1] if out else None
        if last is not None and last.zone == g.zone and g.start <= last.end + 2.0:
            out[-1] = GroundTruth(last.person, last.zone, last.start, max(last.end, g.end), last.kind)
        else:
            out.append(g)
    return out


def _runs(mask: BoolA) -> list[tuple[int, int]]:
    """[start, stop) index ranges where `mask` is True."""
    if mask.size == 0:
        return []
    m = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(m[1:] != m[:-1])
    return [(int(edges[i]), int(edges[i + 1])) for i in range(0, edges.size, 2)]


# --------------------------------------------------------------------------- rules

# Episode state machine of the monitoring rules (same as geofence.episodes).
C0, C1, O0, O1 = 0, 1, 2, 3
SYM_U, SYM_W, SYM_D, SYM_X, SYM_R, SYM_I, SYM_RC = 0, 1, 2, 3, 4, 5, 6
_MAP = np.array([
    (0, 1, 2, 3),  # U: uncertain
    (1, 1, 2, 2),  # W: definite wrong side, not (yet) confirming
    (2, 2, 2, 2),  # D: a W whose run holds OPEN_POINTS fixes spanning OPEN_S
    (0, 1, 2, 2),  # X: wrong side with acc > 500 m (never opens)
    (0, 0, 3, 3),  # R: definite right side, not (yet) confirming a closing
    (0, 0, 0, 0),  # I: zone inactive
    (0, 0, 0, 0),  # RC: an R whose run holds CLOSE_POINTS fixes spanning CLOSE_S
], dtype=np.int8)

# the default confirmation (monitoring-rules.md, "Episodes"): 2 fixes / 30 s opens,
# 2 fixes / 60 s closes
OPEN_POINTS, OPEN_S = 2, 30.0
CLOSE_POINTS, CLOSE_S = 2, 60.0

MIN_MARGIN_M = 10.0
MAX_OPEN_ACC_M = 500.0
SEGMENT_MAX_GAP_S = 600.0


@dataclass(frozen=True)
class Due:
    """The rules say an alert is due: zone `zone` of `person`, at the fix of time `ts`."""

    person: int
    zone: str
    ts: float
    first_ts: float  # the episode's first wrong-side fix
    inferred: bool = False


def symbols(depth: F64, acc: F64, active: BoolA) -> npt.NDArray[np.int8]:
    """Rule symbols from the depth past the boundary on the wrong side (negative: right side)."""
    m = np.maximum(acc, MIN_MARGIN_M)
    wrong = depth >= m
    right = depth <= -m
    weak = acc > MAX_OPEN_ACC_M
    # no single fix opens a violation, however deep (monitoring-rules.md, "Episodes"):
    # D and RC come only from a run's confirmation (`_ZoneState.confirm`)
    sym = np.where(wrong, np.where(weak, SYM_X, SYM_W), np.where(right, SYM_R, SYM_U))
    return np.where(active, sym, SYM_I).astype(np.int8)


@dataclass
class _ZoneState:
    state: npt.NDArray[np.int8]
    first: F64  # ts of the first wrong-side fix of the pending/open episode
    run_first: F64  # the current run of definite wrong-side fixes: first ts, count
    run_count: npt.NDArray[np.int64]
    right_first: F64  # the current run of right-side fixes: first ts, count
    right_count: npt.NDArray[np.int64]

    @classmethod
    def empty(cls, n: int) -> _ZoneState:
        return cls(np.zeros(n, np.int8), np.zeros(n), np.zeros(n), np.zeros(n, np.int64),
                   np.zeros(n), np.zeros(n, np.int64))

    def confirm(self, dev: I64, ts: F64, sym: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
        """Mark the W that confirms an opening (D) and the R that confirms a closing (RC).

        Runs as `geofence.confirm` counts them: uncertain fixes neither count nor break a
        wrong-side run; R and I break it. W, X and I break a right-side run.
        """
        w = sym == SYM_W
        r = sym == SYM_R
        w_break = r | (sym == SYM_I)
        r_break = w | (sym == SYM_X) | (sym == SYM_I)
        wc = np.where(w_break, 0, self.run_count[dev])
        wf = np.where(wc == 0, ts, self.run_first[dev])
        wc = wc + w
        rc = np.where(r_break, 0, self.right_count[dev])
        rf = np.where(rc == 0, ts, self.right_first[dev])
        rc = rc + r
        self.run_count[dev], self.run_first[dev] = wc, wf
        self.right_count[dev], self.right_first[dev] = rc, rf
        out = sym.copy()
        out[w & (wc >= OPEN_POINTS) & (ts - wf >= OPEN_S)] = SYM_D
        out[r & (rc >= CLOSE_POINTS) & (ts - rf >= CLOSE_S)] = SYM_RC
        return out


class RuleEvaluator:
    """The monitoring rules for each person's home (curfew) and exclusion zone, online.

    `step` takes one fix per listed device (in time order per device) and returns the
    episodes whose alert became due.
    """

    def __init__(self, people: Sequence[Person], tz: ZoneInfo) -> None:
        n = len(people)
        self.tz = tz
        self.h_lat = np.array([p.home.lat for p in people])
        self.h_lon = np.array([p.home.lon for p in people])
        self.h_r = np.array([p.home_radius_m for p in people])
        self.zones = [p.exclusion for p in people]
        self.e_lat = np.array([z.lat for z in self.zones])
        self.e_lon = np.array([z.lon for z in self.zones])
        self.e_circle = np.array([z.is_circle for z in self.zones])
        self.e_r = np.array([z.radius_m for z in self.zones])
        self.e_extent = np.array([z.extent_m() for z in self.zones])
        self.home = _ZoneState.empty(n)
        self.excl = _ZoneState.empty(n)
        self.prev_ts = np.full(n, -np.inf)
        self.prev_lat = np.zeros(n)
        self.prev_lon = np.zeros(n)
        self.prev_acc = np.zeros(n)
        self.prev_out = np.zeros(n, dtype=bool)  # previous fix definitely outside the exclusion
        self.opened = np.zeros(n, dtype=np.int64)

    def exclusion_distance(self, dev: I64, lat: F64, lon: F64) -> F64:
        d = haversine_m(lat, lon, self.e_lat[dev], self.e_lon[dev])
        out = d - np.where(self.e_circle[dev], self.e_r[dev], 0.0)
        poly = np.flatnonzero(~self.e_circle[dev])
        for k in poly:
            lower = d[k] - self.e_extent[dev[k]]
            if lower > 2_000:  # far away: a lower bound is as good as exact for the rules
                out[k] = lower
            else:
                out[k] = float(self.zones[int(dev[k])].signed_distance(lat[k], lon[k])[()])
        return out

    def step(self, dev: I64, ts: F64, lat: F64, lon: F64, acc: F64) -> list[Due]:
        due: list[Due] = []
        if dev.size == 0:
            return due
        # home: wrong side = outside, only while the curfew window is active
        d_home = haversine_m(lat, lon, self.h_lat[dev], self.h_lon[dev]) - self.h_r[dev]
        active = curfew_active(ts, self.tz)
        due += self._advance(self.home, "home", dev, ts, symbols(d_home, acc, active))
        # exclusion: wrong side = inside, always active
        d_ex = self.exclusion_distance(dev, lat, lon)
        sym = symbols(-d_ex, acc, np.ones(dev.size, dtype=bool))
        due += self._advance(self.excl, "exclusion", dev, ts, sym)
        due += self._inferred(dev, ts, lat, lon, acc, sym)
        self.prev_ts[dev] = ts
        self.prev_lat[dev] = lat
        self.prev_lon[dev] = lon
        self.prev_acc[dev] = acc
        self.prev_out[dev] = sym == SYM_R
        return due

    def _advance(self, zs: _ZoneState, name: str, dev: I64, ts: F64,
                 sym: npt.NDArray[np.int8]) -> list[Due]:
        old = zs.state[dev]
        new = _MAP[zs.confirm(dev, ts, sym), old]
        starting = (old == C0) & (new != C0)
        zs.first[dev[starting]] = ts[starting]
        zs.state[dev] = new
        opened = np.flatnonzero((old <= C1) & (new >= O0))
        out = []
        for k in opened:
            d = int(dev[k])
            self.opened[d] += 1
            out.append(Due(d, name, float(ts[k]), float(zs.first[d])))
        return out

    def _inferred(self, dev: I64, ts: F64, lat: F64, lon: F64, acc: F64,
                  sym: npt.NDArray[np.int8]) -> list[Due]:
        """Sparse fixes jumping over an exclusion zone (both definitely outside, <= 10 min)."""
        cand = np.flatnonzero(
            (sym == SYM_R) & self.prev_out[dev] & (ts - self.prev_ts[dev] <= SEGMENT_MAX_GAP_S)
            & (self.excl.state[dev] <= C1)
        )
        out: list[Due] = []
        for k in cand:
            d = int(dev[k])
            z = self.zones[d]
            f = Frame(z.lat, z.lon)
            ax, ay = f.to_xy(self.prev_lat[d], self.prev_lon[d])
            bx, by = f.to_xy(lat[k], lon[k])
            margin = max(self.prev_acc[d], acc[k], MIN_MARGIN_M)
            reach = segment_point_distance(float(ax), float(ay), float(bx), float(by), 0.0, 0.0)
            if reach > self.e_extent[d]:
                continue
            if z.is_circle:
                depth = z.radius_m - reach
            else:
                s = np.linspace(0.0, 1.0, 64)
                rx, ry = f.to_xy([p[1] for p in z.ring], [p[0] for p in z.ring])
                sd = polygon_signed_distance(ax + (bx - ax) * s, ay + (by - ay) * s, rx, ry)
                depth = float(-sd.min())
            if depth > margin:
                out.append(Due(d, "exclusion", float(ts[k]), float(self.prev_ts[d]), inferred=True))
        return out


# --------------------------------------------------------------------------- truth


@dataclass
class TruthBook:
    """Matches rule-due episodes with ground truth; keeps the records to write."""

    truths: dict[tuple[int, str], list[GroundTruth]] = field(default_factory=dict)
    reported: set[tuple[int, str, float]] = field(default_factory=set)
    noise_due: list[Due] = field(default_factory=list)

    def add(self, gts: Sequence[GroundTruth]) -> None:
        for g in gts:
            self.truths.setdefault((g.person, g.zone), []).append(g)

    def match(self, due: Due, slack: float = 600.0) -> tuple[GroundTruth | None, bool]:
        """The ground truth this due episode belongs to (None: GPS noise) and whether it is
        reported for the first time (an episode may close and reopen within one truth)."""
        for g in self.truths.get((due.person, due.zone), []):
            if g.start - slack <= due.ts and due.first_ts <= g.end + slack:
                key = (g.person, g.zone, g.start)
                new = key not in self.reported
                self.reported.add(key)
                return g, new
        self.noise_due.append(due)
        return None, False


ZONE_ALERT = {"home": "inclusion_zone_left", "exclusion": "exclusion_zone_entered"}


def truth_record(*, type: str, case_id: str, serial: str, person: int, start: float,
                 end: float | None, clock: str, **detail: Any) -> dict[str, Any]:
    """One JSON-lines truth record (see `simulator.score` for the format)."""
    rec: dict[str, Any] = {
        "record": "violation", "type": type, "case_id": case_id, "serial": serial,
        "person": person, "clock": clock, "start": iso(start),
        "end": iso(end) if end is not None else None,
        "duration_s": round(end - start, 1) if end is not None else None,
    }
    rec.update(detail)
    return rec
