"""Short trajectories with known truth (pure, no servers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from geofence import (
    CaseZones,
    EngineState,
    Fix,
    FixBatch,
    Transitions,
    ZoneEntry,
    advance,
    close_inactive,
    compile_zone,
    open_at_window_start,
)

from .helpers import circle_zone, ll, square

CURFEW = {
    "windows": [
        {
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "start": "22:00",
            "end": "06:00",
        }
    ]
}
# Monday 2026-06-15, Asia/Almaty is UTC+5: 23:10 local = 18:10 UTC.
T_DAY = datetime(2026, 6, 15, 7, 0, tzinfo=UTC)  # 12:00 local
T_2310 = datetime(2026, 6, 15, 18, 10, tzinfo=UTC)


def ms(d: datetime) -> int:
    return int(d.timestamp() * 1000)


def world(exceptions: list[dict[str, Any]] | None = None, buffer_m: float = 0.0) -> CaseZones:
    """Case c1: home square (half-size 50 m) at (0, 0) with a curfew; exclusion square
    (half-size 200 m) at (2000, 0); small exclusion circle (r 60 m) at (0, 3000)."""
    zones = {
        "home": ZoneEntry.make(
            compile_zone(zone_id="home", kind="inclusion", geometry=square(0, 0, 50)),
            CURFEW,
            exceptions,
        ),
        "victim": ZoneEntry.make(
            compile_zone(
                zone_id="victim", kind="exclusion", geometry=square(2000, 0, 200), buffer_m=buffer_m
            ),
            None,
            exceptions,
        ),
        "kiosk": ZoneEntry.make(
            compile_zone(zone_id="kiosk", kind="exclusion", circle=circle_zone(0, 3000, 60))
        ),
    }
    return CaseZones({"c1": "Asia/Almaty"}, zones, {z: ["c1"] for z in zones})


def batch(
    reg: CaseZones, pts: list[tuple[datetime, float, float, float]], dev: str = "d1"
) -> FixBatch:
    ts = np.array([ms(t) for t, *_ in pts], dtype=np.int64)
    la, lo = ll(np.array([p[1] for p in pts]), np.array([p[2] for p in pts]))
    return FixBatch.from_columns(
        reg, ["c1"] * len(pts), [dev] * len(pts), ts, la, lo, [p[3] for p in pts]
    )


def run(
    reg: CaseZones,
    pts: list[tuple[datetime, float, float, float]],
    state: EngineState | None = None,
) -> tuple[EngineState, list[Any]]:
    st, tr = advance(state or EngineState.empty(), batch(reg, pts), reg)
    return st, list(tr)


def walk(
    t0: datetime,
    xy: list[tuple[float, float]],
    acc: float = 10.0,
    step: timedelta = timedelta(seconds=30),
) -> list[tuple[datetime, float, float, float]]:
    return [(t0 + i * step, x, y, acc) for i, (x, y) in enumerate(xy)]


def line(a: tuple[float, float], b: tuple[float, float], n: int) -> list[tuple[float, float]]:
    return [
        (a[0] + (b[0] - a[0]) * k / (n - 1), a[1] + (b[1] - a[1]) * k / (n - 1)) for k in range(n)
    ]


def kinds(trs: list[Any]) -> list[tuple[str, str]]:
    return [(t.kind, t.alert_type) for t in trs]


def test_jitter_around_boundary_raises_nothing() -> None:
    reg = world()
    rng = np.random.default_rng(1)
    # The victim zone's west edge is at x = 1800; fixes jitter +-15 m around it, acc 15 m.
    pts = walk(
        T_DAY, [(1800 + rng.uniform(-15, 15), rng.uniform(-100, 100)) for _ in range(200)], acc=15.0
    )
    _, trs = run(reg, pts)
    assert trs == []


def test_walk_into_exclusion_zone_one_alert_then_close() -> None:
    reg = world()
    path = line((1500, 0), (2100, 0), 21) + line((2100, 0), (1500, 0), 21)  # 300 m inside
    _, trs = run(reg, walk(T_DAY, path))
    assert kinds(trs) == [("open", "exclusion_zone_entered"), ("close", "exclusion_zone_entered")]
    op, cl = trs
    assert op.severity == "critical" and not op.inferred
    assert op.first_fix.ts <= op.at and op.started_at == op.first_fix.ts
    assert cl.max_depth_m == pytest.approx(190.0, abs=0.5)  # fix at x = 2010: 190 m from an edge
    assert cl.ended_at is not None and cl.started_at < cl.ended_at <= cl.at


def test_an_hour_inside_is_one_alert_with_updates() -> None:
    reg = world()
    state = EngineState.empty()
    all_trs: list[Any] = []
    t = T_DAY
    rng = np.random.default_rng(2)
    for _ in range(12):  # 12 batches of 5 minutes, a fix every 30 s
        pts = walk(t, [(2000 + rng.normal(0, 20), rng.normal(0, 20)) for _ in range(10)])
        state, trs = run(reg, pts, state)
        all_trs += trs
        t += timedelta(minutes=5)
    k = kinds(all_trs)
    assert k.count(("open", "exclusion_zone_entered")) == 1
    # One update per batch (the first batch's fixes after the opening one included).
    assert k.count(("update", "exclusion_zone_entered")) == 12
    assert ("close", "exclusion_zone_entered") not in k
    last = all_trs[-1]
    assert last.kind == "update" and last.started_at == all_trs[0].started_at
    assert state.open_episodes()[0].status == "open"


def test_curfew_broken_at_2310_almaty() -> None:
    reg = world()
    # At home until 23:08, then walks away 600 m.
    pts = walk(T_2310 - timedelta(minutes=10), [(0, 0)] * 16 + line((0, 0), (600, 0), 20))
    _, trs = run(reg, pts)
    assert kinds(trs) == [("open", "inclusion_zone_left"), ("update", "inclusion_zone_left")]
    assert trs[0].severity == "high"
    assert trs[0].at > ms(T_2310 - timedelta(minutes=3))
    # The same walk at noon is fine (curfew inactive).
    _, trs = run(reg, walk(T_DAY, [(0, 0)] * 16 + line((0, 0), (600, 0), 20)))
    assert trs == []


def test_same_walk_during_approved_exception_raises_nothing() -> None:
    exc = [
        {
            "from": (T_2310 - timedelta(hours=1)).isoformat(),
            "to": (T_2310 + timedelta(hours=2)).isoformat(),
            "reason": "hospital",
        }
    ]
    reg = world(exceptions=exc)
    pts = walk(T_2310 - timedelta(minutes=10), [(0, 0)] * 16 + line((0, 0), (600, 0), 20))
    _, trs = run(reg, pts)
    assert trs == []
    # The exclusion zone also has the exception: walking through it raises nothing.
    path = line((1500, 0), (2100, 0), 21) + line((2100, 0), (1500, 0), 21)
    _, trs = run(reg, walk(T_2310 - timedelta(minutes=10), path))
    assert trs == []


def test_cell_tower_jump_raises_nothing() -> None:
    reg = world()
    # Inside curfew, at home, one 1500 m-accuracy fix 2 km away, then home again.
    pts = walk(T_2310, [(0, 0)] * 5 + [(2000, 0)] + [(0, 0)] * 5)
    pts[5] = (pts[5][0], 2000.0, 0.0, 1500.0)
    _, trs = run(reg, pts)
    assert trs == []
    # Two consecutive cell-tower fixes right in the exclusion zone do not open either.
    pts = walk(T_DAY, [(1000, 0), (2000, 0), (2000, 0), (1000, 0)], acc=600.0)
    _, trs = run(reg, pts)
    assert trs == []


def test_weak_fixes_keep_an_open_episode() -> None:
    big = compile_zone(zone_id="park", kind="exclusion", geometry=square(0, 0, 2000))
    reg = CaseZones({"c1": None}, {"park": ZoneEntry.make(big)}, {"park": ["c1"]})
    # Open with good fixes, then acc 600 m fixes 1500 m deep (definitely inside), then a
    # good fix outside and a 600 m fix far outside: the weak fix inside reset the count.
    path = [(0, 0), (0, 0), (0, 900), (0, 900), (0, 3000), (0, 900), (0, 3000), (0, 4000)]
    acc = [10.0, 10.0, 600.0, 600.0, 10.0, 600.0, 10.0, 600.0]
    pts = [
        (T_DAY + timedelta(minutes=i), x, y, a)
        for i, ((x, y), a) in enumerate(zip(path, acc, strict=True))
    ]
    _, trs = run(reg, pts)
    assert kinds(trs) == [("open", "exclusion_zone_entered"), ("close", "exclusion_zone_entered")]
    assert trs[1].last_fix.ts == ms(pts[5][0]) and trs[1].last_fix.acc == 600.0
    assert trs[1].ended_at == ms(pts[6][0]) and trs[1].at == ms(pts[7][0])
    # Weak fixes alone never open.
    _, trs = run(reg, [(T_DAY + timedelta(minutes=i), 0.0, 0.0, 600.0) for i in range(5)])
    assert trs == []


def test_sparse_fixes_jumping_over_a_small_zone() -> None:
    reg = world()
    # 3 minutes apart, 150 m either side of the kiosk (r 60 m) at (0, 3000).
    t = T_DAY
    pts = [(t, -150.0, 3000.0, 8.0), (t + timedelta(minutes=3), 150.0, 3000.0, 8.0)]
    _, trs = run(reg, pts)
    assert kinds(trs) == [("open", "exclusion_zone_entered"), ("close", "exclusion_zone_entered")]
    assert all(x.inferred for x in trs) and trs[0].severity == "high"
    assert trs[0].started_at == ms(t) and trs[0].ended_at == ms(t + timedelta(minutes=3))
    assert trs[0].max_depth_m > 10.0
    one_batch = [t.to_dict() for t in trs]
    # 11 minutes apart: too sparse to infer; a path missing the zone: nothing.
    _, trs = run(reg, [(t, -150.0, 3000.0, 8.0), (t + timedelta(minutes=11), 150.0, 3000.0, 8.0)])
    assert trs == []
    _, trs = run(reg, [(t, -150.0, 3100.0, 8.0), (t + timedelta(minutes=3), 150.0, 3100.0, 8.0)])
    assert trs == []
    # Across two batches (the first fix comes from the saved state).
    st, trs1 = run(reg, pts[:1])
    st, trs2 = run(reg, pts[1:], EngineState.from_dict(json.loads(json.dumps(st.to_dict()))))
    assert trs1 == [] and [t.to_dict() for t in trs2] == one_batch


def test_zone_becoming_inactive_closes_inclusion_episode() -> None:
    reg = world()
    # Away from home from 05:40 to 06:20 local (00:40-01:20 UTC on the 16th).
    t0 = datetime(2026, 6, 16, 0, 40, tzinfo=UTC)
    pts = walk(t0, [(500, 0)] * 80, step=timedelta(seconds=30))
    _, trs = run(reg, pts)
    assert kinds(trs) == [("open", "inclusion_zone_left"), ("close", "inclusion_zone_left")]
    end = ms(datetime(2026, 6, 16, 1, 0, tzinfo=UTC))  # 06:00 local
    assert trs[1].ended_at == end and trs[1].at == end
    # Without further fixes, close_inactive does it.
    st, trs = run(reg, pts[:10])
    assert kinds(trs) == [("open", "inclusion_zone_left"), ("update", "inclusion_zone_left")]
    st2, trs = close_inactive(st, reg, end - 1)
    assert len(trs) == 0 and st2.n_episodes == 1
    st3, trs = close_inactive(st, reg, end + 60_000)
    assert kinds(list(trs)) == [("close", "inclusion_zone_left")]
    assert next(iter(trs)).ended_at == end and st3.n_episodes == 0


def test_approach_buffer() -> None:
    reg = world(buffer_m=150.0)
    # Stand 100 m outside the victim zone (in the 150 m buffer) for a while, then walk
    # away (closing needs two fixes outside the ring spanning 60 s).
    pts = walk(T_DAY, [(1700, 0)] * 6 + line((1700, 0), (1000, 0), 8) + [(1000, 0)] * 3,
               acc=10.0)
    _, trs = run(reg, pts)
    got = kinds(trs)
    assert got.count(("open", "exclusion_zone_approach")) == 1
    assert got.count(("close", "exclusion_zone_approach")) == 1
    assert trs[0].severity == "medium"
    assert ("open", "exclusion_zone_entered") not in got


def test_curfew_start_with_last_fix_outside() -> None:
    reg = world()
    start = ms(datetime(2026, 6, 15, 17, 0, tzinfo=UTC))  # 22:00 local
    la, lo = ll(400.0, 0.0)
    st, trs = open_at_window_start(
        EngineState.empty(),
        reg,
        device_id="d1",
        case_id="c1",
        zone_id="home",
        window_start_ms=start,
        last_fix=Fix(start - 60_000, float(la), float(lo), 10.0),
    )
    assert kinds(list(trs)) == [("open", "inclusion_zone_left")]
    # Later fixes outside update it (no second open), coming home closes it (two fixes
    # inside spanning 60 s).
    st, trs2 = run(
        reg, walk(datetime(2026, 6, 15, 17, 5, tzinfo=UTC),
                  [(400, 0)] * 3 + line((400, 0), (0, 0), 6) + [(0, 0)] * 3), st
    )
    assert kinds(trs2) == [("close", "inclusion_zone_left")]
    assert trs2[0].started_at == start


def trajectory() -> list[tuple[datetime, float, float, float]]:
    rng = np.random.default_rng(7)
    path = (
        [(0, 0)] * 20
        + line((0, 0), (2000, 0), 40)
        + [(2000 + rng.normal(0, 10), 0)] * 30
        + line((2000, 0), (0, 0), 40)
        + [(0, 0)] * 20
    )
    return walk(T_2310 - timedelta(minutes=15), path, acc=12.0)


def test_determinism() -> None:
    reg = world(buffer_m=100.0)
    pts = trajectory()
    a = run(reg, pts)
    b = run(reg, list(reversed(pts)))  # arrival order does not matter
    assert [t.to_dict() for t in a[1]] == [t.to_dict() for t in b[1]]
    assert a[0].to_dict() == b[0].to_dict()
    assert len(a[1]) > 0


def test_resume_from_serialised_state_mid_trajectory() -> None:
    reg = world(buffer_m=100.0)
    pts = trajectory()
    one_state, one = run(reg, pts)
    for cut in (10, 45, 70, 100, 140):
        st, first = run(reg, pts[:cut])
        saved = json.loads(json.dumps(st.to_dict()))
        st_a, rest_a = run(reg, pts[cut:], EngineState.from_dict(saved))
        _, rest_b = run(reg, pts[cut:], st)
        assert [t.to_dict() for t in rest_a] == [t.to_dict() for t in rest_b]
        both = [t for t in first + rest_a if t.kind != "update"]
        assert [t.to_dict() for t in both] == [t.to_dict() for t in one if t.kind != "update"]
        assert st_a.to_dict() == one_state.to_dict()


def test_late_batch_refed_from_saved_state_reproduces_the_open() -> None:
    reg = world()
    path = line((1500, 0), (2000, 0), 11) + [(2000, 0)] * 10 + line((2000, 0), (1500, 0), 11)
    pts = walk(T_DAY, path)
    # Live: the device uploads fixes 0-4, then is out of coverage; later fixes 20-31 arrive
    # first, the buffered 5-19 arrive last (late).
    s0, tr0 = run(reg, pts[:5])
    saved = s0.to_dict()  # snapshot at the batch boundary
    _, tr1 = run(reg, pts[20:], s0)
    live = kinds(tr0 + tr1)
    # Re-evaluation: from the snapshot, the late fixes and everything after them.
    s2, tr2 = run(reg, pts[5:], EngineState.from_dict(saved))
    full_state, full = run(reg, pts)
    assert [t.to_dict() for t in tr2 if t.kind != "update"] == [
        t.to_dict() for t in full if t.kind != "update"
    ]
    assert ("open", "exclusion_zone_entered") in kinds(tr2)
    assert s2.to_dict() == full_state.to_dict()
    assert live.count(("open", "exclusion_zone_entered")) <= 1


def test_state_serialisation_per_device() -> None:
    reg = world()
    pts = walk(T_DAY, [(2000, 0)] * 3)
    st, _ = run(reg, pts)
    st2, _ = run(reg, walk(T_DAY, [(1900, 0)] * 3), EngineState.empty())
    st2b, _ = advance(EngineState.empty(), batch(reg, walk(T_DAY, [(1900, 0)] * 3), dev="d2"), reg)
    per_dev = st.device_state("d1")
    assert per_dev["episodes"][0]["alert_type"] == "exclusion_zone_entered"
    json.dumps(per_dev)
    merged = st.replace_devices(st2b)
    assert set(merged.device_ids()) == {"d1", "d2"}
    back = EngineState.from_device_states({d: merged.device_state(d) for d in merged.device_ids()})
    assert back.to_dict() == merged.to_dict()
    assert isinstance(Transitions.empty(), Transitions)
    assert st2.n_episodes == 1


def _fix_by_fix(reg: CaseZones, pts: list[tuple[datetime, float, float, float]]) -> list[Any]:
    """One batch per fix (as a live device sends them), through a stored state."""
    state, out = EngineState.empty(), []
    for p in pts:
        state, trs = run(reg, [p], state)
        out += trs
        state = EngineState.from_dict(state.to_dict())
    return out


def test_multipath_after_an_outage_during_curfew_raises_nothing() -> None:
    # at home in curfew, a 6-minute outage, then three fixes 300 m out (acc 10 m, still)
    # that jump straight back: the held fixes count but cannot confirm (issue 13)
    reg = world()
    t0 = T_2310 + timedelta(minutes=10)
    home = walk(t0, [(0, 0)] * 10, step=timedelta(seconds=60))
    away = walk(t0 + timedelta(minutes=15), [(300, 0), (302, 3), (299, -2)],
                step=timedelta(seconds=60))
    back = walk(t0 + timedelta(minutes=18), [(0, 0)] * 5, step=timedelta(seconds=60))
    pts = home + away + back
    assert run(reg, pts)[1] == []
    assert _fix_by_fix(reg, pts) == []


def test_a_short_break_during_an_outage_walked_back_is_one_alert_from_its_first_fix() -> None:
    # the same reappearance, 150 m out for two fixes, then home on foot: released by the
    # walk back, the held run opens (dated from its first fix) and the walk home closes it
    reg = world()
    t0 = T_2310 + timedelta(minutes=10)
    home = walk(t0, [(0, 0)] * 10, step=timedelta(seconds=60))
    away = walk(t0 + timedelta(minutes=15), [(150, 0), (152, 2)], step=timedelta(seconds=60))
    back = walk(t0 + timedelta(minutes=17), [(66, 0), (0, 0), (0, 0), (0, 0)],
                step=timedelta(seconds=60))
    pts = home + away + back
    for trs in (run(reg, pts)[1], _fix_by_fix(reg, pts)):
        assert kinds(trs) == [("open", "inclusion_zone_left"), ("close", "inclusion_zone_left")]
        assert trs[0].first_fix.ts == ms(t0 + timedelta(minutes=15))
        assert trs[0].at == ms(t0 + timedelta(minutes=17))
