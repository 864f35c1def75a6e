"""The simulator's world, GPS model, rules and loop, offline (no broker, no API)."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from simulator.geo import CITY, Zone, haversine_m
from simulator.gps import SRC_CELL, SRC_WIFI, GpsModel
from simulator.people import (
    build_trajectory,
    in_curfew,
    make_people,
    plan_stays,
    routine_polylines,
)
from simulator.run import SimConfig, Simulator, TruthWriter, _Answer, resolve_start
from simulator.score import Alert, load_truth, score
from simulator.setup import Registered, serials
from simulator.violations import (
    C0,
    C1,
    O0,
    O1,
    SYM_I,
    SYM_R,
    SYM_U,
    SYM_W,
    SYM_X,
    Rates,
    RuleEvaluator,
    symbols,
)

TZ = ZoneInfo("Asia/Almaty")


def test_people_are_deterministic_and_exclusion_zones_are_away_from_routines() -> None:
    a = make_people(40, np.random.default_rng(5))
    b = make_people(40, np.random.default_rng(5))
    assert [(p.home, p.exclusion) for p in a] == [(p.home, p.exclusion) for p in b]
    for p in a:
        assert 150 <= p.home_radius_m <= 250
        assert 100 <= p.exclusion.extent_m() <= 350
        z = p.exclusion
        for line in routine_polylines(p):
            pts = np.linspace(0, 1, 200)
            for (ax, ay), (bx, by) in itertools.pairwise(line):
                la, lo = CITY.to_latlon(ax + (bx - ax) * pts, ay + (by - ay) * pts)
                assert z.signed_distance(la, lo).min() > 1_000


def test_routines_keep_people_home_during_the_curfew_and_move_at_plausible_speeds() -> None:
    rng = np.random.default_rng(2)
    for p in make_people(30, rng):
        stays = plan_stays(p, date(2025, 11, 17), 7, TZ, rng)  # a whole week
        tr = build_trajectory(p, stays, [], rng)
        t = np.arange(tr.t[0], tr.end, 60.0)
        la, lo = tr.position(t)
        d = haversine_m(la, lo, p.home.lat, p.home.lon)
        night = np.array([in_curfew(x, TZ) for x in t])
        assert (d[night] < p.home_radius_m - 50).all()
        step = haversine_m(la[1:], lo[1:], la[:-1], lo[:-1]) / 60
        assert step.max() < 20  # m/s: nobody teleports
        assert d.max() > 500 or p.work is None  # people do go out


def test_gps_accuracy_and_error_are_realistic() -> None:
    n = 20_000
    g = GpsModel(n, 11)
    dev = np.arange(n)
    lat = np.full(n, 43.25)
    lon = np.full(n, 76.9)
    out = g.observe(dev, np.zeros(n), lat, lon, np.zeros(n, dtype=bool))
    gps = out.src != SRC_CELL
    assert np.mean((out.acc[gps] >= 5) & (out.acc[gps] <= 20)) > 0.85
    err = haversine_m(out.lat, out.lon, lat, lon)
    assert 0.62 < np.mean(err[gps] <= out.acc[gps]) < 0.74  # acc is the 68 % radius
    cell = out.src == SRC_CELL
    assert 0.002 < cell.mean() < 0.01
    assert (out.acc[cell] >= 1000).all() and (out.acc[cell] <= 3000).all()
    indoor = g.observe(dev, np.full(n, 3600.0), lat, lon, np.ones(n, dtype=bool))
    gi = indoor.src != SRC_CELL
    assert (indoor.acc[gi] >= 30).all() and (indoor.acc[gi] <= 80).all()
    assert 0.3 < np.mean(indoor.src == SRC_WIFI) < 0.5
    assert 0.02 < np.mean(indoor.src == SRC_CELL) < 0.04


def test_gps_noise_does_not_depend_on_batching() -> None:
    def run(batches: list[list[int]]) -> dict[int, list[float]]:
        g = GpsModel(6, 3)
        out: dict[int, list[float]] = defaultdict(list)
        for b in batches:
            dev = np.array(b)
            t = np.array([60.0 * len(out[d]) for d in b])  # each device's n-th fix at 60 n s
            o = g.observe(dev, t, np.full(dev.size, 43.2),
                          np.full(dev.size, 76.9), np.zeros(dev.size, dtype=bool))
            for d, la in zip(b, o.lat, strict=True):
                out[d].append(float(la))
        return out

    a = run([[0, 1, 2, 3, 4, 5]] * 3)
    b = run([[5, 3, 1], [0, 2, 4], [5, 3, 1], [0, 2, 4], [0, 1, 2, 3, 4, 5]])
    assert a == b


def test_rule_symbols_follow_the_monitoring_rules() -> None:
    depth = np.array([-50.0, -5, 5, 30, 150, 30, 2000, 30])
    acc = np.array([20.0, 8, 8, 20, 20, 20, 1500, 20])
    active = np.array([True] * 7 + [False])
    # 150 m deep is W, not an opening of its own: no single fix opens a violation
    assert symbols(depth, acc, active).tolist() == [SYM_R, SYM_U, SYM_U, SYM_W, SYM_W, SYM_W,
                                                   SYM_X, SYM_I]


def _evaluator(radius: float = 200.0) -> tuple[RuleEvaluator, Any]:
    p = make_people(1, np.random.default_rng(1))[0]
    p.home_radius_m = radius
    p.exclusion = Zone(lat=43.30, lon=76.95, radius_m=200)
    return RuleEvaluator([p], TZ), p


def _step(ev: RuleEvaluator, p: Any, t: float, dist_m: float, acc: float, bearing: float = 0.0
          ) -> list[Any]:
    lat = p.home.lat + dist_m * np.cos(np.radians(bearing)) / 111_195
    lon = p.home.lon + dist_m * np.sin(np.radians(bearing)) / (111_195 * np.cos(np.radians(lat)))
    return ev.step(np.array([0]), np.array([t]), np.array([lat]), np.array([lon]), np.array([acc]))


NIGHT = datetime(2025, 11, 20, 23, 0, tzinfo=TZ).timestamp()
DAY = datetime(2025, 11, 20, 12, 0, tzinfo=TZ).timestamp()


def test_curfew_opens_after_two_definite_fixes_even_with_uncertain_ones_between() -> None:
    ev, p = _evaluator()
    assert _step(ev, p, NIGHT, 260, 20) == []  # W (60 m out, margin 20)
    assert ev.home.state[0] == C1
    assert _step(ev, p, NIGHT + 60, 205, 20) == []  # U: neither counts nor breaks
    due = _step(ev, p, NIGHT + 120, 300, 20)
    assert len(due) == 1 and due[0].zone == "home" and due[0].first_ts == NIGHT
    assert ev.home.state[0] == O0


def test_a_right_side_fix_breaks_the_run_and_a_deep_fix_does_not_open_alone() -> None:
    ev, p = _evaluator()
    _step(ev, p, NIGHT, 260, 20)
    _step(ev, p, NIGHT + 60, 50, 20)  # R
    assert ev.home.state[0] == C0
    assert _step(ev, p, NIGHT + 120, 260, 20) == []
    ev2, p2 = _evaluator()
    assert _step(ev2, p2, NIGHT, 200 + 150, 20) == []  # 150 m deep: still one fix
    assert len(_step(ev2, p2, NIGHT + 60, 200 + 150, 20)) == 1


def test_two_wrong_side_fixes_15_s_apart_do_not_open_a_third_30_s_after_the_first_does() -> None:
    """The simulator's rule model asks for the engine's span (2 fixes / 30 s), not 2 fixes."""
    ev, p = _evaluator()
    assert _step(ev, p, NIGHT, 260, 20) == []
    assert _step(ev, p, NIGHT + 15, 260, 20) == []  # 2 fixes spanning 15 s: not yet
    assert ev.home.state[0] == C1
    due = _step(ev, p, NIGHT + 30, 260, 20)
    assert len(due) == 1 and due[0].first_ts == NIGHT


def test_closing_needs_two_right_side_fixes_spanning_60_s() -> None:
    ev, p = _evaluator()
    for t in (0, 60):
        _step(ev, p, NIGHT + t, 300, 20)
    assert ev.home.state[0] == O0
    _step(ev, p, NIGHT + 120, 50, 20)
    _step(ev, p, NIGHT + 150, 50, 20)  # 2 right-side fixes spanning 30 s: still open
    assert ev.home.state[0] == O1
    _step(ev, p, NIGHT + 180, 50, 20)
    assert ev.home.state[0] == C0


def test_cell_fixes_never_open_and_the_day_resets() -> None:
    ev, p = _evaluator()
    _step(ev, p, NIGHT, 260, 20)
    assert _step(ev, p, NIGHT + 60, 5000, 2000) == []  # X keeps C1
    assert ev.home.state[0] == C1
    ev2, p2 = _evaluator()
    assert _step(ev2, p2, DAY, 2000, 10) == [] and _step(ev2, p2, DAY + 60, 2000, 10) == []
    assert ev2.home.state[0] == C0


def test_sparse_fixes_over_an_exclusion_zone_are_inferred() -> None:
    ev, p = _evaluator()
    z = p.exclusion
    west = (z.lat, z.lon - 600 / 81_000)
    east = (z.lat, z.lon + 600 / 81_000)
    for i, (la, lo) in enumerate((west, east)):
        due = ev.step(np.array([0]), np.array([DAY + 300.0 * i]), np.array([la]), np.array([lo]),
                      np.array([10.0]))
    assert len(due) == 1 and due[0].inferred and due[0].zone == "exclusion"


def test_resolve_start_keeps_the_simulated_clock_behind_the_real_one() -> None:
    now = datetime(2025, 11, 20, 12, 0, tzinfo=UTC).timestamp()
    assert resolve_start("auto", now=now, speed=60, duration_s=120, tz=TZ) == now - 7200
    t = resolve_start("21:30", now=now, speed=60, duration_s=120, tz=TZ)
    local = datetime.fromtimestamp(t, TZ)
    assert (local.hour, local.minute) == (21, 30) and t <= now - 7200
    assert now - 7200 - t < 86_400
    with pytest.raises(ValueError, match="too late"):
        resolve_start("2025-11-20T11:00:00Z", now=now, speed=60, duration_s=120, tz=TZ)


class _Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any], bool]] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.messages.append((topic, json.loads(payload), retain))


def _offline(tmp_path: Path, n: int = 40, hours: float = 10, start: str = "18:00",
             **rates: float) -> tuple[Simulator, _Sink]:
    cfg = SimConfig(mqtt="mqtt://unused", people=n, speed=60, duration_s=hours * 60, seed=4,
                    truth=tmp_path / "truth.jsonl", start=start, tag="t1",
                    rates=Rates(**{"curfew": 2.0, "exclusion": 2.0, "strap": 1.0,
                                   "power_off": 1.0, "gap": 2.0, **rates}))
    sink = _Sink()
    sim = Simulator(cfg, sink=sink)
    sim.plan()
    regs = []
    for i in range(n):
        b, ph = serials("t1", i)
        regs.append(Registered(i, f"s{i}", f"case-{i}", f"d{i}", b, f"p{i}", ph, "h", "e", "o"))
    sim.use_registry(regs)
    sim.truth = TruthWriter(cfg.truth)
    sim.run_offline()
    sim.truth.close()
    return sim, sink


def test_offline_run_follows_the_protocol_and_writes_scorable_truth(tmp_path: Path) -> None:
    sim, sink = _offline(tmp_path)
    seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
    late = 0
    for topic, body, retain in sink.messages:
        prefix, devices, serial, stream = topic.rsplit("/", 3)
        assert (prefix, devices) == ("pm/v1", "devices")
        if stream == "status":
            assert retain and body["state"] in ("online", "offline")
            continue
        items = body[stream]
        assert 1 <= len(items) <= 500
        for it in items:
            seqs[(serial, stream)].append(it["seq"])
            assert it["ts"] <= sim.sim_end * 1000 + 1
        if stream == "fixes":
            assert all(0 < f["acc"] <= 50_000 and f["src"] in ("gps", "wifi", "cell") for f in items)
            assert all(0 <= f["bat"] <= 100 for f in items)
            assert len(items) >= 1
            late += items[0]["ts"] < (sim.sim_end - 3600) * 1000 and len(items) > 10
    for s in seqs.values():
        assert sorted(s) == sorted(set(s))  # never a repeated seq per device and stream
    assert late > 0  # coverage gaps uploaded late, in big messages
    fixes_per_msg = [len(b["fixes"]) for t, b, _ in sink.messages if t.endswith("/fixes")]
    assert np.mean(fixes_per_msg) > 1.5  # several fixes per upload
    run = load_truth(tmp_path / "truth.jsonl")
    # the run went on for the tail after the scored window, which the score keeps to
    assert run.sim_end == pytest.approx(sim.sim_end - sim.cfg.tail_s) and sim.cfg.tail_s == 2400
    assert max(it["ts"] for _, b, _ in sink.messages for it in b.get("fixes", [])) \
        > run.sim_end * 1000
    assert all(t.start <= (run.real_end if t.clock == "real" else run.sim_end)
               for t in run.truths)
    types = {t.type for t in run.truths}
    assert {"inclusion_zone_left", "exclusion_zone_entered", "strap_tamper", "power_off"} <= types
    assert run.people == 40 and len(run.cases) == 40
    # alerts exactly at the due fixes score perfectly
    alerts = []
    for i, t in enumerate(run.truths):
        due = t.raw.get("first_fix", t.raw["start"])
        started = datetime.fromisoformat(due.replace("Z", "+00:00")).timestamp()
        alerts.append(Alert(f"a{i}", t.case_id, t.type, started, run.to_real(started) + 2))
    r = score(run, alerts)
    assert r["false_alarms"] == 0
    assert all(v["recall"] == 1.0 for v in r["per_type"].values())
    assert r["bar"]["passed"]


def test_offline_runs_are_deterministic(tmp_path: Path) -> None:
    def fixes(sink: _Sink) -> list[tuple[str, float, float]]:
        return [(t, f["lat"], f["lon"]) for t, b, _ in sink.messages if t.endswith("/fixes")
                for f in b["fixes"]]

    _, a = _offline(tmp_path / "a", n=15, hours=3)
    _, b = _offline(tmp_path / "b", n=15, hours=3)
    assert fixes(a) == fixes(b)
    ta = [json.loads(x) for x in (tmp_path / "a" / "truth.jsonl").read_text().splitlines()[1:-1]]
    tb = [json.loads(x) for x in (tmp_path / "b" / "truth.jsonl").read_text().splitlines()[1:-1]]
    assert ta == tb


def test_commands_are_obeyed_acknowledged_and_checkins_answered(tmp_path: Path) -> None:
    sim, sink = _offline(tmp_path, n=3, hours=1, curfew=0, exclusion=0, strap=0, power_off=0,
                         gap=0)
    sink.messages.clear()
    sim.truth = TruthWriter(tmp_path / "t2.jsonl")
    r = sim.registry[1]
    now = sim.real_start
    cmds = [
        (r.bracelet, {"id": "c1", "type": "set_interval", "params": {"fix_interval_s": 15}}),
        (r.phone, {"id": "c2", "type": "request_checkin", "params": {"deadline_s": 600}}),
        (r.phone, {"id": "c2", "type": "request_checkin", "params": {"deadline_s": 600}}),  # repeat
        (r.bracelet, {"id": "c3", "type": "reboot", "params": {}}),
    ]
    for serial, body in cmds:
        sim.on_downlink(f"pm/v1/devices/{serial}/commands", json.dumps(body).encode())
    sim.rng = np.random.default_rng(0)
    sim.cfg.rates = Rates(checkin_missed=0.0, checkin_failed=0.0)
    sim._commands(now, sim.sim_end)
    assert sim.fix_iv[1] == 15
    acks = [(t.split("/")[-2], b) for t, b, _ in sink.messages if t.endswith("/acks")]
    assert [(s, b["id"], b["result"]) for s, b in acks] == [
        (r.bracelet, "c1", "ok"), (r.phone, "c2", "ok"), (r.phone, "c2", "ok"),
        (r.bracelet, "c3", "error")]
    assert len(sim.answers) == 1
    sim._phones(now + 60)
    ci = [b for t, b, _ in sink.messages if t.endswith(f"{r.phone}/checkins")]
    assert len(ci) == 1
    item = ci[0]["checkins"][0]
    assert item["request_id"] == "c2" and len(item["embedding"]) == 128 and item["liveness"] >= 0.8
    tpl = sim.templates[1]
    emb = np.array(item["embedding"])
    assert emb @ tpl / np.linalg.norm(emb) > 0.8


def test_missed_and_failed_checkins_are_truth(tmp_path: Path) -> None:
    sim, _sink = _offline(tmp_path, n=3, hours=1, curfew=0, exclusion=0, strap=0, power_off=0,
                         gap=0)
    sim.truth = TruthWriter(tmp_path / "t3.jsonl")
    now = sim.real_start
    sim.cfg.rates = Rates(checkin_missed=1.0)
    sim._checkin_request(0, "r1", 300, now)  # ignored: missed at the deadline
    sim._checkin_request(2, "r3", 300, now)  # ignored, but a check-in for another request
    sim.cfg.rates = Rates(checkin_missed=0.0, checkin_failed=1.0)
    sim._checkin_request(1, "r2", 300, now)  # a wrong face, then a proper retry
    sim.cfg.rates = Rates(checkin_missed=0.0, checkin_failed=0.0)
    sim._checkin_request(2, "r4", 300, now + 60)  # ... this one, passing, covers r3 too
    sim._phones(now + 100)
    assert [a.outcome for a in sorted(sim.answers)] == ["pass", "deadline", "deadline"]
    sim._phones(now + 400)
    sim.truth.close()
    recs = [json.loads(x) for x in (tmp_path / "t3.jsonl").read_text().splitlines()]
    assert [(x["type"], x["clock"], x["person"]) for x in recs] == [
        ("checkin_failed", "real", 1), ("checkin_missed", "real", 0)]
    assert recs[1]["duration_s"] == 0 and recs[1]["requested"] < recs[1]["start"]
    assert sim.stats["checkins_missed_covered"] == 1


def test_checkins_as_frames_of_real_photos(tmp_path: Path) -> None:
    """Frames mode: the asked gesture from the enrolled person's photos (fresh crops each
    time), an impostor's photos, a replay of the previous frames; `blink` cannot be shown."""
    import base64

    from devices.faces.analysis import hamming, phash, to_gray
    from devices.faces.images import decode
    from simulator.faces import Frames

    sim, sink = _offline(tmp_path, n=3, hours=1, curfew=0, exclusion=0, strap=0, power_off=0,
                         gap=0)
    sim.frames = Frames(np.random.default_rng(5))
    sim.truth = TruthWriter(tmp_path / "t4.jsonl")
    sink.messages.clear()
    now = sim.real_start
    r = sim.registry[1]
    for rid, outcome, challenge in (("a", "pass", "turn_left"), ("b", "pass", "turn_left"),
                                    ("c", "fail_liveness", "smile"), ("d", "fail_face", "smile"),
                                    ("e", "pass", "blink")):
        sim._answer_frames(_Answer(now, 1, rid, outcome, now + 300, challenge=challenge), now)
    items = [b["checkins"][0] for t, b, _ in sink.messages if t.endswith(f"{r.phone}/checkins")]
    assert [i["request_id"] for i in items] == ["a", "b", "c", "d", "e"]
    assert all(len(i["frames"]) == 3 and "embedding" not in i for i in items)
    frames = [[base64.b64decode(f) for f in i["frames"]] for i in items]
    hashes = [[phash(to_gray(decode(f)[0])) for f in fs] for fs in frames]
    assert min(hamming(x, y) for x in hashes[0] for y in hashes[1]) > 12  # fresh captures
    assert frames[2] == frames[1]  # the replay repeats the previous honest check-in
    assert items[4]["challenge"] == "blink"
    sim.truth.close()
    recs = [json.loads(x) for x in (tmp_path / "t4.jsonl").read_text().splitlines()]
    assert [x.get("reason") for x in recs if x["type"] == "checkin_failed"] == [
        "fail_liveness", "fail_face", "fail_challenge"]


def test_a_run_waits_for_the_slowest_decision_the_rules_may_take() -> None:
    """The default tail covers an outage as long as the model draws (the device dark when
    the violation begins) and a hold of up to 10 minutes after it; the CLI's defaults
    are the simulator's."""
    import inspect

    from probation.cli.benchmarks import bench_soak
    from probation.cli.simulation import simulate
    from simulator.gps import MAX_OUTAGE_S
    from simulator.run import DECISION_TAIL_S

    assert SimConfig(mqtt="x").tail_s == DECISION_TAIL_S >= MAX_OUTAGE_S + 600.0
    for cmd in (bench_soak, simulate):
        assert inspect.signature(cmd).parameters["tail"].default == DECISION_TAIL_S
