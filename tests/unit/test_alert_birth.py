"""An alert is born in one place: `alerts.service.open_episode` (issue 12)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("alerts", "db", "devices", "geofence", "probation")
INSERT = re.compile(r"INSERT\s+INTO\s+alerts\b", re.IGNORECASE)


def test_only_alerts_service_inserts_alerts() -> None:
    found = {
        p.relative_to(ROOT).as_posix()
        for pkg in PRODUCT for p in (ROOT / pkg).rglob("*.py")
        if "bench" not in p.name and "migrations" not in p.parts
        and INSERT.search(p.read_text(encoding="utf-8"))
    }
    assert found == {"alerts/service.py"}
