"""The rules on real recordings the repository may carry (gpxpy's Apache-2.0 test
files, gpsd's BSD-2 regression logs; tests/data/realgps, with their licences), through
the engine alone: the scenarios and scoring of `probation bench realgps`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.realgps import build_scenarios, load_csv, replay_offline
from geofence import CaseZones, EngineState, FixBatch, ZoneEntry, compile_zone
from geofence.engine import advance_ex

DATA = Path(__file__).resolve().parents[2] / "data" / "realgps"


def test_gpxpy_walks_and_drives_alert_every_entry_and_nothing_else() -> None:
    scenarios = build_scenarios(load_csv(DATA / "gpxpy_testfiles.csv.gz"))
    assert len(scenarios) >= 5
    for assumed in (10.0, 20.0):
        res = replay_offline(scenarios, assumed)["gpxpy_testfiles"]
        r = next(iter(res.values()))
        assert r["false_alarms"] == 0, r["events"]
        assert r["duplicate_alerts"] == 0, r["events"]
        assert r["visits_with_two_fixes_inside"] >= 5
        assert r["detected_with_two_fixes_inside"] == r["visits_with_two_fixes_inside"]
        assert r["delay_p50_s"] is not None and r["delay_p50_s"] <= 60


def test_gpsd_receivers_standing_still_never_leave_home() -> None:
    # every log of a receiver standing still (>= 20 fixes, within 50 m of its median for
    # 90 %): a home zone of 150 m around the median, always active, each fix with the
    # receiver's own error estimate, at the log's own cadence
    logs = [t for t in load_csv(DATA / "gpsd_regress.csv.gz") if len(t) >= 20]
    checked = 0
    for t in logs:
        acc = np.where(np.isnan(t.acc), 20.0, t.acc)
        lat0, lon0 = float(np.median(t.lat)), float(np.median(t.lon))
        dy = (t.lat - lat0) * 111_320.0
        dx = (t.lon - lon0) * 111_320.0 * np.cos(np.radians(lat0))
        if np.mean(np.hypot(dx, dy) <= 50.0) < 0.9 or not (acc < 100).all():
            continue
        home = compile_zone(zone_id="home", kind="inclusion",
                            circle={"center": [lon0, lat0], "radius_m": 150.0})
        reg = CaseZones({"c": "UTC"}, {"home": ZoneEntry.make(home)}, {"home": ["c"]})
        state = EngineState.empty()
        for a in range(0, len(t), 4):
            k = slice(a, a + 4)
            n = t.ts[k].shape[0]
            b = FixBatch.from_columns(reg, ["c"] * n, ["d"] * n, t.ts[k], t.lat[k], t.lon[k],
                                      acc[k])
            state, trans, _ = advance_ex(state, b, reg)
            assert [x for x in trans if x.kind == "open"] == [], t.track_id
        checked += 1
    assert checked >= 20
