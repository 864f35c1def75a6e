"""The proximity search (near fixes, pruning, probes, whole tracks of the cases that may
match) gives exactly the answers of a brute-force scan over every fix, on a small
synthetic world made to hit the pruning's edges: gaps next to the place, cell fixes
with and without a precise fix within 10 minutes, fixes over 3 km, a case with two
devices (some of whose fixes share an instant), a device moved from one case to another
during the window."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from geofence import compile_zone
from probation.investigations import service
from probation.investigations.models import ProximityMatch

LAT0, LON0 = 51.13, 71.43  # away from the other tests' fixes
M_LAT = 111_195.0
M_LON = M_LAT * math.cos(math.radians(LAT0))
T0 = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
HOURS = 8


@dataclass
class Synth:
    cases: list[uuid.UUID]


def _track(rng: np.random.Generator, n_hours: int) -> list[tuple[datetime, float, float, float]]:
    """A person around a random spot within 3 km of the place: fixes 20-300 s apart with a
    few silences of 10-60 minutes; acc 5-80 m, sometimes a cell fix (0.4-2.8 km) and now
    and then one over 3 km."""
    cx, cy = rng.uniform(-3000, 3000, 2)
    vx, vy = rng.normal(0, 1.2, 2)
    t = -3600.0 + rng.uniform(0, 600)
    out = []
    x, y = cx, cy
    while t < (n_hours + 1) * 3600:
        t += rng.uniform(20, 300) if rng.random() > 0.03 else rng.uniform(600, 3600)
        x += vx * 60 + rng.normal(0, 40)
        y += vy * 60 + rng.normal(0, 40)
        if math.hypot(x - cx, y - cy) > 2500:
            vx, vy = -vx, -vy
        u = rng.random()
        acc = (rng.uniform(5, 30) if u < 0.75 else rng.uniform(30, 80) if u < 0.88
               else rng.uniform(400, 2800) if u < 0.98 else rng.uniform(3100, 5000))
        ex, ey = rng.normal(0, acc / 1.5, 2)
        ts = T0 + timedelta(seconds=round(t, 6))
        out.append((ts, LAT0 + (y + ey) / M_LAT, LON0 + (x + ex) / M_LON, acc))
    return out


def _build(url: str, n_cases: int = 40, seed: int = 5) -> Synth:
    rng = np.random.default_rng(seed)
    officer = uuid.uuid4()
    cases = [uuid.uuid4() for _ in range(n_cases)]
    devices = [uuid.uuid4() for _ in range(n_cases + 2)]
    before = T0 - timedelta(days=1)
    moved = T0 + timedelta(hours=3, minutes=17)
    assignments = [(devices[i], cases[i], before, None) for i in range(n_cases)]
    assignments[0] = (devices[0], cases[0], before, moved)  # device 0 moves to case 1 ...
    assignments.append((devices[0], cases[1], moved, None))
    assignments[1] = (devices[1], cases[1], before, moved)  # ... whose own device stops
    assignments.append((devices[n_cases], cases[2], before, None))  # case 2: two devices
    # devices[n_cases + 1] is never assigned: its fixes belong to nobody
    with psycopg.connect(url, autocommit=True) as c, c.cursor() as cur:
        cur.execute("INSERT INTO users (id, username, password_hash, role) "
                    "VALUES (%s, 'synth-officer', 'x', 'officer')", (officer,))
        for i, cid in enumerate(cases):
            cur.execute("INSERT INTO subjects (id, iin, full_name, birth_date) VALUES "
                        "(%s, %s, %s, %s)", (cid, f"9{i:011d}", f"S{i}", date(1990, 1, 1)))
            cur.execute("INSERT INTO cases (id, subject_id, officer_id, court_order_ref, "
                        "starts_on, ends_on, risk_level) VALUES (%s, %s, %s, 'B', "
                        "'2026-01-01', '2027-01-01', 'low')", (cid, cid, officer))
        for i, d in enumerate(devices):
            cur.execute("INSERT INTO devices (id, serial, kind) VALUES (%s, %s, 'bracelet')",
                        (d, f"SYN{i}"))
        for d, cid, a, u in assignments:
            cur.execute("INSERT INTO device_assignments (id, device_id, case_id, assigned_at, "
                        "unassigned_at) VALUES (%s, %s, %s, %s, %s)", (uuid.uuid4(), d, cid, a, u))
        rows = []
        tracks = {}
        for i, d in enumerate(devices):
            track = tracks[i] = _track(rng, HOURS)
            if i == 3:  # walks straight through the place's centre at 20 m
                track = [(T0 + timedelta(hours=2, seconds=30 * k), LAT0 + (-900 + 60 * k) / M_LAT,
                          LON0, 20.0) for k in range(31)]
            if i == 4:  # silent for 40 minutes 600 m from the place, then leaves
                track = [(T0 + timedelta(hours=1), LAT0, LON0 + 600 / M_LON, 10.0),
                         (T0 + timedelta(hours=1, minutes=40), LAT0, LON0 + 3000 / M_LON, 10.0)]
            if i == 5:  # only cell fixes on the place: nothing dominates them
                track = [(T0 + timedelta(hours=4, minutes=k), LAT0, LON0, 2000.0)
                         for k in range(0, 60, 2)]
            if i == 6:  # cell fixes on the place, each next to a GPS fix 3 km away
                track = [(T0 + timedelta(hours=5, minutes=k), LAT0 + (0 if k % 2 else 3000) / M_LAT,
                          LON0, 2000.0 if k % 2 else 15.0) for k in range(41)]
            if i == 7:  # one fix over 3 km on the place, then 40 silent minutes: nothing
                track = [(T0 + timedelta(hours=6), LAT0, LON0, 4000.0),
                         (T0 + timedelta(hours=6, minutes=40), LAT0, LON0 + 5000 / M_LON, 10.0)]
            if i == n_cases:  # case 2's second device: every third fix at an instant of its first
                track = [(tracks[2][k][0] if k % 3 == 0 and k < len(tracks[2]) else r[0], *r[1:])
                         for k, r in enumerate(track)]
            rows += [(d, 1000 + k, *r) for k, r in enumerate(track)]
        cur.executemany("INSERT INTO fixes (device_id, seq, ts, lat, lon, acc) "
                        "VALUES (%s, %s, %s, %s, %s, %s)", rows)
    return Synth(cases)


def _brute(url: str, place: Any, start: datetime, end: datetime,
           min_probability: float) -> list[ProximityMatch]:
    """Every fix read, each case's track put together in Python, the model applied."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    with psycopg.connect(url) as c:
        fixes = c.execute("SELECT device_id, ts, lat, lon, acc::float8 FROM fixes").fetchall()
        assignments = c.execute("SELECT da.device_id, da.case_id, c.subject_id, da.assigned_at, "
                                "da.unassigned_at FROM device_assignments da "
                                "JOIN cases c ON c.id = da.case_id").fetchall()
    per_case: dict[uuid.UUID, list[tuple[int, float, float, float]]] = {}
    subjects = {}
    for dev, case_id, subject_id, a, u in assignments:
        subjects[case_id] = subject_id
        for d, ts, lat, lon, acc in fixes:
            if d == dev and start <= ts < end and a <= ts and (u is None or ts < u):
                per_case.setdefault(case_id, []).append(
                    ((ts - epoch) // timedelta(microseconds=1), lat, lon, acc))
    found = []
    for case_id, rows in per_case.items():
        ts_us, lat, lon, acc = (np.array(col) for col in zip(*rows, strict=True))
        o = service.fix_order(ts_us.astype(np.int64), lat, lon, acc)
        track = service.from_full_track(case_id, subjects[case_id], ts_us[o] / 1e6, lat[o],
                                        lon[o], acc[o])
        m = service.match(place, track, start, end, min_probability)
        if m is not None:
            found.append(m)
    found.sort(key=lambda m: (-m.probability, m.closest.distance_m, str(m.case_id)))
    return found


def _search(url: str, place: Any, start: datetime, end: datetime,
            min_probability: float) -> list[ProximityMatch]:
    with psycopg.connect(url) as conn:
        return service.search(conn, place=place, start=start, end=end,
                              min_probability=min_probability)


def _square(half_m: float) -> dict[str, Any]:
    d_lat, d_lon = half_m / M_LAT, half_m / M_LON
    ring = [[LON0 - d_lon, LAT0 - d_lat], [LON0 + d_lon, LAT0 - d_lat],
            [LON0 + d_lon, LAT0 + d_lat], [LON0 - d_lon, LAT0 + d_lat],
            [LON0 - d_lon, LAT0 - d_lat]]
    return {"geometry": {"type": "Polygon", "coordinates": [ring]}}


@pytest.fixture
def synth(database_url: str) -> Synth:
    return _build(database_url)


@pytest.mark.parametrize(("place", "hours", "min_probability"), [
    ({"circle": {"center": [LON0, LAT0], "radius_m": 500}}, (0, HOURS), 0.01),
    ({"circle": {"center": [LON0, LAT0], "radius_m": 500}}, (1, 2), 0.01),
    ({"circle": {"center": [LON0 + 1500 / M_LON, LAT0], "radius_m": 2000}}, (0, HOURS), 0.0),
    ({"circle": {"center": [LON0, LAT0], "radius_m": 150}}, (2, 6), 0.3),
    (_square(400), (0, HOURS), 0.01),
])
def test_same_answers_as_a_scan_over_every_fix(
    synth: Synth, database_url: str, place: dict[str, Any], hours: tuple[int, int],
    min_probability: float,
) -> None:
    zone = compile_zone(zone_id="place", kind="exclusion", **place)
    start, end = T0 + timedelta(hours=hours[0]), T0 + timedelta(hours=hours[1])
    want = _brute(database_url, zone, start, end, min_probability)
    got = _search(database_url, zone, start, end, min_probability)
    assert want, "the synthetic world should give matches"
    assert [m.model_dump() for m in got] == [m.model_dump() for m in want]


def test_the_world_reaches_the_pruning_edges(synth: Synth, database_url: str) -> None:
    """The cases the equivalence test relies on: kept for a gap alone, for undominated cell
    fixes alone; and a case whose cell fixes on the place are all dominated, or whose only
    fix there is over 3 km, is left out."""
    zone = compile_zone(zone_id="place", kind="exclusion",
                        circle={"center": [LON0, LAT0], "radius_m": 500})
    got = {m.case_id: m for m in _search(database_url, zone, T0, T0 + timedelta(hours=HOURS),
                                         0.01)}
    walker, silent, cell, dominated, unusable = (synth.cases[k] for k in (3, 4, 5, 6, 7))
    assert got[walker].probability > 0.99
    assert got[silent].probability == 0.0 and any(g.near_place for g in got[silent].gaps)
    assert 0.0 < got[cell].probability < 0.1
    assert dominated not in got
    assert unusable not in got
