"""Simulated people: where they live and work, their daily routines, and the paths between.

Everything is planned up front from the seed (numpy `Generator`), in simulated time
(Unix seconds, UTC) with routines in local time (Asia/Almaty by default):

- places: home (anywhere in the city), work (1-10 km away) for most, two or three shops
  near home; a car for some;
- a day: home at night; weekdays to work around 08:00 and back around 18:00, sometimes a
  shop on the way, sometimes an evening walk to a shop; weekends one or two outings;
  always home by 21:40 and never out before 06:15 (the curfew is 22:00-06:00);
- paths follow Almaty's north-south/east-west street grid (an L with a few jittered
  waypoints every 200-400 m) at walking (1.1-1.6 m/s), bus (4-7 m/s) or driving
  (6-13 m/s, with stops at lights) speeds.

A `Trajectory` is a piecewise-linear list of knots (time, lat, lon) with an `indoor` flag
per segment; a stay is two knots at the same place. `Excursion`s (planned violations:
a curfew break, a visit to an exclusion zone) are spliced into a stay.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from simulator.geo import CITY, Frame, Zone, haversine_m, segment_point_distance

F64 = npt.NDArray[np.float64]

#: Where homes, work places and shops are drawn (metres from the centre, x east, y north).
#: The city spreads north and west of the centre; the mountains start ~5 km south.
CITY_X = (-11_000.0, 9_000.0)
CITY_Y = (-5_000.0, 9_000.0)

WALK = "walk"
BUS = "bus"
DRIVE = "drive"

CURFEW_START = time(22, 0)
CURFEW_END = time(6, 0)
HOME_BY = time(21, 40)  # routine: home before the curfew window, with a margin
OUT_AFTER = time(6, 15)


@dataclass(frozen=True)
class Place:
    """A named point (degrees)."""

    kind: str
    lat: float
    lon: float


@dataclass
class Person:
    """One simulated person under supervision and their fixed plan."""

    index: int
    home: Place
    work: Place | None
    shops: list[Place]
    car: bool
    home_radius_m: float
    exclusion: Zone
    risk_level: str
    leave_work_h: float  # usual departure from home on weekdays (local hours)
    work_hours: float


@dataclass
class Trajectory:
    """Knots in simulated time; segment k (knot k → k+1) is indoors if `indoor[k]`."""

    t: list[float] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    lon: list[float] = field(default_factory=list)
    indoor: list[bool] = field(default_factory=list)

    def add(self, t: float, lat: float, lon: float, indoor: bool) -> None:
        if self.t and t < self.t[-1]:
            t = self.t[-1]
        self.t.append(t)
        self.lat.append(lat)
        self.lon.append(lon)
        self.indoor.append(indoor)

    @property
    def end(self) -> float:
        return self.t[-1]

    def position(self, ts: npt.ArrayLike) -> tuple[F64, F64]:
        """Interpolated (lat, lon) at the given times (clamped to the span)."""
        tq = np.asarray(ts, dtype=np.float64)
        t = np.asarray(self.t)
        lat = np.interp(tq, t, np.asarray(self.lat))
        lon = np.interp(tq, t, np.asarray(self.lon))
        return lat, lon


@dataclass(frozen=True)
class Stay:
    """A planned stay: at `place` over [start, end] (simulated seconds)."""

    place: Place
    start: float
    end: float
    indoor: bool


@dataclass(frozen=True)
class Excursion:
    """A planned trip away from a stay: leave `leave`, stay at `target` for `dwell` s."""

    leave: float
    target: Place
    dwell: float
    mode: str
    kind: str  # "curfew" or "exclusion"


# --------------------------------------------------------------------------- places


def _city_point(rng: np.random.Generator) -> tuple[float, float]:
    x = rng.uniform(*CITY_X)
    y = rng.uniform(*CITY_Y)
    return x, y


def _place(kind: str, x: float, y: float, frame: Frame = CITY) -> Place:
    la, lo = frame.to_latlon(x, y)
    return Place(kind, float(la), float(lo))


def _xy(p: Place, frame: Frame = CITY) -> tuple[float, float]:
    x, y = frame.to_xy(p.lat, p.lon)
    return float(x), float(y)


def _near(rng: np.random.Generator, x: float, y: float, lo: float, hi: float) -> tuple[float, float]:
    r = rng.uniform(lo, hi)
    a = rng.uniform(0, 2 * math.pi)
    nx = min(max(x + r * math.cos(a), CITY_X[0]), CITY_X[1])
    ny = min(max(y + r * math.sin(a), CITY_Y[0]), CITY_Y[1])
    return nx, ny


def routine_polylines(person: Person) -> list[list[tuple[float, float]]]:
    """The L-shaped paths between a person's routine places (city frame, metres)."""
    places = [person.home, *person.shops] + ([person.work] if person.work else [])
    pts = [_xy(p) for p in places]
    lines = []
    for i, a in enumerate(pts):
        for b in pts[i + 1:]:
            lines.append([a, (a[0], b[1]), b])
            lines.append([a, (b[0], a[1]), b])
    return lines


def _min_distance_to(lines: list[list[tuple[float, float]]], x: float, y: float) -> float:
    best = math.inf
    for line in lines:
        for (ax, ay), (bx, by) in itertools.pairwise(line):
            best = min(best, segment_point_distance(ax, ay, bx, by, x, y))
    return best


def make_people(n: int, rng: np.random.Generator, *, polygon_share: float = 0.3,
                clearance_m: float = 1_500.0) -> list[Person]:
    """`n` people with places, a home-zone radius and an exclusion zone away from their routine.

    The exclusion zone (a victim's home: a circle of 100-300 m, or a polygon of that size
    for `polygon_share` of people) lies 2-7 km from home and at least `clearance_m` from
    every routine place and path, so GPS noise on the routine never reaches it.
    """
    from simulator.geo import irregular_polygon

    people: list[Person] = []
    for i in range(n):
        hx, hy = _city_point(rng)
        home = _place("home", hx, hy)
        work = None
        if rng.random() < 0.8:
            wx, wy = _near(rng, hx, hy, 1_000, 10_000)
            work = _place("work", wx, wy)
        shops = [_place("shop", *_near(rng, hx, hy, 250, 1_400)) for _ in range(int(rng.integers(2, 4)))]
        car = bool(rng.random() < 0.45)
        risk = str(rng.choice(["low", "medium", "high"], p=[0.2, 0.6, 0.2]))
        p = Person(
            index=i, home=home, work=work, shops=shops, car=car,
            home_radius_m=float(rng.uniform(150, 250)),
            exclusion=Zone(0, 0, 1), risk_level=risk,
            leave_work_h=float(np.clip(rng.normal(8.0, 0.5), 6.6, 9.5)),
            work_hours=float(rng.uniform(8.0, 9.5)),
        )
        lines = routine_polylines(p)
        best: tuple[float, float, float] | None = None
        radius = float(rng.uniform(100, 300))
        for _ in range(60):
            zx, zy = _near(rng, hx, hy, 2_000, 7_000)
            clear = _min_distance_to(lines, zx, zy) - radius
            if best is None or clear > best[2]:
                best = (zx, zy, clear)
            if clear >= clearance_m:
                break
        assert best is not None
        zlat, zlon = CITY.to_latlon(best[0], best[1])
        if rng.random() < polygon_share:
            p.exclusion = irregular_polygon(float(zlat), float(zlon), radius, rng,
                                            vertices=int(rng.integers(6, 11)))
        else:
            p.exclusion = Zone(lat=float(zlat), lon=float(zlon), radius_m=radius)
        people.append(p)
    return people


# --------------------------------------------------------------------------- paths


def travel_mode(person: Person, a: Place, b: Place) -> str:
    """Walk under 1.3 km; beyond, drive if the person has a car, else walk up to 2 km or bus."""
    d = float(haversine_m(a.lat, a.lon, b.lat, b.lon))
    if d < 1_300:
        return WALK
    return DRIVE if person.car else (WALK if d <= 2_000 else BUS)


def path_knots(a: Place, b: Place, start: float, mode: str, rng: np.random.Generator
               ) -> list[tuple[float, float, float]]:
    """(t, lat, lon) knots of a trip from a to b along the street grid, starting at `start`."""
    ax, ay = _xy(a)
    bx, by = _xy(b)
    corner = (ax, by) if rng.random() < 0.5 else (bx, ay)
    legs = [((ax, ay), corner), (corner, (bx, by))]
    base = {WALK: rng.uniform(1.1, 1.6), BUS: rng.uniform(4.0, 7.0), DRIVE: rng.uniform(6.0, 13.0)}[mode]
    out = [(start, a.lat, a.lon)]
    t = start
    px, py = ax, ay
    for (sx, sy), (ex, ey) in legs:
        length = math.hypot(ex - sx, ey - sy)
        if length < 1:
            continue
        n = max(1, int(length // rng.uniform(200, 400)))
        for k in range(1, n + 1):
            f = k / n
            qx, qy = sx + (ex - sx) * f, sy + (ey - sy) * f
            if k < n:  # jitter across the street direction, never along the end point
                if abs(ex - sx) > abs(ey - sy):
                    qy += rng.normal(0, 8)
                else:
                    qx += rng.normal(0, 8)
            seg = math.hypot(qx - px, qy - py)
            speed = max(0.6, base * rng.uniform(0.75, 1.25))
            t += seg / speed
            la, lo = CITY.to_latlon(qx, qy)
            out.append((t, float(la), float(lo)))
            if mode != WALK and k < n and rng.random() < 0.3:  # a red light, a bus stop
                t += rng.uniform(15, 60)
                out.append((t, float(la), float(lo)))
            px, py = qx, qy
    last = out[-1]
    out[-1] = (last[0], b.lat, b.lon)
    return out


def trip_duration(a: Place, b: Place, mode: str) -> float:
    """A conservative (slow) estimate of a trip's duration, for planning."""
    ax, ay = _xy(a)
    bx, by = _xy(b)
    d = abs(ax - bx) + abs(ay - by)
    return d / {WALK: 0.85, BUS: 2.5, DRIVE: 3.5}[mode] + 120


# --------------------------------------------------------------------------- routines


def _local(d: date, hours: float, tz: ZoneInfo) -> float:
    base = datetime.combine(d, time(0, 0), tzinfo=tz)
    return (base + timedelta(hours=hours)).astimezone(UTC).timestamp()


def plan_stays(person: Person, first_day: date, days: int, tz: ZoneInfo,
               rng: np.random.Generator) -> list[Stay]:
    """The routine as stays (home at night) from `first_day` 00:00 local for `days` days.

    Between two stays is a trip, leaving at the first stay's end. Every trip leaves home
    after 06:15 and the last one of the day is back before 21:40 (planned with slow
    speeds), so the routine alone never breaks the 22:00-06:00 curfew.
    """
    stays: list[Stay] = []
    cur = _local(first_day, 0, tz)
    home = person.home
    out_after = OUT_AFTER.hour + OUT_AFTER.minute / 60
    home_by = HOME_BY.hour + HOME_BY.minute / 60
    for k in range(days):
        d = first_day + timedelta(days=k)
        outings: list[tuple[Place, float, float]] = []  # (place, arrive, leave) local hours
        if d.weekday() < 5 and person.work is not None:
            arrive = person.leave_work_h + 0.6 + rng.normal(0, 0.25)
            off = arrive + person.work_hours + rng.normal(0, 0.3)
            outings.append((person.work, arrive, off))
            h = off + 0.6
            if rng.random() < 0.5:
                shop = person.shops[int(rng.integers(len(person.shops)))]
                outings.append((shop, h + 0.3, h + 0.3 + rng.uniform(0.15, 0.6)))
            if rng.random() < 0.3:
                shop = person.shops[int(rng.integers(len(person.shops)))]
                h = rng.uniform(19.6, 20.4)
                outings.append((shop, h, h + rng.uniform(0.2, 0.5)))
        else:
            h = rng.uniform(9.5, 12.5)
            for _ in range(int(rng.integers(1, 3))):
                shop = person.shops[int(rng.integers(len(person.shops)))]
                dur = rng.uniform(0.3, 1.5)
                outings.append((shop, h, h + dur))
                h += dur + rng.uniform(0.5, 3.0)
        prev = home
        earliest = _local(d, out_after, tz) + 300
        for i, (place, arrive_h, leave_h) in enumerate(outings):
            if place == prev:
                continue
            mode = travel_mode(person, prev, place)
            there = trip_duration(prev, place, mode)
            arrive = max(_local(d, arrive_h, tz), earliest + there, cur + 60 + there)
            later = outings[i + 1][0] if i + 1 < len(outings) else home
            back = trip_duration(place, home, travel_mode(person, place, home))
            onward = trip_duration(place, later, travel_mode(person, place, later))
            leave = min(_local(d, leave_h, tz), _local(d, home_by, tz) - max(back, onward) - 900)
            if leave < arrive + 300:
                continue
            stays.append(Stay(prev, cur, arrive - there, True))
            stays.append(Stay(place, arrive, leave, bool(rng.random() < 0.85)))
            cur = leave
            prev = place
        if prev is not home:
            cur += trip_duration(prev, home, travel_mode(person, prev, home))
        stays.append(Stay(home, cur, _local(d + timedelta(days=1), 0, tz), True))
        cur = _local(d + timedelta(days=1), 0, tz)
    return _merge(stays)


def _merge(stays: list[Stay]) -> list[Stay]:
    """Join consecutive stays at the same place."""
    out: list[Stay] = []
    for s in stays:
        if out and out[-1].place == s.place and s.start - out[-1].end < 1:
            out[-1] = Stay(s.place, out[-1].start, s.end, out[-1].indoor and s.indoor)
        else:
            out.append(s)
    return out


def _offset(place: Place, rng: np.random.Generator, spread_m: float = 15.0) -> tuple[float, float]:
    """Where inside a building the person is (a few metres from the place's point)."""
    f = Frame(place.lat, place.lon)
    la, lo = f.to_latlon(rng.normal(0, spread_m / 2), rng.normal(0, spread_m / 2))
    return float(la), float(lo)


def build_trajectory(person: Person, stays: list[Stay], excursions: list[Excursion],
                     rng: np.random.Generator) -> Trajectory:
    """Stays joined by trips (leaving at each stay's end); an excursion leaves its stay at
    `leave`, dwells at its target and comes back to the same spot."""
    tr = Trajectory()
    exc = sorted(excursions, key=lambda e: e.leave)
    arrival: tuple[float, float] | None = None
    for i, s in enumerate(stays):
        la, lo = arrival if arrival is not None else _offset(s.place, rng)
        here = Place(s.place.kind, la, lo)
        if not tr.t:
            tr.add(s.start, la, lo, s.indoor)
        for e in exc:
            if not (s.start <= e.leave < s.end):
                continue
            tr.add(e.leave, here.lat, here.lon, False)
            for t, a, b in path_knots(here, e.target, tr.end, e.mode, rng)[1:]:
                tr.add(t, a, b, False)
            tr.indoor[-1] = bool(rng.random() < 0.4)
            tr.add(tr.end + e.dwell, e.target.lat, e.target.lon, False)
            for t, a, b in path_knots(e.target, here, tr.end, e.mode, rng)[1:]:
                tr.add(t, a, b, False)
            tr.indoor[-1] = s.indoor
        if i + 1 < len(stays):
            nxt = stays[i + 1]
            mode = travel_mode(person, s.place, nxt.place)
            tr.add(max(tr.end, s.end), here.lat, here.lon, False)
            arrival = _offset(nxt.place, rng)
            dest = Place(nxt.place.kind, *arrival)
            for t, a, b in path_knots(here, dest, tr.end, mode, rng)[1:]:
                tr.add(t, a, b, False)
            tr.indoor[-1] = nxt.indoor
        else:
            tr.add(max(tr.end, s.end), here.lat, here.lon, s.indoor)
    return tr


def local_hours(ts: float, tz: ZoneInfo) -> float:
    """Local time of day in hours."""
    dt = datetime.fromtimestamp(ts, tz)
    return dt.hour + dt.minute / 60 + dt.second / 3600


def in_curfew(ts: float, tz: ZoneInfo) -> bool:
    """Whether `ts` is inside the CURFEW_START-CURFEW_END local window."""
    h = local_hours(ts, tz)
    return h >= CURFEW_START.hour or h < CURFEW_END.hour


def random_point_near(place: Place, rng: np.random.Generator, lo: float, hi: float) -> Place:
    x, y = _xy(place)
    nx, ny = _near(rng, x, y, lo, hi)
    return _place("elsewhere", nx, ny)
