"""The short soak: the whole chain (api, ingest and scheduler processes, PostgreSQL with
TimescaleDB when installed, mosquitto) under simulated people, scored against the truth.

Bar (issue 7): recall 100 % for exclusion entries and for curfew breaks that last longer
than 2 minutes, false alarms <= 0.05 per person-day.

Scale: 200 people at 60x for 2 real minutes (2 simulated hours, 16.7 person-days; the
figures in the README are of 500 people, `PROBATION_SOAK_PEOPLE=500`),
`PROBATION_SOAK_PEOPLE` / `PROBATION_SOAK_MINUTES` override it. The simulated clock
starts at 21:00 Almaty time (the latest 21:00 that keeps it behind the wall clock) so
that the two hours hold an evening and the start of a curfew night; the violation rates
are raised to give a few dozen of each kind in that window.

GPS model: `PROBATION_SOAK_GPS_MODEL` (default `simple`, error consistent with `acc`).
`realistic` (real receivers' outages, spikes after gaps and multipath excursions, fitted
by `probation bench gpsfit`) meets the bar at 500 people (README, "Soak on both
models"), but at 200 people (16.7 person-days) a single false alarm is 0.06 per
person-day, and the engine's rate on that model (0.02-0.05 per person-day, `probation
bench sim-offline`) would fail the suite's run every second or third time: the suite
keeps the simple model, the realistic figures are measured with `probation bench soak`.

The run goes on for 40 simulated minutes after its 2 hours (`SimConfig.tail_s`,
`simulator.run.DECISION_TAIL_S`): a device may be dark for up to 25 minutes when a break
begins and a hold may delay the opening up to 10 minutes after it reappears; nothing
that starts in the tail is scored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.soak import SoakConfig, run_soak, summary_lines
from simulator.violations import Rates

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1_200)
def test_short_soak_meets_the_bar(tmp_path: Path) -> None:
    cfg = SoakConfig(
        people=int(os.environ.get("PROBATION_SOAK_PEOPLE", "200")),
        speed=60.0,
        minutes=float(os.environ.get("PROBATION_SOAK_MINUTES", "2")),
        start="21:00",
        rates=Rates(curfew=8.0, exclusion=4.0, strap=1.0, power_off=1.0, gap=2.0,
                    checkin_requests=2.0),
        checkin_deadline_s=60,
        durable=False,  # a CI box: fsync off, like the rest of the suite
        sample_s=5.0,
        work_dir=tmp_path / "soak",
        keep=True,
        setup_workers=8,
        scheduler_interval_s=10.0,  # scoring waits 15 s for the clock rules, not 45
        gps_model=os.environ.get("PROBATION_SOAK_GPS_MODEL", "simple"),
    )
    result = run_soak(cfg, out=print)
    for line in summary_lines(result):
        print(line)
    (tmp_path / "soak.json").write_text(json.dumps(result, indent=1, default=str))
    assert all(result["processes_alive"].values()), result.get("logs")
    s = result["score"]
    b = s["bar"]
    assert b["exclusion_truths"] > 0 and b["curfew_over_2min_truths"] > 0, b
    missed = [m for m in s["missed"]
              if m["type"] == "exclusion_zone_entered"
              or (m["type"] == "inclusion_zone_left" and (m.get("duration_s") or 0) > 120)]
    assert b["exclusion_recall"] == 1.0, missed
    assert b["curfew_over_2min_recall"] == 1.0, missed
    assert b["false_alarms_per_person_day"] <= 0.05, (s["per_type"], s["false_alarm_ids"])
    assert b["passed"]


@pytest.mark.timeout(600)
def test_demo_runs_with_no_configuration(tmp_path: Path) -> None:
    """`probation demo` in a fresh data directory: docs URL, a login, live figures, a score."""
    import subprocess
    import sys

    from db.server import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBATION_")}
    env["PROBATION_DATA_DIR"] = str(tmp_path / "data")
    exe = str(Path(sys.executable).parent / "probation")
    out = subprocess.run(
        [exe, "demo", "--people", "20", "--speed", "10", "--duration", "25", "--exit",
         "--score-after", "5", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=500,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    for what in ("API docs: http://127.0.0.1:", "Login:    admin / ", "registered 20 people",
                 "fixes/s", "open alerts", "lag", "bar:"):
        assert what in text, (what, text)
