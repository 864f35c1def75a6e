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
