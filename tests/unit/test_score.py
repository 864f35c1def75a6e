"""Scoring alerts against the simulator's truth (pure logic)."""

from __future__ import annotations

import json

import pytest

from simulator.score import Alert, TruthRun, format_table, parse_truth, score

T0 = 1_764_000_000.0  # real start
SIM0 = T0 - 36_000  # simulated start: 10 h earlier, 10x speed for one hour


def _run(truths: list[dict], *, people: int = 10, noise: int = 0) -> TruthRun:
    lines = [json.dumps({
        "record": "run", "people": people, "speed": 10, "duration_s": 3600,
        "sim_start": SIM0, "real_start": T0, "cases": ["c1", "c2", "c3"],
    })]
    for t in truths:
        lines.append(json.dumps({"record": "violation", "clock": "sim", "end": None, **t}))
    lines += [json.dumps({"record": "noise_due"})] * noise
    lines.append(json.dumps({"record": "end", "sim_end": SIM0 + 36_000, "real_end": T0 + 3600}))
    return parse_truth(lines)


def _alert(i: int, case: str, type_: str, started: float, created: float, **evidence: object) -> Alert:
    return Alert(id=f"a{i}", case_id=case, type=type_, started_at=started, created_at=created,
                 evidence=dict(evidence))


def test_person_days_and_clock_mapping() -> None:
    run = _run([])
    assert run.person_days == pytest.approx(10 * 36_000 / 86_400)
    assert run.to_real(SIM0 + 1000) == pytest.approx(T0 + 100)


def test_perfect_alerts_give_full_recall_and_precision_with_delays() -> None:
    run = _run([
        {"type": "exclusion_zone_entered", "case_id": "c1", "start": SIM0 + 1000, "end": SIM0 + 2000},
        {"type": "inclusion_zone_left", "case_id": "c2", "start": SIM0 + 5000, "end": SIM0 + 6000},
    ])
    alerts = [
        # episode starts at the first wrong-side fix, 60 s after the crossing
        _alert(1, "c1", "exclusion_zone_entered", SIM0 + 1060, T0 + 100 + 12),
        _alert(2, "c2", "inclusion_zone_left", SIM0 + 5030, T0 + 500 + 20),
    ]
    r = score(run, alerts)
    ex = r["per_type"]["exclusion_zone_entered"]
    assert (ex["truth"], ex["alerts"], ex["recall"], ex["precision"]) == (1, 1, 1.0, 1.0)
    assert ex["delay_p50_s"] == pytest.approx(12)
    assert r["per_type"]["inclusion_zone_left"]["delay_p95_s"] == pytest.approx(20)
    assert r["false_alarms"] == 0
    assert r["bar"]["passed"]


def test_unmatched_alert_is_a_false_alarm_and_a_missed_truth_lowers_recall() -> None:
    run = _run([
        {"type": "exclusion_zone_entered", "case_id": "c1", "start": SIM0 + 1000, "end": SIM0 + 2000},
        {"type": "exclusion_zone_entered", "case_id": "c2", "start": SIM0 + 1000, "end": SIM0 + 2000},
    ])
    alerts = [
        _alert(1, "c1", "exclusion_zone_entered", SIM0 + 1100, T0 + 120),
        _alert(2, "c3", "exclusion_zone_entered", SIM0 + 1100, T0 + 120),  # wrong case
        _alert(3, "c1", "exclusion_zone_entered", SIM0 + 9000, T0 + 920),  # outside the window
    ]
    r = score(run, alerts)
    ex = r["per_type"]["exclusion_zone_entered"]
    assert ex["recall"] == 0.5
    assert ex["precision"] == pytest.approx(1 / 3, abs=1e-3)
    assert r["false_alarms"] == 2
    assert r["false_alarms_per_person_day"] == pytest.approx(2 / run.person_days, abs=1e-3)
    assert not r["bar"]["passed"]
    assert len(r["missed"]) == 1 and r["missed"][0]["case_id"] == "c2"


def test_tolerance_window_edges() -> None:
    run = _run([{"type": "inclusion_zone_left", "case_id": "c1", "start": SIM0 + 10_000,
                 "end": SIM0 + 10_600}])
    inside = [_alert(1, "c1", "inclusion_zone_left", SIM0 + 10_000 - 300, T0 + 1000),
              _alert(2, "c1", "inclusion_zone_left", SIM0 + 10_600 + 300, T0 + 1100)]
    outside = [_alert(3, "c1", "inclusion_zone_left", SIM0 + 10_000 - 301, T0 + 1000)]
    assert score(run, inside)["per_type"]["inclusion_zone_left"]["precision"] == 1.0
    assert score(run, outside)["per_type"]["inclusion_zone_left"]["recall"] == 0.0
    assert score(run, outside, slack_s=5)["per_type"]["inclusion_zone_left"]["recall"] == 1.0


def test_reopened_episode_matches_the_same_truth_and_delay_uses_the_first_alert() -> None:
    run = _run([{"type": "inclusion_zone_left", "case_id": "c1", "start": SIM0 + 100,
                 "end": SIM0 + 3000}])
    r = score(run, [_alert(1, "c1", "inclusion_zone_left", SIM0 + 2000, T0 + 300),
                    _alert(2, "c1", "inclusion_zone_left", SIM0 + 150, T0 + 20)])
    t = r["per_type"]["inclusion_zone_left"]
    assert (t["truth"], t["alerts"], t["recall"], t["precision"]) == (1, 2, 1.0, 1.0)
    assert t["delay_p50_s"] == pytest.approx(20 - 10)


def test_real_clock_truths_match_real_times() -> None:
    run = _run([{"type": "checkin_missed", "case_id": "c1", "clock": "real", "start": T0 + 100,
                 "end": T0 + 400}])
    r = score(run, [_alert(1, "c1", "checkin_missed", T0 + 400, T0 + 420)])
    assert r["per_type"]["checkin_missed"]["recall"] == 1.0
    assert r["per_type"]["checkin_missed"]["delay_p50_s"] == pytest.approx(320)


def test_clock_artifacts_and_alerts_after_the_run_are_not_false_alarms() -> None:
    run = _run([])
    alerts = [
        _alert(1, "c1", "inclusion_zone_left", T0 + 50, T0 + 50, trigger="window_start"),
        _alert(2, "c2", "location_lost", T0 + 60, T0 + 60),  # the clocks lag by 10 h > 30 min
        _alert(3, "c2", "checkin_missed", T0 + 3600 + 900, T0 + 4600),  # after the run
        _alert(4, "c3", "strap_tamper", SIM0 + 500, T0 + 60),
    ]
    r = score(run, alerts)
    assert r["clock_artifacts"] == {"inclusion_zone_left": 1, "location_lost": 1}
    assert r["after_run"] == {"checkin_missed": 1}
    assert r["false_alarms"] == 1 and r["per_type"]["strap_tamper"]["precision"] == 0.0
    assert r["per_type"]["strap_tamper"]["recall"] is None


def test_bar_counts_only_curfew_breaks_over_two_minutes() -> None:
    run = _run([
        {"type": "inclusion_zone_left", "case_id": "c1", "start": SIM0 + 100, "end": SIM0 + 190},
        {"type": "inclusion_zone_left", "case_id": "c2", "start": SIM0 + 100, "end": SIM0 + 900},
    ], people=1000)
    r = score(run, [_alert(1, "c2", "inclusion_zone_left", SIM0 + 160, T0 + 20)])
    assert r["per_type"]["inclusion_zone_left"]["recall"] == 0.5
    assert r["bar"]["curfew_over_2min_recall"] == 1.0
    assert r["bar"]["curfew_over_2min_truths"] == 1
    assert r["bar"]["exclusion_recall"] is None
    assert r["bar"]["passed"]


def test_other_cases_are_ignored_and_the_table_renders() -> None:
    run = _run([], noise=3)
    r = score(run, [_alert(1, "someone-else", "power_off", SIM0 + 10, T0 + 1)])
    assert r["per_type"] == {} and r["false_alarms"] == 0 and r["noise_due"] == 3
    assert any("bar:" in line for line in format_table(r))


def test_truth_file_without_run_record_is_rejected() -> None:
    with pytest.raises(ValueError, match="run record"):
        parse_truth([json.dumps({"record": "end"})])


def test_a_reopening_detects_a_later_violation_and_a_noise_born_alert_stays_false() -> None:
    run = _run([
        {"type": "inclusion_zone_left", "case_id": "c1", "start": SIM0 + 1000, "end": SIM0 + 1300},
        # 16 minutes later: the same alert reopened (its close came late)
        {"type": "inclusion_zone_left", "case_id": "c1", "start": SIM0 + 2300, "end": SIM0 + 3000},
        {"type": "inclusion_zone_left", "case_id": "c2", "start": SIM0 + 5000, "end": SIM0 + 6000},
    ])
    a1 = _alert(1, "c1", "inclusion_zone_left", SIM0 + 1030, T0 + 110)
    a1.reopened = [(SIM0 + 2330, T0 + 240)]
    # born of noise 10 minutes before the break, reopened by it
    a2 = _alert(2, "c2", "inclusion_zone_left", SIM0 + 4400, T0 + 445)
    a2.reopened = [(SIM0 + 5030, T0 + 510)]
    r = score(run, [a1, a2])
    assert r["per_type"]["inclusion_zone_left"]["recall"] == 1.0
    assert r["matched_by_reopening"] == 2
    assert r["false_alarms"] == 1 and r["false_alarm_ids"] == ["a2"]
    assert r["per_type"]["inclusion_zone_left"]["delay_p95_s"] == pytest.approx(10, abs=0.1)
    # without the reopenings the later violations are missed
    a1.reopened, a2.reopened = [], []
    assert score(run, [a1, a2])["per_type"]["inclusion_zone_left"]["recall"] == pytest.approx(1 / 3, abs=1e-3)


def test_noise_bursts_are_counted_and_false_alarms_near_them_reported() -> None:
    lines = [json.dumps({"record": "run", "people": 2, "speed": 10, "duration_s": 3600,
                         "sim_start": SIM0, "real_start": T0, "cases": ["c1", "c2"],
                         "gps_model": "realistic"})]
    for case, kind, a, b in (("c1", "multipath", 1000, 1150), ("c1", "spike", 3000, 3000),
                             ("c2", "spike", 8000, 8000)):
        lines.append(json.dumps({"record": "noise", "kind": kind, "case_id": case,
                                 "start": SIM0 + a, "end": SIM0 + b, "offset_m": 400.0,
                                 "acc": 8.0}))
    lines.append(json.dumps({"record": "end", "sim_end": SIM0 + 36_000, "real_end": T0 + 3600}))
    run = parse_truth(lines)
    assert len(run.noise) == 3
    r = score(run, [_alert(1, "c1", "inclusion_zone_left", SIM0 + 1060, T0 + 120),
                    _alert(2, "c2", "inclusion_zone_left", SIM0 + 20_000, T0 + 2000)])
    assert r["gps_model"] == "realistic"
    assert r["noise_bursts"] == {"multipath": 1, "spike": 2}
    assert r["false_alarms"] == 2 and r["false_alarms_near_noise"] == {"inclusion_zone_left": 1}
    assert any("noise bursts" in line for line in format_table(r))


def test_an_alert_on_a_real_wrong_side_stretch_the_rules_did_not_make_due_is_no_false_alarm() -> None:
    # the person really was in the exclusion zone (a `wrong_side` record) but the
    # simulator's own rules never made it due (no violation record): the alert is
    # counted apart, neither false nor a detection; one outside any stretch is false
    run = _run([])
    lines = [json.dumps({"record": "run", "people": 10, "speed": 10, "duration_s": 3600,
                         "sim_start": SIM0, "real_start": T0, "cases": ["c1", "c2"]}),
             json.dumps({"record": "wrong_side", "type": "exclusion_zone_entered",
                         "case_id": "c1", "clock": "sim", "start": SIM0 + 1000,
                         "end": SIM0 + 1100, "kind": "route"})]
    run = parse_truth(lines)
    assert run.wrong_side == [("c1", "exclusion_zone_entered", SIM0 + 1000, SIM0 + 1100)]
    alerts = [_alert(1, "c1", "exclusion_zone_entered", SIM0 + 1050, T0 + 110),
              _alert(2, "c2", "exclusion_zone_entered", SIM0 + 1050, T0 + 110),
              _alert(3, "c1", "inclusion_zone_left", SIM0 + 1050, T0 + 110)]
    r = score(run, alerts)
    assert r["real_not_due"] == {"exclusion_zone_entered": 1}
    assert r["false_alarms"] == 2


def test_a_run_with_a_tail_scores_its_window_only() -> None:
    """The run went on 10 simulated minutes after its window: a violation that starts in
    the window counts whenever its alert comes; nothing that starts in the tail does."""
    window = SIM0 + 36_000
    lines = [
        json.dumps({"record": "run", "people": 10, "speed": 10, "duration_s": 3600,
                    "tail_s": 600, "sim_start": SIM0, "real_start": T0, "cases": ["c1", "c2"]}),
        json.dumps({"record": "violation", "type": "inclusion_zone_left", "case_id": "c1",
                    "clock": "sim", "start": window - 180, "end": window + 400}),
        json.dumps({"record": "violation", "type": "exclusion_zone_entered", "case_id": "c2",
                    "clock": "sim", "start": window + 120, "end": window + 500}),
        json.dumps({"record": "end", "sim_end": window + 600, "real_end": T0 + 3660,
                    "window_end": window, "real_window_end": T0 + 3600}),
    ]
    run = parse_truth(lines)
    assert run.sim_end == window and run.real_end == T0 + 3600
    assert run.person_days == pytest.approx(10 * 36_000 / 86_400)  # the window's
    assert [t.case_id for t in run.truths] == ["c1"] and run.in_tail == 1
    alerts = [
        # held back by the rules: raised in the tail, dated from the window
        _alert(1, "c1", "inclusion_zone_left", window - 170, run.to_real(window + 300)),
        _alert(2, "c2", "exclusion_zone_entered", window + 130, run.to_real(window + 200)),
        _alert(3, "c2", "inclusion_zone_left", window + 60, run.to_real(window + 120)),
    ]
    r = score(run, alerts)
    assert r["bar"]["curfew_over_2min_recall"] == 1.0
    assert r["false_alarms"] == 0
    assert r["after_run"] == {"exclusion_zone_entered": 1, "inclusion_zone_left": 1}
    assert r["truths_in_tail"] == 1 and r["tail_s"] == 600
    # without its alert the violation that started in the window is missed, tail or not
    assert score(run, alerts[1:])["bar"]["curfew_over_2min_recall"] == 0.0
    # a false alarm that starts in the window counts, though raised in the tail
    late_false = _alert(4, "c1", "exclusion_zone_entered", window - 30, run.to_real(window + 240))
    assert score(run, [*alerts, late_false])["false_alarms"] == 1
