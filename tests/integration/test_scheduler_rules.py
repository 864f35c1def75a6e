"""Timed rules against the real database with a controlled clock (no sleeping):
silence, curfew starts (incl. DST), escalation, notifications, retention."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from alerts.models import AlertType
from alerts.notify import Delivery, Route, dispatch_notifications
from alerts.scheduled import EscalationPolicy, PolygonCache, curfew_starts, escalate_overdue
from alerts.service import open_episode
from db.engine import connect
from devices.scheduled import SilenceConfig, evaluate_silence
from tests.integration.scheduler_world import HOME, World, minutes, offset, utc


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with connect(database_url) as c:
        yield c


@pytest.fixture
def world(conn: psycopg.Connection[Any]) -> World:
    return World(conn)


def silence(conn: psycopg.Connection[Any], now: datetime) -> Any:
    res = evaluate_silence(conn, now=now, config=SilenceConfig())
    conn.commit()
    return res


# --------------------------------------------------------------------------- silence


def test_silent_11_minutes_gets_communication_lost_and_closes_when_it_talks(
    conn: psycopg.Connection[Any], world: World,
) -> None:
    t0 = utc(2026, 11, 25, 10, 0)
    case = world.case(risk="medium")  # upload 120 s → threshold max(6 min, 10 min) = 10 min
    dev = world.device(last_seen=t0, last_good_fix_at=t0)
    world.assign(dev, case, t0 - timedelta(days=1))

    assert silence(conn, t0 + minutes(9)).communication_opened == 0
    res = silence(conn, t0 + minutes(11))
    assert res.communication_opened == 1
    (a,) = world.alerts(case, "communication_lost")
    assert a["episode_open"] and a["device_id"] == dev and a["severity"] == "high"
    assert a["started_at"] == t0 + minutes(10)
    assert a["evidence"]["silent_s"] == 11 * 60
    # every 30 s again: still one alert
    for k in range(1, 5):
        assert silence(conn, t0 + minutes(11) + timedelta(seconds=30 * k)).communication_opened == 0
    assert len(world.alerts(case, "communication_lost")) == 1

    world.seen(dev, t0 + minutes(14))
    res = silence(conn, t0 + minutes(14.5))
    assert res.communication_closed == 1
    (a,) = world.alerts(case, "communication_lost")
    assert not a["episode_open"] and a["ended_at"] == t0 + minutes(14)
    assert [k for k, _ in world.timeline(a["id"])] == ["opened", "episode_closed"]
    # silent again later: a new episode, a new alert
    silence(conn, t0 + minutes(25))
    assert len(world.alerts(case, "communication_lost")) == 2


def test_never_heard_counts_from_assignment_and_high_risk_threshold(
    conn: psycopg.Connection[Any], world: World,
) -> None:
    t0 = utc(2026, 11, 25, 10, 0)
    low = world.case(risk="low")  # upload 300 s → 15 min
    dl = world.device(last_seen=t0, last_good_fix_at=t0)
    world.assign(dl, low, t0 - timedelta(days=1))
    fresh = world.case(risk="high")
    df = world.device()  # never talked
    world.assign(df, fresh, t0)
    silence(conn, t0 + minutes(12))
    assert world.alerts(low) == []
    assert [a["type"] for a in world.alerts(fresh)] == ["communication_lost"]
    silence(conn, t0 + minutes(16))
    assert [a["type"] for a in world.alerts(low)] == ["communication_lost"]


def test_location_lost_when_talking_without_good_fix(
    conn: psycopg.Connection[Any], world: World,
) -> None:
    t0 = utc(2026, 11, 25, 10, 0)
    case = world.case()
    dev = world.device(last_seen=t0, last_good_fix_at=t0)
    world.assign(dev, case, t0 - timedelta(days=1))
    # keeps talking (bad fixes only, acc 800 m)
    for m in (5, 10, 15, 20, 25, 29):
        world.fix(dev, t0 + minutes(m), *HOME, acc=800)
    assert silence(conn, t0 + minutes(29)).location_opened == 0
    world.fix(dev, t0 + minutes(31), *HOME, acc=800)
    res = silence(conn, t0 + minutes(31))
    assert res.location_opened == 1 and res.communication_opened == 0
    (a,) = world.alerts(case, "location_lost")
    assert a["started_at"] == t0 + minutes(30) and a["severity"] == "medium"
    world.fix(dev, t0 + minutes(33), *HOME, acc=20)
    assert silence(conn, t0 + minutes(33)).location_closed == 1
    # unassigned devices' episodes close too
    world.seen(dev, t0 + minutes(63))
    silence(conn, t0 + minutes(64))
    assert len([a for a in world.alerts(case, "location_lost") if a["episode_open"]]) == 1
    conn.execute("UPDATE device_assignments SET unassigned_at = %s WHERE device_id = %s",
                 (t0 + minutes(65), dev))
    conn.commit()
    res = silence(conn, t0 + minutes(66))
    assert res.location_closed == 1
    assert not any(a["episode_open"] for a in world.alerts(case))


# --------------------------------------------------------------------------- curfew starts


def local(tz: str, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def test_outside_home_at_22_almaty_opens_at_22(
    conn: psycopg.Connection[Any], world: World,
) -> None:
    tz = "Asia/Almaty"
    start = local(tz, 2026, 11, 25, 22, 0)
    out_case = world.case(tz=tz)
    zone = world.zone(out_case, radius_m=100)
    d_out = world.device(last_seen=start - minutes(1))
    world.assign(d_out, out_case, start - timedelta(days=3))
    world.fix(d_out, start - minutes(3), *offset(*HOME, north_m=600), acc=15)

    in_case = world.case(tz=tz)
    world.zone(in_case, radius_m=100)
    d_in = world.device()
    world.assign(d_in, in_case, start - timedelta(days=3))
    world.fix(d_in, start - minutes(2), *offset(*HOME, east_m=30), acc=10)

    edge_case = world.case(tz=tz)  # 105 m from the centre, acc 20: uncertain → nothing
    world.zone(edge_case, radius_m=100)
    d_edge = world.device()
    world.assign(d_edge, edge_case, start - timedelta(days=3))
    world.fix(d_edge, start - minutes(2), *offset(*HOME, north_m=105), acc=20)

    talk_case = world.case(tz=tz)  # talks, no fix for 40 min → location_lost
    world.zone(talk_case)
    d_talk = world.device()
    world.assign(d_talk, talk_case, start - timedelta(days=3))
    world.fix(d_talk, start - minutes(40), *HOME)
    world.seen(d_talk, start - minutes(1))

    mute_case = world.case(tz=tz)  # silent for 40 min → communication_lost
    world.zone(mute_case)
    d_mute = world.device()
    world.assign(d_mute, mute_case, start - timedelta(days=3))
    world.fix(d_mute, start - minutes(40), *HOME)

    # the pass before 22:00 finds no window start
    res = curfew_starts(conn, since=start - minutes(1), now=start - timedelta(seconds=30))
    conn.commit()
    assert res.starting_zones == 0 and res.opened == []

    res = curfew_starts(conn, since=start - timedelta(seconds=30), now=start)
    conn.commit()
    assert res.starting_zones == 5
    assert (res.outside, res.location_lost, res.communication_lost) == (1, 1, 1)
    (a,) = world.alerts(out_case)
    assert a["type"] == "inclusion_zone_left" and a["zone_id"] == zone
    assert a["started_at"] == start and a["episode_open"] and a["device_id"] == d_out
    assert a["evidence"]["trigger"] == "window_start"
    assert 480 < a["evidence"]["distance_m"] < 520
    assert world.alerts(in_case) == [] and world.alerts(edge_case) == []
    assert [x["type"] for x in world.alerts(talk_case)] == ["location_lost"]
    assert [x["type"] for x in world.alerts(mute_case)] == ["communication_lost"]
    assert world.alerts(talk_case)[0]["started_at"] == start

    # the next pass does not see the start again; a re-run of the same interval is idempotent
    res = curfew_starts(conn, since=start, now=start + timedelta(seconds=30))
    assert res.starting_zones == 0
    curfew_starts(conn, since=start - timedelta(seconds=30), now=start)
    conn.commit()
    assert len(world.alerts(out_case)) == 1

    # at 06:00 the window ends: the curfew episode closes
    end = local(tz, 2026, 11, 26, 6, 0)
    res = curfew_starts(conn, since=end - timedelta(seconds=30), now=end)
    conn.commit()
    assert res.ended_closed == 1
    (a,) = world.alerts(out_case)
    assert not a["episode_open"] and a["ended_at"] == end


def test_polygon_home_zone(conn: psycopg.Connection[Any], world: World) -> None:
    tz = "Asia/Almaty"
    start = local(tz, 2026, 11, 25, 22, 0)
    lat, lon = HOME
    d = 0.001
    square = {"type": "Polygon", "coordinates": [[[lon, lat], [lon + d, lat], [lon + d, lat + d],
                                                  [lon, lat + d], [lon, lat]]]}
    cases = []
    for north in (50.0, 400.0):  # inside (the square is ~111 m tall), then outside
        case = world.case(tz=tz)
        world.zone(case, geometry=square)
        dev = world.device()
        world.assign(dev, case, start - timedelta(days=1))
        world.fix(dev, start - minutes(1), *offset(lat, lon + d / 2, north_m=north), acc=10)
        cases.append(case)
    cache = PolygonCache()
    # an idle pass (no window starts) compiles the polygons ahead of the start
    assert curfew_starts(conn, since=start - minutes(2), now=start - minutes(1),
                         polygons=cache).starting_zones == 0
    assert len(cache._zones) == 2
    res = curfew_starts(conn, since=start - minutes(1), now=start, polygons=cache)
    conn.commit()
    assert res.evaluated == 2 and res.outside == 1
    assert world.alerts(cases[0]) == []
    assert [a["type"] for a in world.alerts(cases[1])] == ["inclusion_zone_left"]


@pytest.mark.parametrize("days", [
    # spring forward in Europe/London on Sun 29 March 2026 (01:00 UTC)
    [(2026, 3, 28), (2026, 3, 29), (2026, 3, 30)],
    # fall back on Sun 25 October 2026 (01:00 UTC)
    [(2026, 10, 24), (2026, 10, 25), (2026, 10, 26)],
])
def test_dst_change_london_window_starts_at_local_wall_clock(
    conn: psycopg.Connection[Any], world: World, days: list[tuple[int, int, int]],
) -> None:
    tz = "Europe/London"
    home = (51.5072, -0.1276)
    case = world.case(tz=tz)
    world.zone(case, center=home, radius_m=80)
    dev = world.device()
    world.assign(dev, case, utc(2026, 1, 1))
    seen_utc_hours = set()
    for y, m, d in days:
        start = local(tz, y, m, d, 22, 0)
        seen_utc_hours.add(start.hour)
        world.fix(dev, start - minutes(5), *offset(*home, east_m=900), acc=12)
        # one pass over the whole afternoon and evening: the start is found exactly
        res = curfew_starts(conn, since=start - timedelta(hours=6), now=start + minutes(20))
        conn.commit()
        assert res.outside == 1, (y, m, d)
        latest = world.alerts(case, "inclusion_zone_left")[-1]
        assert latest["started_at"] == start
        assert latest["started_at"].astimezone(ZoneInfo(tz)).strftime("%H:%M") == "22:00"
        # and the 06:00 end closes it
        end = local(tz, y, m, d + 1, 6, 0)
        curfew_starts(conn, since=end - minutes(1), now=end)
        conn.commit()
    assert seen_utc_hours == {21, 22}  # BST and GMT days
    assert len(world.alerts(case, "inclusion_zone_left")) == 3


def test_approved_absence_covers_the_start(conn: psycopg.Connection[Any], world: World) -> None:
    tz = "Asia/Almaty"
    start = local(tz, 2026, 11, 25, 22, 0)
    case = world.case(tz=tz)
    world.zone(case, exceptions=[{"from": (start - minutes(60)).isoformat(),
                                  "to": (start + minutes(90)).isoformat(), "reason": "work"}])
    dev = world.device()
    world.assign(dev, case, start - timedelta(days=1))
    world.fix(dev, start - minutes(2), *offset(*HOME, north_m=2000))
    curfew_starts(conn, since=start - minutes(1), now=start)
    conn.commit()
    assert world.alerts(case) == []
    # the absence ends at 23:30 while the curfew runs: that is a start
    world.fix(dev, start + minutes(85), *offset(*HOME, north_m=2000))
    res = curfew_starts(conn, since=start + minutes(89), now=start + minutes(90))
    conn.commit()
    assert res.outside == 1
    assert world.alerts(case)[0]["started_at"] == start + minutes(90)


# --------------------------------------------------------------------------- escalation


def test_unacknowledged_critical_alert_escalates_after_5_minutes_once(
    conn: psycopg.Connection[Any], world: World,
) -> None:
    boss = world.user("supervisor")
    sup = world.user("supervisor", supervisor=boss)
    officer = world.user("officer", supervisor=sup)
    case = world.case(officer=officer)
    dev = world.device()
    ep = open_episode(conn, case_id=case, type=AlertType.STRAP_TAMPER,
                      started_at=datetime.now(UTC), evidence={}, device_id=dev)
    low = open_episode(conn, case_id=case, type=AlertType.BATTERY_LOW,
                       started_at=datetime.now(UTC), evidence={}, device_id=dev)
    acked = open_episode(conn, case_id=case, type=AlertType.CASE_TAMPER,
                         started_at=datetime.now(UTC), evidence={}, device_id=dev)
    conn.execute("UPDATE alerts SET status = 'acknowledged', acknowledged_at = now(),"
                 " acknowledged_by = %s WHERE id = %s", (officer, acked.alert_id))
    conn.commit()
    created = conn.execute("SELECT created_at FROM alerts WHERE id = %s",
                           (ep.alert_id,)).fetchone()[0]  # type: ignore[index]
    policy = EscalationPolicy(max_level=3)

    def run(at: timedelta) -> list[Any]:
        out = escalate_overdue(conn, now=created + at, policy=policy)
        conn.commit()
        return out

    assert run(timedelta(minutes=4, seconds=59)) == []
    (e,) = run(timedelta(minutes=5))
    assert (e.alert_id, e.level, e.supervisor_id) == (ep.alert_id, 1, sup)
    # once per deadline period: nothing more at the same time, nor within the next 5 minutes
    assert run(timedelta(minutes=5)) == []
    assert run(timedelta(minutes=9, seconds=59)) == []
    row = conn.execute("SELECT escalation_level, escalated_at FROM alerts WHERE id = %s",
                       (ep.alert_id,)).fetchone()
    assert row == (1, created + timedelta(minutes=5))
    timeline = world.timeline(ep.alert_id)
    assert [k for k, _ in timeline] == ["opened", "escalated"]
    assert timeline[1][1]["supervisor_id"] == str(sup) and timeline[1][1]["level"] == 1
    # still unacknowledged a period later: the next level, to the supervisor's supervisor
    (e2,) = run(timedelta(minutes=10))
    assert (e2.level, e2.supervisor_id) == (2, boss)
    # acknowledged: no further escalation
    conn.execute("UPDATE alerts SET status = 'acknowledged', acknowledged_at = now()"
                 " WHERE id = %s", (ep.alert_id,))
    conn.commit()
    assert run(timedelta(hours=5)) == []
    levels = dict(conn.execute("SELECT id, escalation_level FROM alerts").fetchall())
    assert levels == {ep.alert_id: 2, low.alert_id: 0, acked.alert_id: 0}


# --------------------------------------------------------------------------- notifications


class Recorder:
    def __init__(self, name: str, fail: int = 0) -> None:
        self.name = name
        self.target = f"mem://{name}"
        self.fail = fail
        self.sent: list[Mapping[str, Any]] = []

    def send(self, payload: Mapping[str, Any]) -> Delivery:
        if self.fail > 0:
            self.fail -= 1
            return Delivery(ok=False, attempts=3, error="HTTP 503")
        self.sent.append(payload)
        return Delivery(ok=True, attempts=1, status_code=200)


def test_notifications_routed_once_and_retried(
    conn: psycopg.Connection[Any], world: World,
) -> None:
    sup = world.user("supervisor")
    officer = world.user(supervisor=sup)
    case = world.case(officer=officer)
    dev = world.device()
    crit = open_episode(conn, case_id=case, type=AlertType.STRAP_TAMPER,
                        started_at=datetime.now(UTC), evidence={"x": 1}, device_id=dev)
    open_episode(conn, case_id=case, type=AlertType.BATTERY_LOW,
                 started_at=datetime.now(UTC), evidence={}, device_id=dev)
    conn.commit()
    log_n, hook = Recorder("log"), Recorder("webhook", fail=1)
    notifiers = {"log": log_n, "webhook": hook}
    routes = [Route("log"), Route("webhook", types=frozenset({"strap_tamper"}))]
    now = datetime.now(UTC) + timedelta(seconds=5)

    r1 = dispatch_notifications(conn, now=now, notifiers=notifiers, routes=routes)
    assert (r1.delivered, r1.retrying) == (2, 1)
    assert {p["alert"]["type"] for p in log_n.sent} == {"strap_tamper", "battery_low"}
    assert hook.sent == []
    # the next run: nothing new; the failed webhook waits for its retry time
    r2 = dispatch_notifications(conn, now=now + timedelta(seconds=10), notifiers=notifiers,
                                routes=routes)
    assert (r2.delivered, r2.retrying) == (0, 0)
    r3 = dispatch_notifications(conn, now=now + timedelta(minutes=2), notifiers=notifiers,
                                routes=routes)
    assert r3.delivered == 1 and hook.sent[0]["alert"]["id"] == str(crit.alert_id)
    assert hook.sent[0]["recipient_id"] == str(officer)
    # escalation is announced to the supervisor
    created = conn.execute("SELECT created_at FROM alerts WHERE id = %s",
                           (crit.alert_id,)).fetchone()[0]  # type: ignore[index]
    escalate_overdue(conn, now=created + timedelta(minutes=5))
    conn.commit()
    r4 = dispatch_notifications(conn, now=created + timedelta(minutes=5, seconds=5),
                                notifiers=notifiers, routes=routes)
    assert r4.delivered == 2
    esc = hook.sent[-1]
    assert esc["event"] == "escalated" and esc["level"] == 1 and esc["recipient_id"] == str(sup)
    rows = conn.execute(
        "SELECT notifier, event, level, status, attempts FROM notification_deliveries"
        " WHERE alert_id = %s ORDER BY id", (crit.alert_id,),
    ).fetchall()
    assert rows == [("log", "opened", 0, "delivered", 1), ("webhook", "opened", 0, "delivered", 4),
                    ("log", "escalated", 1, "delivered", 1),
                    ("webhook", "escalated", 1, "delivered", 1)]


# --------------------------------------------------------------------------- retention


def test_retention_drops_whole_chunks_and_deletes_the_rest(
    database_url: str, conn: psycopg.Connection[Any], world: World, timescale: bool,
) -> None:
    from probation.audit.service import verify
    from probation.runtime.scheduler import run_retention

    now = utc(2026, 11, 25, 3, 30)
    old_day = utc(2020, 6, 1, 12)  # > 5 years ago
    mixed_day = utc(2020, 7, 1, 12)
    closed = world.case(status="closed", closed_at=utc(2021, 1, 1))  # closed > 5 years ago
    recent = world.case(status="closed", closed_at=utc(2024, 1, 1))
    active = world.case()
    d_closed, d_recent, d_active, d_spare = (world.device() for _ in range(4))
    world.assign(d_closed, closed, utc(2020, 1, 1), utc(2021, 1, 1))
    world.assign(d_recent, recent, utc(2020, 1, 1), utc(2024, 1, 1))
    world.assign(d_active, active, utc(2020, 7, 1))
    world.fix(d_closed, old_day, *HOME)  # the old chunk: only the long-closed case
    world.fix(d_spare, old_day + timedelta(hours=1), *HOME)  # unassigned device
    world.fix(d_closed, mixed_day, *HOME)  # the mixed chunk
    world.fix(d_recent, mixed_day + timedelta(hours=1), *HOME)
    world.fix(d_active, mixed_day + timedelta(hours=2), *HOME)
    world.fix(d_active, utc(2020, 6, 30, 12), *HOME)  # before its assignment: not protected
    world.fix(d_closed, utc(2026, 11, 1), *HOME)  # recent data of an old device: kept (< 5 y)
    conn.execute("INSERT INTO dead_letters (received_at, topic, reason, payload) VALUES"
                 " (%s, 't', 'not_json', 'x'), (%s, 't', 'not_json', 'y')",
                 (now - timedelta(days=91), now - timedelta(days=89)))
    conn.commit()

    detail = run_retention(database_url, now=now)
    left = conn.execute("SELECT device_id, ts FROM fixes ORDER BY ts").fetchall()
    conn.commit()
    assert left == [(d_recent, mixed_day + timedelta(hours=1)),
                    (d_active, mixed_day + timedelta(hours=2)),
                    (d_closed, utc(2026, 11, 1))]
    assert detail["dead_letters_deleted"] == 1
    if timescale:
        assert detail["chunks_dropped"]["fixes"] == 2  # 2020-06-01 and 2020-06-30
        assert detail["rows_deleted"]["fixes"] == 1  # the long-closed row in the mixed chunk
    else:
        assert detail["rows_deleted"]["fixes"] == 4
    from sqlmodel import Session

    from db.engine import get_engine

    with Session(get_engine(database_url)) as s:
        assert verify(s).ok
        entry = s.execute(__import__("sqlalchemy").text(
            "SELECT action, detail FROM audit_log ORDER BY id DESC LIMIT 1")).one()
    assert entry[0] == "retention.run" and entry[1]["retention_years"] == 5
    # idempotent
    again = run_retention(database_url, now=now)
    assert sum(again["rows_deleted"].values()) == 0 and again["dead_letters_deleted"] == 0
