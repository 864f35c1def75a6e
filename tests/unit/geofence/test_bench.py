"""The geofence benchmark command runs end to end on a small workload and writes its figures."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from probation.cli import app


def test_bench_geofence_writes_flat_json(tmp_path: Path) -> None:
    out = tmp_path / "geofence.json"
    r = CliRunner().invoke(app, ["bench", "geofence", "--cases", "60", "--fixes", "2000",
                                 "--json", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["cases"] == 60 and res["fixes"] == 2000 and res["zones_total"] == 60 * 4 + 200
    assert res["engine_fixes_per_s"] > 0 and res["reference_fixes_per_s"] > 0
    # (times are rounded to 0.1 ms in the output)
    assert abs(res["ratio"] - res["reference_s"] / res["engine_s"]) < 0.1 * res["ratio"] + 0.05
    # the workload is not trivial: the engine raises episodes, the reference finds insides
    assert res["opens"] > 0 and res["reference_inside_hits"] > 0
    assert "engine_fixes_per_s" in r.output


def test_device_states_equals_device_state_one_by_one() -> None:
    """The batch serialisation the ingest uses gives exactly the per-device states."""
    from bench.geofence import build_workload
    from geofence.engine import advance
    from geofence.episodes import EngineState

    w = build_workload(40, 3000, 3)
    state, _ = advance(EngineState.empty(), w["previous"], w["registry"])
    state, _ = advance(state, w["batch"], w["registry"])
    assert state.n_episodes > 0
    devices = [*state.device_ids(), "never-seen"]
    batch = state.device_states(devices)
    assert list(batch) == devices
    assert batch == {d: state.device_state(d) for d in devices}
    assert batch["never-seen"]["episodes"] == [] and batch["never-seen"]["last_fix"] is None
    rebuilt = EngineState.from_device_states({d: batch[d] for d in devices[:-1]})
    assert rebuilt.to_dict() == state.to_dict()


def test_cases_without_any_zone_evaluate_to_nothing() -> None:
    """A deployment with cases but no zone yet: the registry builds, fixes raise nothing."""
    import numpy as np

    from geofence.engine import FixBatch, advance
    from geofence.episodes import EngineState
    from geofence.registry import CaseZones

    reg = CaseZones({"c1": "Asia/Almaty", "c2": None}, {}, {})
    b = FixBatch.from_columns(reg, ["c1", "c2"], ["d1", "d2"],
                              np.array([1_700_000_000_000, 1_700_000_030_000]),
                              [43.2, 43.3], [76.9, 76.8], [10.0, 2000.0])
    state, transitions = advance(EngineState.empty(), b, reg)
    assert len(transitions) == 0 and state.n_episodes == 0
