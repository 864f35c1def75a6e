"""The ways real receivers raised false alarms (issue 13), through the engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from geofence import CaseZones, EngineState, FixBatch, ZoneEntry, compile_zone
from geofence.engine import advance_ex

from .helpers import circle_zone, ll

T0 = datetime(2026, 6, 15, 7, 0, tzinfo=UTC)
Pt = tuple[float, float, float]  # seconds, x, y (metres)


def world(confirm: dict[str, tuple[int | None, float | None]] | None = None) -> CaseZones:
    """Home (inclusion, r 150 m) at (0, 0), always active; a victim's home (exclusion,
    r 100 m) whose edge is 150 m east of home; a shop (exclusion, r 100 m) 1 km north."""
    zones = {
        "home": ZoneEntry.make(compile_zone(zone_id="home", kind="inclusion",
                                            circle=circle_zone(0, 0, 150))),
        "near": ZoneEntry.make(compile_zone(zone_id="near", kind="exclusion",
                                            circle=circle_zone(250, 0, 100))),
        "shop": ZoneEntry.make(compile_zone(zone_id="shop", kind="exclusion",
                                            circle=circle_zone(0, 1000, 100))),
    }
    return CaseZones({"c1": "Asia/Almaty"}, zones, {z: ["c1"] for z in zones}, confirm=confirm)


def still(t0: float, n: int, x: float = 0.0, y: float = 0.0, every: float = 30.0,
          seed: int = 1) -> list[Pt]:
    rng = np.random.default_rng(seed)
    return [(t0 + k * every, x + rng.normal(0, 5), y + rng.normal(0, 5)) for k in range(n)]


def run(reg: CaseZones, pts: list[Pt], acc: float = 10.0, per_batch: int = 4
        ) -> tuple[list[Any], list[tuple[str, int, int]]]:
    """Uploads of `per_batch` fixes; every transition and outlier range."""
    state = EngineState.empty()
    out: list[Any] = []
    ranges: list[tuple[str, int, int]] = []
    t0 = int(T0.timestamp() * 1000)
    for a in range(0, len(pts), per_batch):
        part = pts[a:a + per_batch]
        la, lo = ll(np.array([p[1] for p in part]), np.array([p[2] for p in part]))
        b = FixBatch.from_columns(
            reg, ["c1"] * len(part), ["d1"] * len(part),
            np.array([t0 + int(p[0] * 1000) for p in part], dtype=np.int64), la, lo,
            [acc] * len(part))
        state, tr, rg = advance_ex(state, b, reg)
        out += list(tr)
        ranges += rg
    return out, ranges


def kinds(trs: list[Any]) -> list[tuple[str, str, str]]:
    return [(t.kind, t.alert_type, t.zone_id) for t in trs]


def test_one_deep_fix_after_a_gap_opens_nothing() -> None:
    # home, a 4-minute gap, one fix 450 m away with a small acc, home again
    pts = [*still(0, 10), (510, -450.0, 0.0), *still(540, 10, seed=2)]
    trs, _ = run(world(), pts, acc=5.0)
    assert trs == []


def test_a_spike_through_a_zone_is_one_inferred_crossing_at_most() -> None:
    # the spike lies beyond the near zone: out and back both cross it; the way back
    # starts at a fix found to be a lone spike, so it is no segment
    pts = [*still(0, 10), (420, 500.0, 0.0), *still(450, 10, seed=3)]
    trs, ranges = run(world(), pts, per_batch=1)
    inferred = [t for t in trs if t.inferred and t.kind == "open"]
    assert len(inferred) <= 1
    assert not [t for t in trs if not t.inferred]
    t0 = int(T0.timestamp() * 1000)
    assert ranges == [("d1", t0 + 420_000, t0 + 450_000)]


def test_a_short_cluster_far_away_that_jumps_back_is_outliers() -> None:
    # ~1 km north (in the shop) for 3 minutes, back 1 km in 30 s: never an alert
    cluster = [(300 + 30 * k, 5.0 * k, 1000.0) for k in range(6)]
    pts = [*still(0, 10), *cluster, *still(480, 10, seed=4)]
    trs, ranges = run(world(), pts)
    assert trs == []
    t0 = int(T0.timestamp() * 1000)
    assert ranges == [("d1", t0 + 300_000, t0 + 480_000)]


def test_drift_at_the_edge_of_a_zone_the_person_stays_in_is_one_alert() -> None:
    # walk into the shop and stay near its edge: single fixes drift just outside
    rng = np.random.default_rng(5)
    walk_in = [(30.0 * k, 0.0, 600.0 + 40.0 * k) for k in range(10)]  # reaches y = 960
    stay: list[Pt] = []
    for k in range(60):
        y = 915.0 + rng.normal(0, 5)
        if k % 7 == 3:
            y = 870.0  # one fix definitely outside (edge at 900, margin 10)
        stay.append((300.0 + 30 * k, rng.normal(0, 5), y))
    trs, _ = run(world(), [*walk_in, *stay])
    shop = [k for k in kinds(trs) if k[2] == "shop" and k[0] in ("open", "close")]
    assert shop == [("open", "exclusion_zone_entered", "shop")]


def test_a_real_entry_opens_at_the_second_fix_inside() -> None:
    walk_in = [(30.0 * k, 0.0, 600.0 + 40.0 * k) for k in range(15)]
    trs, _ = run(world(), walk_in, per_batch=1)
    opens = [t for t in trs if t.kind == "open" and t.zone_id == "shop"]
    assert len(opens) == 1
    # fixes inside (deeper than the 10 m margin): y >= 910, i.e. k >= 8 (y = 920)
    assert opens[0].at == int((T0 + timedelta(seconds=30 * 9)).timestamp() * 1000)
    assert opens[0].started_at == int((T0 + timedelta(seconds=30 * 8)).timestamp() * 1000)


def test_confirmation_is_configurable_per_case() -> None:
    walk_in = [(30.0 * k, 0.0, 600.0 + 40.0 * k) for k in range(15)]
    trs, _ = run(world({"c1": (3, 90)}), walk_in, per_batch=2)
    opens = [t for t in trs if t.kind == "open" and t.zone_id == "shop"]
    assert len(opens) == 1
    # three fixes inside spanning 90 s: k = 8 .. 11
    assert opens[0].at == int((T0 + timedelta(seconds=30 * 11)).timestamp() * 1000)


def test_closing_needs_sustained_evidence() -> None:
    # inside the shop, one fix outside, inside again: the episode stays open; then
    # really out for two minutes: it closes at the first fix outside
    inside = [(30.0 * k, 0.0, 1000.0) for k in range(6)]
    blip = [(180.0, 0.0, 850.0)]
    back = [(210.0 + 30 * k, 0.0, 1000.0) for k in range(4)]
    leave = [(330.0 + 30 * k, 0.0, 1000.0 - 40.0 * (k + 1)) for k in range(10)]
    trs, _ = run(world(), [*inside, *blip, *back, *leave])
    shop = [t for t in trs if t.zone_id == "shop" and t.kind in ("open", "close")]
    assert [t.kind for t in shop] == ["open", "close"]


def test_passing_through_with_one_definite_fix_inside_is_an_inferred_crossing() -> None:
    # 3.3 m/s across the shop: one fix deep inside, its neighbours within the margin
    walk_in = [(30.0 * k, 0.0, 700.0 + 100.0 * k) for k in range(8)]  # y 900 at k = 2
    trs, _ = run(world(), walk_in, acc=20.0)
    shop = [t for t in trs if t.zone_id == "shop"]
    assert [(t.kind, t.inferred) for t in shop] == [("open", True), ("close", True)]
    assert shop[0].started_at == int((T0 + timedelta(seconds=90)).timestamp() * 1000)


def test_one_fix_in_a_zone_and_back_where_it_came_from_is_no_crossing() -> None:
    # a single fix in the shop 4 minutes after leaving home, then home again 30 s
    # later: out and back, not a transit
    pts = [*still(0, 5), (360, 0.0, 1000.0), *still(390, 5, seed=6)]
    trs, _ = run(world(), pts, acc=20.0)
    assert [t for t in trs if t.zone_id == "shop"] == []


def _walk_out_and_back() -> list[Pt]:
    """Five minutes at home, a brisk start west (a departure from rest), five minutes
    50 m beyond home's edge, then slowly back in: a real curfew break."""
    out = [(330.0, -165.0, 0.0), (360.0, -190.0, 0.0), *[(390.0 + 30 * k, -200.0 - 2 * k, 0.0)
                                                        for k in range(6)], (570.0, -180.0, 0.0)]
    back = [(600.0, -150.0, 0.0), (630.0, -120.0, 0.0), *still(660, 8, x=-10.0, seed=5)]
    return [*still(0, 10), (300.0, -130.0, 0.0), *out, *back]


def test_a_walk_out_that_began_as_a_departure_opens_where_it_settles() -> None:
    # The departure's fixes count but cannot confirm (a multipath excursion from rest
    # looks the same at first); 5 minutes on it has not come back: it was real, and the
    # fix that settles it (on the edge, uncertain) confirms the held run behind it.
    for per_batch in (1, 4, 40):
        trs, ranges = run(world(), _walk_out_and_back(), per_batch=per_batch)
        opens = [t for t in trs if t.kind == "open"]
        assert [(t.alert_type, t.zone_id) for t in opens] == [("inclusion_zone_left", "home")]
        t0 = int(T0.timestamp() * 1000)
        assert opens[0].at == t0 + 600_000  # the settling fix
        assert opens[0].started_at == t0 + 330_000  # the first fix outside
        assert ranges == []


def test_a_departure_back_home_across_a_gap_is_an_excursion() -> None:
    # A hop 300 m out from rest (multipath), one more fix there, an outage of 6.5 minutes,
    # then home: the leg back is slow only because of the gap, so it is a return, and
    # the two fixes out there are outliers that never open (nor does the settling rule
    # confirm them: the person did not stay away).
    pts = [*still(0, 10), (300.0, -300.0, 0.0), (330.0, -302.0, 3.0), *still(720, 10, seed=6)]
    trs, ranges = run(world(), pts, per_batch=1)
    assert [t for t in trs if t.kind == "open"] == []
    t0 = int(T0.timestamp() * 1000)
    assert ranges == [("d1", t0 + 300_000, t0 + 720_000)]
