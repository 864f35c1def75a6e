"""Score the backend's alerts against the simulator's truth.

The truth file (JSON lines, written by `probation simulate`):

- ``{"record": "run", "people", "speed", "sim_start", "real_start", "duration_s",
  "cases": [...], ...}`` first;
- ``{"record": "violation", "type": <alert type>, "case_id", "serial", "person",
  "clock": "sim" | "real", "start", "end", "duration_s", ...}``, one per alert the
  monitoring rules make due (zone violations only when the rules confirm them);
- ``{"record": "wrong_side", "type", "case_id", "start", "end", "kind"}``: every stretch
  a person really is on a zone's wrong side during a planned excursion, due or not;
- ``{"record": "noise_due", ...}``: rule-due episodes caused by GPS noise (no truth);
- ``{"record": "noise", "kind": "spike" | "multipath", "case_id", "start", "end",
  "offset_m", "acc"}``: a noise burst of the realistic GPS model (no truth: an alert it
  causes is a false alarm; the score counts the false alarms that start within
  `NOISE_NEAR_S` of a burst of their case, `false_alarms_near_noise`);
- ``{"record": "end", "sim_end", "real_end", "window_end", "real_window_end", ...}`` last.

The scored window: a run goes on for a tail after it (`tail_s` in the run record, 40
simulated minutes by default, `simulator.run.DECISION_TAIL_S`), because the rules may
decide late (a device may be dark when a violation begins, and a hold waits for the
next fixes up to 10 minutes after it reappears: monitoring-rules.md "Holds"); a run that
stopped at the window's end would cut such a decision off and score a violation the
rules do raise as missed. Truth records that start in the tail are not scored (`truths_in_tail`), nor are
alerts that start in it (`after_run`); person-days are the window's. A violation that
starts in the window is scored whenever its alert comes, and so is a false alarm that
starts in the window.

Matching rule: an alert matches a truth record of the same case and type when its
episode start (`started_at`) lies in ``[start - before, end + after]`` on the truth's
clock (`TOLERANCE`, per type: zone violations 5 min either side, since the episode
starts at the first wrong-side fix, which GPS error may put a little before or after the
true crossing; device events 2 min; real-clock violations, whose alerts the scheduler
raises on its 30 s period, 2 min before and 3 min after). A re-violation that reopened an
alert (one visit = one alert: its `reopened` timeline entry, monitoring-rules.md
"Episodes") detects a truth record the same way, from the re-violation's start and the
reopening's time, but does not make the alert's first episode true: an alert born of noise
and reopened by a real violation is both a false alarm and a detection
(`matched_by_reopening` counts the records detected so). An alert may match several
records and a record several alerts (an episode that closed and reopened): recall is
the share of truth records matched by at least one alert, precision the share of alerts
that match at least one record. Delay: from the violation's start (mapped to the wall
clock: ``real_start + (start - sim_start) / speed`` for simulated times) to the
creation of the first matching alert, in wall-clock seconds (`delay_p50_s`,
`delay_p95_s`). At speed X the simulated parts of that delay (the rules' 2-fix
confirmation, the device's upload interval) shrink X times; `delay_sim_*` gives the same
delay in simulated seconds (the processing part then counts X times).

Not counted as false alarms, reported apart:

- clock artifacts. The simulated clock lags the wall clock, and two wall-clock rules
  then judge simulated data: the scheduler's curfew-start pass (alerts with evidence
  ``trigger: window_start``: at a real 22:00 it looks at a fix of simulated time) and,
  when the lag exceeds the 30 minutes of `location_lost`, that rule (the newest good
  fix is always "old"). Neither says anything about the simulated people.
- alerts on a stretch the person really was on the zone's wrong side (a ``wrong_side``
  record: the ground truth, due or not) that the simulator's own evaluation of the rules
  did not make due (`real_not_due`): the alert is right, the rules' replay in the
  simulator saw different fixes (it leaves noise bursts out);
- alerts that start after the run ended (e.g. a random check-in the backend sent after
  the simulator stopped).

False alarms per person-day: unmatched alerts (all types) / (people x simulated days).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

SIM_TYPES_ZONE = ("exclusion_zone_entered", "inclusion_zone_left", "exclusion_zone_approach")
REAL_TYPES = ("checkin_missed", "checkin_failed", "communication_lost", "location_lost")
TOLERANCE: dict[str, tuple[float, float]] = {
    **{t: (300.0, 300.0) for t in SIM_TYPES_ZONE},
    **{t: (120.0, 180.0) for t in REAL_TYPES},
}
DEFAULT_TOLERANCE = (120.0, 120.0)  # device events (tamper, power, battery)
LOCATION_LOST_S = 1_800.0
CURFEW_BAR_S = 120.0
NOISE_NEAR_S = 300.0


def ts(value: str | float | None) -> float | None:
    """Unix seconds from RFC 3339 (or a number)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class Truth:
    type: str
    case_id: str
    clock: str
    start: float
    end: float | None
    raw: dict[str, Any]

    @property
    def duration_s(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass
class TruthRun:
    people: int
    speed: float
    sim_start: float
    real_start: float
    sim_end: float
    real_end: float
    cases: set[str]
    truths: list[Truth] = field(default_factory=list)
    noise_due: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    #: noise bursts: (case_id, kind, start, end)
    noise: list[tuple[str, str, float, float]] = field(default_factory=list)
    #: (case_id, alert type, start, end): every stretch on a zone's wrong side
    wrong_side: list[tuple[str, str, float, float]] = field(default_factory=list)
    #: simulated seconds the run went on after the scored window (`sim_end`, `real_end`)
    tail_s: float = 0.0
    #: truth records that start in the tail: not scored
    in_tail: int = 0

    @property
    def person_days(self) -> float:
        return self.people * max(self.sim_end - self.sim_start, 0.0) / 86_400

    def to_real(self, t: float) -> float:
        return self.real_start + (t - self.sim_start) / self.speed

    def to_sim(self, t: float) -> float:
        return self.sim_start + (t - self.real_start) * self.speed


@dataclass
class Alert:
    id: str
    case_id: str
    type: str
    started_at: float
    created_at: float
    evidence: dict[str, Any] = field(default_factory=dict)
    #: re-violations that reopened this alert (one visit = one alert): (their episode's
    #: start, when the alert was reopened), from the timeline's `reopened` entries
    reopened: list[tuple[float, float]] = field(default_factory=list)

    @classmethod
    def from_api(cls, a: dict[str, Any]) -> Alert:
        return cls(id=str(a["id"]), case_id=str(a["case_id"]), type=str(a["type"]),
                   started_at=ts(a["started_at"]) or 0.0, created_at=ts(a["created_at"]) or 0.0,
                   evidence=dict(a.get("evidence") or {}),
                   reopened=reopenings(a.get("timeline") or []))

    def starts(self) -> list[tuple[float, float]]:
        """(episode start, alert raised) of the first episode and of every reopening."""
        return [(self.started_at, self.created_at), *self.reopened]


def reopenings(timeline: Iterable[dict[str, Any]]) -> list[tuple[float, float]]:
    out = []
    for e in timeline:
        if e.get("kind") == "reopened":
            start = ts((e.get("data") or {}).get("started_at"))
            at = ts(e.get("at"))
            if start is not None and at is not None:
                out.append((start, at))
    return out


def parse_truth(lines: Iterable[str]) -> TruthRun:
    """Read a truth file's lines (see the module doc)."""
    run: dict[str, Any] | None = None
    end: dict[str, Any] = {}
    truths: list[Truth] = []
    noise = 0
    bursts: list[tuple[str, str, float, float]] = []
    wrong: list[tuple[str, str, float, float]] = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        rec = json.loads(line)
        kind = rec.get("record")
        if kind == "run":
            run = rec
        elif kind == "end":
            end = rec
        elif kind == "noise_due":
            noise += 1
        elif kind == "wrong_side":
            a = ts(rec["start"]) or 0.0
            wrong.append((str(rec["case_id"]), str(rec["type"]), a, ts(rec.get("end")) or a))
        elif kind == "noise":
            a = ts(rec["start"]) or 0.0
            bursts.append((str(rec["case_id"]), str(rec["kind"]), a, ts(rec.get("end")) or a))
        elif kind == "violation":
            truths.append(Truth(type=rec["type"], case_id=str(rec["case_id"]),
                                clock=rec.get("clock", "sim"), start=ts(rec["start"]) or 0.0,
                                end=ts(rec.get("end")), raw=rec))
    if run is None:
        raise ValueError("not a simulator truth file: no run record")
    sim_start = ts(run["sim_start"]) or 0.0
    real_start = ts(run["real_start"]) or 0.0
    speed = float(run["speed"])
    duration = float(run["duration_s"])
    # the scored window: a run with a tail went on after it (`SimConfig.tail_s`)
    sim_end = ts(end.get("window_end")) or ts(end.get("sim_end")) or sim_start + speed * duration
    real_end = ts(end.get("real_window_end")) or ts(end.get("real_end")) or real_start + duration
    scored = [t for t in truths if t.start <= (real_end if t.clock == "real" else sim_end)]
    return TruthRun(people=int(run["people"]), speed=speed, sim_start=sim_start,
                    real_start=real_start, sim_end=sim_end, real_end=real_end,
                    cases={str(c) for c in run.get("cases", [])}, truths=scored,
                    noise_due=noise, meta=run, noise=bursts, wrong_side=wrong,
                    tail_s=float(run.get("tail_s") or 0.0), in_tail=len(truths) - len(scored))


def load_truth(path: Path) -> TruthRun:
    with path.open(encoding="utf-8") as f:
        return parse_truth(f)


def clock_of(type_: str) -> str:
    return "real" if type_ in REAL_TYPES else "sim"


def is_clock_artifact(alert: Alert, run: TruthRun, *,
                      location_lost_s: float = LOCATION_LOST_S) -> bool:
    """Alerts that wall-clock rules raise on simulated-time data (see the module doc)."""
    lag = run.real_start - run.sim_start
    if abs(lag) < 1 and run.speed == 1:
        return False
    if alert.evidence.get("trigger") == "window_start":
        return True
    return alert.type == "location_lost" and lag > location_lost_s


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 2)


def score(run: TruthRun, alerts: Sequence[Alert], *, slack_s: float = 0.0,
          location_lost_s: float = LOCATION_LOST_S) -> dict[str, Any]:
    """Per alert type recall, precision and delay; false alarms per person-day."""
    mine = [a for a in alerts if a.case_id in run.cases] if run.cases else list(alerts)
    by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, t in enumerate(run.truths):
        by_key[(t.case_id, t.type)].append(i)
    wrong_by_key: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for c, typ, a0, a1 in run.wrong_side:
        wrong_by_key[(c, typ)].append((a0, a1))
    real_undue: dict[str, int] = defaultdict(int)
    matched_truth: dict[int, float] = {}  # truth index -> earliest alert creation
    per_alerts: dict[str, int] = defaultdict(int)
    per_matched: dict[str, int] = defaultdict(int)
    per_false: dict[str, int] = defaultdict(int)
    artifacts: dict[str, int] = defaultdict(int)
    after_run: dict[str, int] = defaultdict(int)
    false_ids: list[str] = []
    by_reopen: set[int] = set()
    for a in mine:
        if is_clock_artifact(a, run, location_lost_s=location_lost_s):
            artifacts[a.type] += 1
            continue
        before, after = TOLERANCE.get(a.type, DEFAULT_TOLERANCE)
        hit = False
        for i in by_key.get((a.case_id, a.type), []):
            t = run.truths[i]
            hi = (t.end if t.end is not None else t.start) + after + slack_s
            for k, (start, raised) in enumerate(a.starts()):
                if t.start - before - slack_s <= start <= hi:
                    hit = hit or k == 0  # born of noise and reopened by a violation: both
                    prev = matched_truth.get(i)
                    matched_truth[i] = raised if prev is None else min(prev, raised)
                    if k:
                        by_reopen.add(i)
        if hit:
            per_alerts[a.type] += 1
            per_matched[a.type] += 1
            continue
        end = run.real_end if clock_of(a.type) == "real" else run.sim_end
        if a.started_at > end + (0.0 if run.tail_s > 0 else after):  # not in the window
            after_run[a.type] += 1
            continue
        if any(w0 - before - slack_s <= a.started_at <= w1 + after + slack_s
               for w0, w1 in wrong_by_key.get((a.case_id, a.type), [])):
            # the person really was on the wrong side: not a false alarm, though the
            # rules' own evaluation in the simulator did not make it due
            real_undue[a.type] += 1
            continue
        per_alerts[a.type] += 1
        per_false[a.type] += 1
        false_ids.append(a.id)
    false_set = set(false_ids)
    near_noise = _near_noise(run, [a for a in mine if a.id in false_set])
    delays: dict[str, list[float]] = defaultdict(list)
    sim_delays: dict[str, list[float]] = defaultdict(list)
    truths_per: dict[str, int] = defaultdict(int)
    found_per: dict[str, int] = defaultdict(int)
    missed: list[dict[str, Any]] = []
    for i, t in enumerate(run.truths):
        truths_per[t.type] += 1
        if i in matched_truth:
            found_per[t.type] += 1
            start_real = t.start if t.clock == "real" else run.to_real(t.start)
            delays[t.type].append(matched_truth[i] - start_real)
            if t.clock == "sim":
                sim_delays[t.type].append(run.to_sim(matched_truth[i]) - t.start)
        elif len(missed) < 100:
            missed.append(t.raw)
    per_type: dict[str, dict[str, Any]] = {}
    for typ in sorted(set(truths_per) | set(per_alerts)):
        n_t, n_a = truths_per.get(typ, 0), per_alerts.get(typ, 0)
        per_type[typ] = {
            "truth": n_t, "alerts": n_a,
            "recall": round(found_per.get(typ, 0) / n_t, 4) if n_t else None,
            "precision": round(per_matched.get(typ, 0) / n_a, 4) if n_a else None,
            "delay_p50_s": _pct(delays.get(typ, []), 50),
            "delay_p95_s": _pct(delays.get(typ, []), 95),
            "delay_sim_p50_s": _pct(sim_delays.get(typ, []), 50),
            "delay_sim_p95_s": _pct(sim_delays.get(typ, []), 95),
            "false_alarms": per_false.get(typ, 0),
        }
    pdays = run.person_days
    n_false = sum(per_false.values())
    return {
        "per_type": per_type,
        "false_alarms_per_person_day": round(n_false / pdays, 4) if pdays > 0 else None,
        "false_alarms": n_false,
        "person_days": round(pdays, 2),
        "clock_artifacts": dict(artifacts),
        "after_run": dict(after_run),
        "tail_s": run.tail_s,
        "truths_in_tail": run.in_tail,
        "real_not_due": dict(real_undue),
        "noise_due": run.noise_due,
        "gps_model": run.meta.get("gps_model", "simple"),
        "noise_bursts": dict(sorted(_kinds(run.noise).items())),
        "false_alarms_near_noise": near_noise,
        "matched_by_reopening": len(by_reopen),
        "bar": bar(run, matched_truth, n_false / pdays if pdays > 0 else None),
        "missed": missed,
        "false_alarm_ids": false_ids[:100],
        "tolerance_s": {"zone": TOLERANCE["inclusion_zone_left"], "real": TOLERANCE["checkin_missed"],
                        "events": DEFAULT_TOLERANCE, "slack": slack_s},
    }


def _kinds(bursts: Sequence[tuple[str, str, float, float]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for _, kind, _, _ in bursts:
        out[kind] += 1
    return out


def _near_noise(run: TruthRun, false: Sequence[Alert]) -> dict[str, int]:
    """False alarms (per type) that start within `NOISE_NEAR_S` of a noise burst of
    their case: the realistic GPS model's spikes and excursions that counted."""
    by_case: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for case, _, a, b in run.noise:
        by_case[case].append((a, b))
    out: dict[str, int] = defaultdict(int)
    for al in false:
        if any(a - NOISE_NEAR_S <= al.started_at <= b + NOISE_NEAR_S
               for a, b in by_case.get(al.case_id, ())):
            out[al.type] += 1
    return dict(out)


def bar(run: TruthRun, matched: dict[int, float], fa_per_pd: float | None, *,
        max_fa: float = 0.05) -> dict[str, Any]:
    """The soak test's bar: recall 100 % for exclusion entries and curfew breaks > 2 min,
    false alarms <= `max_fa` per person-day."""
    excl = [i for i, t in enumerate(run.truths) if t.type == "exclusion_zone_entered"]
    curf = [i for i, t in enumerate(run.truths) if t.type == "inclusion_zone_left"
            and (t.duration_s or 0) > CURFEW_BAR_S]

    def rec(idx: list[int]) -> float | None:
        return round(sum(i in matched for i in idx) / len(idx), 4) if idx else None

    r_ex, r_cu = rec(excl), rec(curf)
    ok = (r_ex in (None, 1.0)) and (r_cu in (None, 1.0)) and fa_per_pd is not None \
        and fa_per_pd <= max_fa
    return {"exclusion_recall": r_ex, "exclusion_truths": len(excl),
            "curfew_over_2min_recall": r_cu, "curfew_over_2min_truths": len(curf),
            "false_alarms_per_person_day": None if fa_per_pd is None else round(fa_per_pd, 4),
            "max_false_alarms_per_person_day": max_fa, "passed": bool(ok)}


def fetch_alerts(api: Any, run: TruthRun) -> list[Alert]:
    """The alerts created since the run started (any later creation included), via the API."""
    from simulator.violations import iso

    since = iso(run.real_start - 600)
    out = [Alert.from_api(a) for a in api.pages("/alerts", since=since)
           if not run.cases or str(a["case_id"]) in run.cases]
    for a in out:  # zone alerts: their reopenings, from the timeline
        if a.type in SIM_TYPES_ZONE:
            a.reopened = reopenings(api.get(f"/alerts/{a.id}").get("timeline") or [])
    return out


def format_table(result: dict[str, Any]) -> list[str]:
    """Plain-text lines of a score."""
    def f(v: Any, pct: bool = False) -> str:
        if v is None:
            return "-"
        return f"{100 * v:.1f}%" if pct else f"{v:g}"

    lines = [f"{'alert type':<24} {'truth':>6} {'alerts':>6} {'recall':>8} {'precision':>9} "
             f"{'p50 s':>8} {'p95 s':>8} {'false':>6}"]
    for typ, r in result["per_type"].items():
        lines.append(f"{typ:<24} {r['truth']:>6} {r['alerts']:>6} {f(r['recall'], True):>8} "
                     f"{f(r['precision'], True):>9} {f(r['delay_p50_s']):>8} "
                     f"{f(r['delay_p95_s']):>8} {r['false_alarms']:>6}")
    b = result["bar"]
    lines.append(f"false alarms: {result['false_alarms']} over {result['person_days']} person-days"
                 f" = {f(result['false_alarms_per_person_day'])} per person-day")
    if result["clock_artifacts"] or result["after_run"] or result.get("real_not_due"):
        lines.append(f"not counted: clock artifacts {result['clock_artifacts']}, "
                     f"after the run {result['after_run']}, on a real wrong-side stretch "
                     f"the simulator's rules did not make due {result.get('real_not_due', {})}")
    lines.append(f"GPS-noise episodes the rules would alert on (no truth): {result['noise_due']}")
    if result.get("noise_bursts"):
        lines.append(f"GPS model {result['gps_model']}: noise bursts {result['noise_bursts']}, "
                     f"false alarms near one {result['false_alarms_near_noise']}")
    lines.append(f"bar: exclusion recall {f(b['exclusion_recall'], True)} ({b['exclusion_truths']}),"
                 f" curfew > 2 min recall {f(b['curfew_over_2min_recall'], True)} "
                 f"({b['curfew_over_2min_truths']}), false alarms/person-day "
                 f"{f(b['false_alarms_per_person_day'])} <= {b['max_false_alarms_per_person_day']}: "
                 f"{'PASS' if b['passed'] else 'FAIL'}")
    return lines
