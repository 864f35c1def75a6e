"""Issue 13 through the real pipeline: assignment windows, outliers stored, one visit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from probation.runtime.workers import Ingestion
from probation.settings import Settings
from tests.integration._pipeline import (
    Gateway,
    alerts,
    offset,
    running_ingestion,
    setup_case,
    wait_alerts,
    wait_fixes,
)


@pytest.fixture
def ingestion(settings: Settings) -> Iterator[Ingestion]:
    with running_ingestion(settings) as ing:
        yield ing


def test_previous_wearers_late_fixes_raise_nothing_on_the_new_case(
    settings: Settings, ingestion: Ingestion
) -> None:
    url = settings.database_url
    assert url
    _, dev, _ = setup_case(url, "RA-1")
    t_swap = datetime.now(UTC) - timedelta(minutes=20)
    # the bracelet goes to another person (case B, whose victim lives at CENTER too)
    case_b, _, _ = setup_case(url, "RA-2")
    with psycopg.connect(url) as c:
        c.execute("UPDATE device_assignments SET unassigned_at = %s WHERE device_id = %s",
                  (t_swap, dev))
        c.execute("UPDATE device_assignments SET device_id = %s, assigned_at = %s"
                  " WHERE case_id = %s", (dev, t_swap, case_b))
        c.execute("DELETE FROM devices WHERE serial = 'RA-2'")
    gw = Gateway(settings, "RA-1")
    # a buffered upload recorded by the previous wearer, inside the zone, arriving now
    t0 = t_swap - timedelta(minutes=10)
    gw.fixes([(t0 + timedelta(seconds=30 * i), *offset(0, 5 * i), 8.0) for i in range(8)])
    wait_fixes(url, dev, 8)
    # and the new wearer's own fixes, outside: nothing either
    gw.fixes([(t_swap + timedelta(seconds=30 * (i + 1)), *offset(800), 8.0) for i in range(4)])
    wait_fixes(url, dev, 12)
    time.sleep(0.5)
    assert alerts(url, case_b) == []
    gw.close()


def test_an_outlier_is_stored_marked_and_never_alerts(
    settings: Settings, ingestion: Ingestion
) -> None:
    url = settings.database_url
    assert url
    case, dev, _ = setup_case(url, "RO-1")
    gw = Gateway(settings, "RO-1")
    t = datetime.now(UTC) - timedelta(minutes=30)
    # 1 km east, still; one fix in the zone (1 km in 30 s from standstill, back 30 s later)
    pts = [(t + timedelta(seconds=30 * i), *offset(1000 + (i % 3)), 5.0) for i in range(10)]
    pts.append((t + timedelta(seconds=300), *offset(0), 5.0))
    pts += [(t + timedelta(seconds=330 + 30 * i), *offset(1000 - (i % 3)), 5.0) for i in range(6)]
    for k in range(0, len(pts), 3):
        gw.fixes(pts[k:k + 3])
    wait_fixes(url, dev, len(pts))
    time.sleep(0.5)
    with psycopg.connect(url) as c:
        flagged = [r[0] for r in c.execute(
            "SELECT ts FROM fixes WHERE device_id = %s AND outlier ORDER BY ts", (dev,))]
    assert flagged == [pts[10][0]]
    assert alerts(url, case) == []
    gw.close()


def test_a_reentry_within_ten_minutes_reopens_the_same_alert(
    settings: Settings, ingestion: Ingestion
) -> None:
    url = settings.database_url
    assert url
    case, _, _ = setup_case(url, "RR-1")
    gw = Gateway(settings, "RR-1")
    t = datetime.now(UTC) - timedelta(minutes=40)
    east = [600, 450, 300, 150, 50, 0, 0, 0, 50, 150, 250, 300, 300, 300, 300, 250, 150, 50, 0,
            0, 0]
    for i, e in enumerate(east):
        gw.fixes([(t + timedelta(seconds=30 * i), *offset(e), 8.0)])
    got = wait_alerts(url, case, 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with psycopg.connect(url) as c:
            kinds = [r[0] for r in c.execute(
                "SELECT e.kind FROM alert_events e JOIN alerts a ON a.id = e.alert_id"
                " WHERE a.case_id = %s ORDER BY e.id", (case,))]
        if "reopened" in kinds:
            break
        time.sleep(0.05)
    got = alerts(url, case)
    assert len(got) == 1, got
    assert kinds == ["opened", "episode_closed", "reopened"]
    assert got[0]["episode_open"]
    gw.close()



def test_a_cases_own_confirmation_is_what_the_running_engine_applies(
    settings: Settings, ingestion: Ingestion
) -> None:
    """3 fixes / 60 s on this case (set as the API sets it: the columns, then the config
    version): two fixes inside spanning 30 s, which open under the defaults, do not."""
    url = settings.database_url
    assert url
    case, dev, _ = setup_case(url, "RC-1")
    with psycopg.connect(url) as c:
        c.execute("UPDATE cases SET confirm_points = 3, confirm_seconds = 60 WHERE id = %s",
                  (case,))
        c.execute("UPDATE config_versions SET version = version + 1 WHERE name = 'zones'")
    gw = Gateway(settings, "RC-1")
    t = datetime.now(UTC) - timedelta(minutes=10)
    gw.fixes([(t + timedelta(seconds=30 * i), *offset(600 - 100 * i), 5.0) for i in range(4)])
    gw.fixes([(t + timedelta(seconds=120 + 30 * i), *offset(0, 5 * i), 5.0) for i in range(2)])
    wait_fixes(url, dev, 6)
    time.sleep(0.5)
    assert alerts(url, case) == []
    gw.fixes([(t + timedelta(seconds=180), *offset(0, 10), 5.0)])  # the third, 60 s on
    got = wait_alerts(url, case, 1)
    assert got[0]["type"] == "exclusion_zone_entered"
    gw.close()
