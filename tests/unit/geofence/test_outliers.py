"""Kinematic outliers (monitoring-rules.md, "Outliers"): each shape seen on real tracks."""

from __future__ import annotations

import numpy as np

from geofence.outliers import HELD, RELEASED, Carry, OutlierConfig, detect, outlier_mask
from tests.unit.geofence.helpers import ll

T0 = 1_700_000_000_000


def track(points: list[tuple[float, float, float]], acc: float = 10.0
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(seconds, x m, y m) -> ts, lat, lon, acc columns."""
    t = np.array([p[0] for p in points])
    lat, lon = ll(np.array([p[1] for p in points]), np.array([p[2] for p in points]))
    return (T0 + (t * 1000).astype(np.int64), np.asarray(lat, dtype=float),
            np.asarray(lon, dtype=float), np.full(t.shape[0], acc))


def still(t0: float, n: int, every: float = 30.0, x: float = 0.0, y: float = 0.0,
          jitter: float = 5.0, seed: int = 1) -> list[tuple[float, float, float]]:
    rng = np.random.default_rng(seed)
    return [(t0 + k * every, x + rng.normal(0, jitter), y + rng.normal(0, jitter))
            for k in range(n)]


def test_spike_out_and_back_at_implausible_speed_is_an_outlier() -> None:
    pts = [*still(0, 10), (300, 600.0, 0.0), *still(330, 10)]
    ts, lat, lon, acc = track(pts)
    flags = outlier_mask(ts, lat, lon, acc)
    assert flags.tolist() == [False] * 10 + [True] + [False] * 10


def test_short_excursion_leaving_and_returning_fast_is_all_outliers() -> None:
    # a cluster ~1 km away for 3 minutes, back 860 m+ in 30 s (issue 13)
    cluster = [(300 + 30 * k, 1000 + 5 * k, 20.0) for k in range(6)]
    pts = [*still(0, 10), *cluster, *still(480, 10)]
    ts, lat, lon, acc = track(pts)
    flags = outlier_mask(ts, lat, lon, acc)
    assert flags.tolist() == [False] * 10 + [True] * 6 + [False] * 10


def test_excursion_with_an_optimistic_acc_still_counts_speed_beyond_margins() -> None:
    # margins are subtracted: a 120 m hop with acc 50 m on both ends is no jump
    pts = [*still(0, 5), (150, 120.0, 0.0), *still(180, 5)]
    ts, lat, lon, _ = track(pts)
    assert not outlier_mask(ts, lat, lon, np.full(ts.shape[0], 50.0)).any()
    # with acc 3 m it is a departure from rest (2 minutes still, then 3.3 m/s beyond the
    # margins) straight back: an excursion, so an outlier (the departure rule)
    assert outlier_mask(ts, lat, lon, np.full(ts.shape[0], 3.0)).tolist() == \
        [False] * 5 + [True] + [False] * 5


def test_multipath_excursion_from_rest_at_a_bracelets_interval_is_outliers() -> None:
    # at 60 s a 420 m hop is a plausible leg for a car (< 10 m/s); from long rest it is a
    # departure, and a cluster that sits still there and comes back fast is multipath
    cluster = [(1800 + 60 * k, 420 + 3 * k, 0.0) for k in range(3)]
    pts = [*still(0, 30, every=60), *cluster, *still(1980, 5, every=60)]
    ts, lat, lon, _ = track(pts)
    flags = outlier_mask(ts, lat, lon, np.full(ts.shape[0], 40.0))
    assert flags.tolist() == [False] * 30 + [True] * 3 + [False] * 5


def test_a_departure_that_travels_on_is_no_outlier() -> None:
    drive = [(1800 + 60 * k, 420.0 * (k + 1), 0.0) for k in range(5)]
    pts = [*still(0, 30, every=60), *drive]
    ts, lat, lon, _ = track(pts)
    assert not outlier_mask(ts, lat, lon, np.full(ts.shape[0], 10.0)).any()


def test_a_short_stop_is_no_rest() -> None:
    # moving, a 30-second stop at a kerb (rest needs a minute), then a hop and back:
    # judged by the jump rule alone (plausible), not as a departure from rest
    pts = [(60 * k, 300.0 * k, 0.0) for k in range(5)] + [(270, 1200.0, 0.0),
                                                          (330, 1500.0, 0.0), (390, 1200.0, 0.0)]
    ts, lat, lon, _ = track(pts)
    assert not outlier_mask(ts, lat, lon, np.full(ts.shape[0], 10.0)).any()


def test_spike_after_a_gap_is_an_outlier_decided_at_the_next_fix() -> None:
    # 400 m away right after a 10-minute gap and back 30 s later (issue 13): reaching
    # it is plausible (the gap), leaving it is not, and the fixes around it agree. It is
    # flagged when the next fix comes, but it was not suspect when it arrived (no look
    # ahead): the rule that no single fix opens an episode keeps it quiet.
    pts = [*still(0, 5), (720, 400.0, 0.0), *still(750, 5)]
    ts, lat, lon, acc = track(pts)
    res = detect(np.array([0]), ts, lat, lon, acc)
    assert res.outlier.tolist() == [False] * 5 + [True] + [False] * 5
    assert not res.suspect.any()


def test_fast_driving_is_not_an_outlier() -> None:
    # accelerating to 30 m/s and cruising: every leg reachable from the one before
    v = [0, 5, 12, 20, 27, 30, 30, 30, 30, 30, 25, 15, 5, 0]
    x = np.concatenate([[0.0], np.cumsum(np.array(v[1:]) * 30.0)])
    pts = [(30.0 * k, float(x[k]), 0.0) for k in range(len(v))]
    ts, lat, lon, acc = track(pts)
    assert not outlier_mask(ts, lat, lon, acc).any()


def test_relocation_after_settling_counts_and_is_no_outlier() -> None:
    # a jump (a train, a tunnel) to a place the person then stays at
    pts = [*still(0, 5), *still(150, 20, x=3000.0, seed=2)]
    ts, lat, lon, acc = track(pts)
    res = detect(np.array([0]), ts, lat, lon, acc)
    assert not res.outlier.any()
    t = (ts - T0) / 1000
    # suspect from the jump until 300 s later, counted from then on
    assert res.suspect.tolist() == ((t >= 150) & (t < 450)).tolist()


def test_decisions_are_causal_across_batches() -> None:
    cluster = [(300 + 30 * k, 1000 + 5 * k, 20.0) for k in range(6)]
    pts = [*still(0, 10), *cluster, *still(480, 10)]
    ts, lat, lon, acc = track(pts)
    whole = detect(np.array([0]), ts, lat, lon, acc)
    carry: Carry | None = None
    suspect: list[bool] = []
    ranges: list[tuple[int, int, int]] = []
    for a in range(0, ts.shape[0], 3):  # batches of 3 fixes
        part = detect(np.array([0]), ts[a:a + 3], lat[a:a + 3], lon[a:a + 3], acc[a:a + 3],
                      carry)
        suspect += part.suspect.tolist()
        ranges += part.ranges
        carry = part.carry
    assert suspect == whole.suspect.tolist()
    assert ranges == whole.ranges == [(0, int(ts[10]), int(ts[16]))]


def test_groups_are_independent() -> None:
    a = track([*still(0, 5), (150, 700.0, 0.0), *still(180, 5)])
    b = track(still(0, 11, seed=3))
    cols = [np.concatenate([x, y]) for x, y in zip(a, b, strict=True)]
    res = detect(np.array([0, 11]), *cols)
    assert res.outlier.tolist() == [False] * 5 + [True] + [False] * 5 + [False] * 11


def _suspect(pts: list[tuple[float, float, float]], acc: list[float]) -> list[bool]:
    ts, lat, lon, _ = track(pts)
    res = detect(np.zeros(1, dtype=np.int64), ts, lat, lon, np.asarray(acc, dtype=float))
    return [bool(x) for x in res.suspect | res.outlier]


def test_a_walk_out_of_the_door_after_indoor_drift_is_no_departure() -> None:
    # 30 minutes indoors (acc 60 m) around the room, the last fixes drifted 150 m to one
    # side; then 30 s later a precise fix 30 m out of the door on the other side and a
    # walk on: a 180 m hop from the last fix, but the person rests around (0, 0), and
    # 30 m from there is a walk (the departure rule measures from where they rested)
    rest = still(0, 57, every=30.0, jitter=15.0)
    drift = [(1710.0, -75.0, 0.0), (1740.0, -150.0, 0.0), (1770.0, -150.0, 5.0)]
    walk = [(1800.0 + 30 * k, 30.0 + 40.0 * k, 0.0) for k in range(6)]
    acc = [60.0] * 60 + [8.0] * 6
    assert not any(_suspect([*rest, *drift, *walk], acc))


def test_a_slow_walk_is_no_rest() -> None:
    # walking at 1.1 m/s for 5 minutes with precise fixes (legs of 33 m at 30 s, over
    # their noise), then a 120 m leg: no departure from rest, nothing suspect
    walk = [(30.0 * k, 33.0 * k, 0.0) for k in range(11)]
    pts = [*walk, (330.0, 450.0, 0.0), (360.0, 480.0, 0.0)]
    assert not any(_suspect(pts, [10.0] * len(pts)))


def test_a_minute_of_rest_then_multipath_at_a_bracelets_interval_is_outliers() -> None:
    # arriving by car, one minute still (two fixes 60 s apart), then a cluster 400 m
    # away for three fixes that jumps straight back: rest needs only a minute
    drive = [(60.0 * k, -1500.0 + 300.0 * k, 0.0) for k in range(5)]
    rest = [(300.0, 0.0, 0.0), (360.0, 10.0, 0.0)]
    cluster = [(420.0 + 60 * k, 400.0 + 5 * k, 0.0) for k in range(3)]
    back = still(600, 5, every=60)
    ts, lat, lon, _ = track([*drive, *rest, *cluster, *back])
    flags = outlier_mask(ts, lat, lon, np.full(ts.shape[0], 40.0))
    assert flags.tolist() == [False] * 7 + [True] * 3 + [False] * 5


def test_a_rest_of_few_noisy_fixes_is_known_no_better_than_they_are() -> None:
    # a minute indoors (three fixes at 30 s, acc 65 m: where the person rests is known
    # to sqrt(3 * 65^2) / 3 = 38 m), then out of the door 110 m from the last fix in
    # 30 s to a precise fix 67 m from that mean, a walk round the block and back: a walk,
    # not a departure (measured from the mean with a 10 m margin it looked like one, and
    # the walk back made the whole walk an "excursion")
    rest = [(0.0, 0.0, 0.0), (30.0, 50.0, 0.0), (60.0, -40.0, 0.0)]
    walk = [(90.0 + 30 * k, 70.0 + 39.0 * k, 0.0) for k in range(4)]
    home = [(210.0 + 30 * k, 187.0 - 45.0 * (k + 1), 0.0) for k in range(4)]
    pts = [*rest, *walk, *home]
    acc = [65.0] * 3 + [9.0] * 8
    ts, lat, lon, _ = track(pts)
    cfg = OutlierConfig(rest_s=60.0)  # (the default; explicit: a minute of rest counts)
    res = detect(np.zeros(1, dtype=np.int64), ts, lat, lon, np.asarray(acc), None, cfg)
    assert not res.suspect.any() and not res.outlier.any()


def _held(pts: list[tuple[float, float, float]], acc: float, batch: int = 0
          ) -> tuple[list[int], list[bool]]:
    """Hold flags and final outlier flags, in one batch or in batches of ``batch``."""
    ts, lat, lon, a = track(pts, acc)
    if not batch:
        res = detect(np.zeros(1, dtype=np.int64), ts, lat, lon, a)
        return res.held.tolist(), outlier_mask(ts, lat, lon, a).tolist()
    carry: Carry | None = None
    held: list[int] = []
    for k in range(0, ts.shape[0], batch):
        part = detect(np.zeros(1, dtype=np.int64), ts[k:k + batch], lat[k:k + batch],
                      lon[k:k + batch], a[k:k + batch], carry)
        held += part.held.tolist()
        carry = part.carry
    return held, outlier_mask(ts, lat, lon, a).tolist()


def test_multipath_after_an_outage_is_held_then_outliers_when_it_jumps_back() -> None:
    # at rest, a 6-minute outage, then a cluster 300 m away (reaching it is plausible:
    # the gap) that sits still and jumps back in 60 s: held (counts, cannot confirm),
    # then outliers; the fix back is neither held nor a departure
    rest = still(0, 10, every=60)
    cluster = [(900.0 + 60 * k, 300.0 + 4 * k, 0.0) for k in range(3)]
    back = still(1080, 5, every=60, seed=2)
    held, out = _held([*rest, *cluster, *back], 10.0)
    assert held == [0] * 10 + [HELD] * 3 + [0] * 5
    assert out == [False] * 10 + [True] * 3 + [False] * 5


def test_a_departure_during_an_outage_that_walks_on_is_released() -> None:
    # the same reappearance 300 m away, but the person walks on (40 m a minute, over
    # the noise): released at the first leg that moves, where the held run confirms
    rest = still(0, 10, every=60)
    walk = [(900.0 + 60 * k, 300.0 + 80 * k, 0.0) for k in range(4)]
    held, out = _held([*rest, *walk], 10.0)
    assert held == [0] * 10 + [HELD, RELEASED, 0, 0]
    assert not any(out)


def test_a_departure_during_an_outage_that_walks_back_slowly_is_released() -> None:
    # two still fixes 150 m out, then home on foot (1.4 m/s): no jump back, so real
    rest = still(0, 10, every=60)
    out_there = [(900.0, 150.0, 0.0), (960.0, 152.0, 0.0)]
    home = [(1020.0, 66.0, 0.0), *still(1080, 3, every=60, seed=3)]
    held, out = _held([*rest, *out_there, *home], 10.0)
    assert held == [0] * 10 + [HELD, HELD, RELEASED] + [0] * 3
    assert not any(out)


def test_a_still_reappearance_is_released_after_settle_s() -> None:
    rest = still(0, 10, every=60)
    there = still(900, 8, every=60, x=500.0, seed=4)
    held, out = _held([*rest, *there], 10.0)
    # the hold began at 900 s: the fix at 1200 s (settle_s later) counts in full
    assert held == [0] * 10 + [HELD] * 5 + [RELEASED, 0, 0]
    assert not any(out)


def test_holds_are_the_same_whatever_the_batching() -> None:
    rest = still(0, 10, every=60)
    cluster = [(900.0 + 60 * k, 300.0 + 4 * k, 0.0) for k in range(3)]
    back = still(1080, 4, every=60, seed=2)
    walk = [(2400.0 + 60 * k, 300.0 + 80 * k, 0.0) for k in range(4)]
    pts = [*rest, *cluster, *back, *walk]
    whole, _ = _held(pts, 10.0)
    for b in (1, 2, 3, 5):
        assert _held(pts, 10.0, batch=b)[0] == whole
    assert whole.count(HELD) == 4 and whole.count(RELEASED) == 1


def test_a_device_that_reports_every_few_minutes_holds_nothing() -> None:
    # fixes every 5 minutes: every leg is a "gap", no outage to tell apart
    rest = still(0, 10, every=300)
    away = [(3300.0, 300.0, 0.0), (3600.0, 302.0, 0.0)]
    held, _ = _held([*rest, *away], 10.0)
    assert not any(held)


def test_a_hold_with_only_sparse_fixes_after_it_is_released_after_ten_minutes() -> None:
    # dense rest, an outage, a reappearance 300 m away, then a fix every 400 s there:
    # no short leg to judge by, so the hold ends 10 minutes after it began
    rest = still(0, 10, every=60)
    there = [(900.0 + 400 * k, 300.0 + 3 * k, 0.0) for k in range(3)]
    held, out = _held([*rest, *there], 10.0)
    assert held == [0] * 10 + [HELD, HELD, RELEASED]
    assert not any(out)


def test_an_outdoor_fix_after_an_indoor_rest_is_not_held() -> None:
    # rested indoors (acc 60 m), an outage, then 300 m away with acc 8 m: the receiver
    # went out, so did the person (an excursion keeps the indoor accuracy)
    rest = still(0, 10, every=60)
    there = [(900.0, 300.0, 0.0), (960.0, 302.0, 0.0), (1020.0, 301.0, 0.0)]
    ts, lat, lon, _ = track([*rest, *there])
    indoors_then_out = np.array([60.0] * 10 + [8.0] * 3)
    assert not detect(np.zeros(1, dtype=np.int64), ts, lat, lon, indoors_then_out).held.any()
    # the same with the indoor accuracy: held until the first outdoor fix releases it
    indoor_first = np.array([60.0] * 10 + [60.0, 60.0, 8.0])
    held = detect(np.zeros(1, dtype=np.int64), ts, lat, lon, indoor_first).held.tolist()
    assert held == [0] * 10 + [HELD, HELD, RELEASED]


def test_a_departure_runs_fixes_are_held_and_released_where_it_settles() -> None:
    # a brisk start from 5 minutes of rest (a departure), then wandering 200 m out for
    # 5 minutes: the departure's own fix counts, the run's fixes are held (they count but
    # cannot confirm; they used to be suspect: a real walk out never counted), and the
    # fix 5 minutes on, still away, releases them; nothing is an outlier
    wander = [(330.0 + 30 * k, 160.0 + 4 * (k % 3), 0.0) for k in range(12)]
    pts = [*still(0, 10), (300.0, 130.0, 0.0), *wander]
    for b in (0, 1, 4):
        held, out = _held(pts, 10.0, batch=b)
        assert held == [0] * 11 + [HELD] * 9 + [RELEASED, 0, 0]
        assert not any(out)
    ts, lat, lon, acc = track(pts)
    assert not detect(np.zeros(1, dtype=np.int64), ts, lat, lon, acc).suspect.any()


def test_a_brisk_walk_out_after_an_indoor_rest_is_no_departure() -> None:
    # Five minutes indoors (acc 60 m), then a brisk leg of 200 m in 30 s to a precise
    # outdoor fix (acc 8 m), three minutes 250 m out and back in: the receiver went out,
    # so did the person (as for holds: an excursion keeps the indoor accuracy). Every fix
    # counts; before session 13 this was a departure whose run came back within five
    # minutes, so a real 3-minute curfew break was taken for a multipath excursion.
    rest = still(0, 11, jitter=20.0)
    out = [(330.0 + 30 * k, 200.0 + (50.0 if k else 0.0) + 3 * k, 0.0) for k in range(7)]
    back = [(540.0, 180.0, 0.0), (570.0, 120.0, 0.0), (600.0, 60.0, 0.0)]
    pts = [*rest, *out, *back]
    ts, lat, lon, _ = track(pts)
    outdoors = np.array([60.0] * 11 + [8.0] * 10)
    res = detect(np.zeros(1, dtype=np.int64), ts, lat, lon, outdoors)
    assert not (res.suspect.any() or res.outlier.any() or res.held[:18].any())
    # (the brisk walk home from out there is a departure from an outdoor rest: it
    # travels on: settled at the next fix)
    assert res.held[18:].tolist() == [0, RELEASED, 0]
    # the same fixes with the indoor accuracy: a departure from rest whose fixes are held
    # (they cannot confirm) until the run settles or comes back
    indoors = np.full(len(pts), 60.0)
    res = detect(np.zeros(1, dtype=np.int64), ts, lat, lon, indoors)
    assert res.held.tolist() == [0] * 12 + [HELD] * 9
