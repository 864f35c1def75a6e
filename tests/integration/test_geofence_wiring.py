"""The geofence stage in the real pipeline: real broker, real database, the real worker."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from alerts.models import AlertType
from alerts.scheduled import curfew_starts
from alerts.service import open_episode
from probation.runtime.workers import Ingestion
from probation.settings import Settings
from tests.integration._pipeline import (
    CENTER,
    M_PER_DEG_LAT,
    Gateway,
    alerts,
    offset,
    running_ingestion,
    setup_case,
    wait_alerts,
)
from tests.integration.scheduler_world import HOME, World
from tests.integration.scheduler_world import offset as near


@pytest.fixture
def ingestion(settings: Settings) -> Iterator[Ingestion]:
    with running_ingestion(settings) as ing:
        yield ing


def test_exclusion_entry_raises_one_alert_with_evidence_and_closes(
    settings: Settings, ingestion: Ingestion
) -> None:
    url = settings.database_url
    assert url
    case, dev, zone = setup_case(url, "BR-1")
    gw = Gateway(settings, "BR-1")
    t = datetime.now(UTC) - timedelta(minutes=30)
    walk = [(t + timedelta(seconds=30 * i), *offset(e), 8.0) for i, e in enumerate(
        [600, 400, 250, 100, 0, -20, 10, 0, 30, 250, 400, 600])]
    for p in walk:
        gw.fixes([p])
    got = wait_alerts(url, case, 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alerts(url, case)[0]["episode_open"]:
        time.sleep(0.05)
    got = alerts(url, case)
    assert len(got) == 1
    a = got[0]
    assert a["type"] == "exclusion_zone_entered" and a["severity"] == "critical"
    assert a["zone_id"] == zone and a["device_id"] == dev
    assert not a["episode_open"] and a["ended_at"] is not None
    ev = a["evidence"]
    assert ev["max_depth_m"] > 100
    assert ev["first_fix"]["ts"] and ev["last_fix"]["ts"]
    with psycopg.connect(url) as c:
        kinds = [r[0] for r in c.execute(
            "SELECT kind FROM alert_events WHERE alert_id = %s ORDER BY id", (a["id"],))]
        assert kinds == ["opened", "episode_closed"]
        # Rapid mode: 15 s on opening, the high-risk normal interval on closing.
        params = [r[0] for r in c.execute(
            "SELECT params FROM commands WHERE device_id = %s AND type = 'set_interval'"
            " ORDER BY created_at", (dev,))]
        assert params == [{"fix_interval_s": 15}, {"fix_interval_s": 30}]
        state = c.execute("SELECT last_ts FROM geofence_states WHERE device_id = %s", (dev,)).fetchone()
        last = walk[-1][0]
        assert state is not None and state[0] == last.replace(microsecond=last.microsecond // 1000 * 1000)
    gw.close()


def set_intervals(url: str, dev: uuid.UUID) -> list[int]:
    with psycopg.connect(url) as c:
        return [r[0]["fix_interval_s"] for r in c.execute(
            "SELECT params FROM commands WHERE device_id = %s AND type = 'set_interval'"
            " ORDER BY created_at", (dev,))]


def test_approach_that_turns_back_restores_the_normal_interval(
    settings: Settings, ingestion: Ingestion
) -> None:
    """Rapid mode on an approach episode, and back to the case's interval when it closes."""
    url = settings.database_url
    assert url
    case, dev, _ = setup_case(url, "BR-5", buffer_m=100)
    gw = Gateway(settings, "BR-5")
    t = datetime.now(UTC) - timedelta(minutes=30)
    walk = [(t + timedelta(seconds=30 * i), *offset(e), 8.0) for i, e in enumerate(
        [800, 500, 200, 190, 200, 210, 200, 500, 800, 900])]
    for p in walk:
        gw.fixes([p])
    wait_alerts(url, case, 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alerts(url, case)[0]["episode_open"]:
        time.sleep(0.05)
    got = alerts(url, case)
    assert [a["type"] for a in got] == ["exclusion_zone_approach"]
    assert not got[0]["episode_open"]
    # High risk: 15 s while approaching, 30 s once the person turned back.
    assert set_intervals(url, dev) == [15, 30]
    gw.close()


def test_late_upload_raises_a_late_alert_once(settings: Settings, ingestion: Ingestion) -> None:
    url = settings.database_url
    assert url
    case, _, _ = setup_case(url, "BR-2")
    gw = Gateway(settings, "BR-2")
    now = datetime.now(UTC)
    # Live fixes far away (after the gap)...
    gw.fixes([(now - timedelta(minutes=5 - i), *offset(2000), 8.0) for i in range(3)])
    time.sleep(1.0)
    assert alerts(url, case) == []
    # ...then the buffered upload from 2 hours ago, with an exclusion entry.
    t = now - timedelta(hours=2)
    late = [(t + timedelta(seconds=30 * i), *offset(e), 8.0)
            for i, e in enumerate([800, 300, 0, 10, 0, 300, 800])]
    gw.fixes(late)
    got = wait_alerts(url, case, 1)
    time.sleep(0.5)
    # Re-sending the same upload (a redelivery) changes nothing.
    gw.seq -= len(late)
    gw.fixes(late)
    time.sleep(1.0)
    got = alerts(url, case)
    assert len(got) == 1
    a = got[0]
    assert a["late"] is True and a["delay_s"] > 3600
    assert a["type"] == "exclusion_zone_entered"
    gw.close()


def test_strap_tamper_opens_and_closes_but_stays_for_the_officer(
    settings: Settings, ingestion: Ingestion
) -> None:
    url = settings.database_url
    assert url
    case, _, _ = setup_case(url, "BR-3")
    gw = Gateway(settings, "BR-3")
    now = datetime.now(UTC)
    gw.event(now - timedelta(seconds=60), "strap_open")
    gw.event(now - timedelta(seconds=50), "strap_open")
    got = wait_alerts(url, case, 1)
    gw.event(now - timedelta(seconds=10), "strap_closed")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alerts(url, case)[0]["episode_open"]:
        time.sleep(0.05)
    got = alerts(url, case)
    assert len(got) == 1
    assert got[0]["type"] == "strap_tamper" and got[0]["severity"] == "critical"
    assert got[0]["episode_open"] is False and got[0]["status"] == "open"
    gw.close()


def test_zone_changes_reach_the_running_engine(settings: Settings, ingestion: Ingestion) -> None:
    url = settings.database_url
    assert url
    case, _, zone = setup_case(url, "BR-4")
    gw = Gateway(settings, "BR-4")
    now = datetime.now(UTC)
    gw.fixes([(now - timedelta(minutes=20), *offset(600), 8.0)])
    time.sleep(0.5)
    # Move the zone 1 km east while the worker runs: the next fixes there violate it.
    with psycopg.connect(url) as c:
        c.execute("UPDATE zones SET circle = %s WHERE id = %s",
                  (Jsonb({"center": [CENTER[0] + 1000 / (M_PER_DEG_LAT * math.cos(math.radians(CENTER[1]))), CENTER[1]],
                          "radius_m": 150}), zone))
    # (two fixes spanning 30 s: no single fix opens a violation)
    gw.fixes([(now - timedelta(minutes=19), *offset(1000), 8.0),
              (now - timedelta(minutes=19) + timedelta(seconds=30), *offset(1005), 8.0)])
    got = wait_alerts(url, case, 1)
    assert got[0]["type"] == "exclusion_zone_entered"
    gw.close()


def test_curfew_start_episode_closes_when_the_person_comes_home(
    settings: Settings, ingestion: Ingestion
) -> None:
    """The curfew-start rule opens `inclusion_zone_left` from the last fix (outside the
    engine); the engine adopts it, so two fixes at home close it at once, not at 06:00."""
    url = settings.database_url
    assert url
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=10)
    end = start + timedelta(hours=8)
    schedule = {"windows": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                             "start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}]}
    with psycopg.connect(url) as conn:
        w = World(conn)
        case = w.case(tz="UTC")
        zone = w.zone(case, radius_m=100, schedule=schedule)
        dev = w.device(last_seen=now - timedelta(minutes=1))  # talking: no silence alert
        w.assign(dev, case, start - timedelta(days=3))
        w.fix(dev, start - timedelta(minutes=3), *near(*HOME, north_m=600), acc=15)
        curfew_starts(conn, since=start - timedelta(seconds=30), now=start)
        conn.commit()
        (a,) = w.alerts(case)
        assert a["type"] == "inclusion_zone_left" and a["zone_id"] == zone and a["episode_open"]
        gw = Gateway(settings, w.serial(dev))
        try:
            # the next fixes are at home (the engine never saw this person outside)
            gw.fixes([(start + timedelta(minutes=4), *near(*HOME, east_m=10), 8.0),
                      (start + timedelta(minutes=5), *near(*HOME, east_m=-5), 8.0)])
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and w.alerts(case)[0]["episode_open"]:
                time.sleep(0.05)
        finally:
            gw.close()
        (a,) = w.alerts(case)
        assert not a["episode_open"], "the curfew-start episode stayed open after coming home"
        assert start + timedelta(minutes=4) <= a["ended_at"] <= start + timedelta(minutes=5)


def test_silence_that_ended_between_two_passes_is_still_alerted(
    settings: Settings, ingestion: Ingestion
) -> None:
    """A device silent past its communication_lost threshold that talks again before the
    next silence pass gets its alert from the ingest, closed and late, keyed as the
    scheduler would key it; a short silence or an alert already open gets nothing new."""
    url = settings.database_url
    assert url
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        w = World(conn)

        def device(silent: timedelta) -> tuple[uuid.UUID, uuid.UUID]:
            case = w.case(risk="medium")  # threshold max(3 x 120 s, 10 min) = 10 min
            dev = w.device(last_seen=now - silent)
            w.assign(dev, case, now - timedelta(days=1))
            return case, dev

        gap_case, gap_dev = device(timedelta(minutes=15))
        short_case, short_dev = device(timedelta(minutes=5))
        open_case, open_dev = device(timedelta(minutes=20))
        (last_open,) = conn.execute("SELECT last_seen FROM devices WHERE id = %s",
                                    (open_dev,)).fetchone()  # type: ignore[misc]
        open_episode(conn, case_id=open_case, type=AlertType.COMMUNICATION_LOST,
                     started_at=last_open + timedelta(minutes=10), device_id=open_dev,
                     evidence={})
        conn.commit()
        (last_gap,) = conn.execute("SELECT last_seen FROM devices WHERE id = %s",
                                   (gap_dev,)).fetchone()  # type: ignore[misc]
        for dev in (gap_dev, short_dev, open_dev):
            gw = Gateway(settings, w.serial(dev))
            gw.fixes([(datetime.now(UTC) - timedelta(seconds=5), *near(*HOME), 8.0)])
            gw.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not w.alerts(gap_case):
            time.sleep(0.05)
        (a,) = w.alerts(gap_case)
        assert a["type"] == "communication_lost" and a["device_id"] == gap_dev
        assert a["started_at"] == last_gap + timedelta(minutes=10)
        assert not a["episode_open"] and a["late"]
        assert now - timedelta(seconds=5) < a["ended_at"] < datetime.now(UTC)
        assert a["evidence"]["trigger"] == "device_talked_again"
        # the device's other fixes were stored (so the batches of the others were too)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and conn.execute(
                "SELECT count(*) FROM fixes WHERE device_id = ANY(%s)",
                ([short_dev, open_dev],)).fetchone()[0] < 2:  # type: ignore[index]
            time.sleep(0.05)
        conn.commit()
        assert w.alerts(short_case) == []
        assert [x["type"] for x in w.alerts(open_case)] == ["communication_lost"]
