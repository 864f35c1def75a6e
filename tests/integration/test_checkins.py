"""Biometric check-ins and check-in requests against the real database.

These are app-computed embeddings (the v1.0 form) from phones an admin marked trusted
for biometrics; frames and untrusted devices: `test_biometric_checkins.py`. Check-ins go
through the ingest pipeline's `BatchWriter` with the biometric judge and the
check-in outcomes stage, so the stored rows, the verdicts and their side effects are what
production does.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import psycopg
import pytest

from db.engine import connect
from devices.biometrics import encrypt_template
from devices.checkins import DEFAULT_CHALLENGES, BiometricCheckins, CheckinOutcomes
from devices.pipeline import BatchWriter, DeviceDirectory, RawMessage, decode_stage
from devices.scheduled import (
    CheckinPlanConfig,
    detect_missed_checkins,
    dispatch_checkin_requests,
    plan_random_checkins,
    random_times,
    resolve_late_checkins,
    resolve_policy,
)
from devices.service import prepare_staging
from tests.integration.scheduler_world import World, minutes

KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()
PREFIX = "pm/v1"
DIM = 128


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with connect(database_url) as c:
        yield c


@pytest.fixture
def world(conn: psycopg.Connection[Any]) -> World:
    return World(conn)


def enrol(conn: psycopg.Connection[Any], subject: uuid.UUID, vector: np.ndarray) -> None:
    conn.execute(
        "INSERT INTO biometric_templates (subject_id, method, dim, ciphertext)"
        " VALUES (%s, 'face', %s, %s)",
        (subject, vector.size, encrypt_template(KEY, vector, subject_id=subject)),
    )
    conn.commit()


def ingest(conn: psycopg.Connection[Any], serial: str, items: list[dict[str, Any]]) -> Any:
    writer = BatchWriter(prefix=PREFIX, checkin_judge=BiometricCheckins(key=KEY),
                         after_store=[CheckinOutcomes()])
    raw = RawMessage(
        topic=f"{PREFIX}/devices/{serial}/checkins", payload=orjson.dumps({"checkins": items}),
        mid=1, qos=1, retain=False, generation=0, received_at=time.time(),
    )
    prepare_staging(conn)
    res = writer.write(conn, [decode_stage(raw, prefix=PREFIX)], directory=DeviceDirectory())
    conn.commit()
    return res


def item(seq: int, ts: datetime, emb: np.ndarray, liveness: float,
         request_id: uuid.UUID | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": seq, "ts": ts.isoformat(), "method": "face",
                           "embedding": [float(x) for x in emb], "liveness": liveness}
    if request_id is not None:
        out["request_id"] = str(request_id)
    return out


def test_wrong_face_fails_right_face_passes(conn: psycopg.Connection[Any], world: World) -> None:
    rng = np.random.default_rng(50)
    template = rng.normal(size=DIM)
    subject = world.subject()
    enrol(conn, subject, template)
    case = world.case(subject=subject, risk="high")
    phone = world.device(kind="phone", trusted_biometrics=True)
    world.assign(phone, case, datetime.now(UTC) - timedelta(days=1))
    now = datetime.now(UTC)
    rid = uuid.uuid4()
    conn.execute(
        "INSERT INTO checkin_requests (id, case_id, device_id, source, due_at, deadline,"
        " command_id, status) VALUES (%s, %s, %s, 'officer', %s, %s, %s, 'sent')",
        (rid, case, phone, now - minutes(3), now + minutes(12), rid),
    )
    conn.commit()

    stranger = rng.normal(size=DIM)
    same = template + rng.normal(scale=0.25, size=DIM)  # the same face, another photo
    res = ingest(conn, world.serial(phone), [
        item(1, now - minutes(2), stranger, 0.97, rid),  # wrong face
        item(2, now - minutes(1.5), same, 0.42, rid),  # right face, a photo of a photo
        item(3, now - minutes(1), same, 0.95, rid),  # right face, live
    ])
    assert res.stored["checkins"] == 3
    rows = conn.execute(
        "SELECT seq, similarity, passed, case_id FROM checkins ORDER BY seq").fetchall()
    assert [r[2] for r in rows] == [False, False, True]
    assert rows[0][1] < 0.3 and rows[1][1] > 0.9 and rows[2][1] > 0.9
    assert all(r[3] == case for r in rows)

    failed = world.alerts(case, "checkin_failed")
    assert [a["evidence"]["reason"] for a in failed] == ["face_mismatch", "liveness"]
    assert all(a["severity"] == "high" and not a["episode_open"] for a in failed)
    status = conn.execute("SELECT status, resolved_at FROM checkin_requests WHERE id = %s",
                          (rid,)).fetchone()
    assert status == ("passed", now - minutes(1))
    # passed in time: never missed
    assert detect_missed_checkins(conn, now=now + minutes(20)).missed == 0
    conn.commit()
    assert world.alerts(case, "checkin_missed") == []

    # a redelivered message changes nothing
    ingest(conn, world.serial(phone), [item(1, now - minutes(2), stranger, 0.97, rid)])
    assert len(world.alerts(case, "checkin_failed")) == 2


def test_no_template_fails(conn: psycopg.Connection[Any], world: World) -> None:
    case = world.case()
    phone = world.device(kind="phone", trusted_biometrics=True)
    world.assign(phone, case, datetime.now(UTC) - timedelta(days=1))
    ingest(conn, world.serial(phone),
           [item(1, datetime.now(UTC), np.ones(DIM), 0.99)])
    (a,) = world.alerts(case, "checkin_failed")
    assert a["evidence"]["reason"] == "no_template"


def test_random_requests_follow_policy() -> None:
    cfg = CheckinPlanConfig()
    assert resolve_policy(None, "high", cfg).per_day > resolve_policy(None, "medium", cfg).per_day
    pol = resolve_policy({"per_day": 4, "from_hour": 9, "to_hour": 21}, "low", cfg)
    tz = ZoneInfo("Asia/Almaty")
    case = uuid.uuid4()
    day = datetime(2026, 11, 25).date()
    times = random_times(case_id=case, day=day, policy=pol, tz=tz)
    assert times == random_times(case_id=case, day=day, policy=pol, tz=tz)  # deterministic
    local = [t.astimezone(tz) for _, t in times]
    assert len(local) == 4 and all(9 <= t.hour < 21 and t.date() == day for t in local)
    assert [t.hour // 3 for t in local] == [3, 4, 5, 6]  # one per 3-hour slot
    other = random_times(case_id=uuid.uuid4(), day=day, policy=pol, tz=tz)
    assert [t for _, t in other] != [t for _, t in times]


def test_unanswered_request_gets_checkin_missed(
    conn: psycopg.Connection[Any], world: World,
) -> None:
    tz = "Asia/Almaty"
    case = world.case(tz=tz, policy={"per_day": 24, "from_hour": 0, "to_hour": 24})
    low = world.case(risk="low")  # no policy, low risk: no random check-ins
    phone = world.device(kind="phone", trusted_biometrics=True)
    bracelet = world.device()
    world.assign(bracelet, case, datetime(2026, 1, 1, tzinfo=UTC))
    world.assign(phone, case, datetime(2026, 1, 1, tzinfo=UTC))
    world.assign(world.device(), low, datetime(2026, 1, 1, tzinfo=UTC))
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)

    n = plan_random_checkins(conn, now=now)
    conn.commit()
    assert n in (1, 2)  # one per hour-slot within the next hour
    assert plan_random_checkins(conn, now=now) == 0  # idempotent
    conn.commit()
    reqs = conn.execute("SELECT id, due_at, deadline, case_id FROM checkin_requests"
                        " ORDER BY due_at").fetchall()
    assert {r[3] for r in reqs} == {case}
    rid, due, deadline, _ = reqs[0]
    assert now <= due <= now + timedelta(hours=1) and deadline - due == timedelta(minutes=15)

    # not due yet: nothing sent
    assert dispatch_checkin_requests(conn, now=due - timedelta(seconds=1), publish=None).sent == 0
    published: list[uuid.UUID] = []
    res = dispatch_checkin_requests(conn, now=due, publish=published.append)
    assert res.sent == 1 and published == [rid]
    cmd = conn.execute("SELECT device_id, type, params FROM commands WHERE id = %s",
                       (rid,)).fetchone()
    assert cmd is not None and cmd[:2] == (phone, "request_checkin")  # to the phone
    challenge = cmd[2].pop("challenge")  # a random gesture, kept with the request
    assert cmd[2] == {"deadline_s": 900} and challenge in DEFAULT_CHALLENGES
    assert conn.execute("SELECT challenge FROM checkin_requests WHERE id = %s",
                        (rid,)).fetchone() == (challenge,)
    assert conn.execute("SELECT status FROM checkin_requests WHERE id = %s",
                        (rid,)).fetchone() == ("sent",)
    conn.commit()

    # no answer: missed at the deadline, not before; once
    assert detect_missed_checkins(conn, now=deadline - timedelta(seconds=1)).missed == 0
    res2 = detect_missed_checkins(conn, now=deadline)
    conn.commit()
    assert res2.missed == 1
    (a,) = world.alerts(case, "checkin_missed")
    assert a["severity"] == "medium" and a["started_at"] == deadline
    assert a["evidence"]["request_id"] == str(rid) and a["evidence"]["source"] == "random"
    assert detect_missed_checkins(conn, now=deadline + minutes(5)).missed == 0
    conn.commit()
    assert len(world.alerts(case, "checkin_missed")) == 1
    assert conn.execute("SELECT status FROM checkin_requests WHERE id = %s",
                        (rid,)).fetchone() == ("missed",)


def test_late_dispatch_keeps_the_full_answer_time_and_drops_stale(
    conn: psycopg.Connection[Any], world: World,
) -> None:
    case = world.case()
    phone = world.device(kind="phone", trusted_biometrics=True)
    world.assign(phone, case, datetime(2026, 1, 1, tzinfo=UTC))
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    late, stale = uuid.uuid4(), uuid.uuid4()
    for rid, due in ((late, now - minutes(20)), (stale, now - minutes(90))):
        conn.execute(
            "INSERT INTO checkin_requests (id, case_id, source, due_at, deadline)"
            " VALUES (%s, %s, 'random', %s, %s)", (rid, case, due, due + minutes(15)))
    conn.commit()
    res = dispatch_checkin_requests(conn, now=now, publish=None)
    assert (res.sent, res.dropped_stale) == (1, 1)
    row = conn.execute("SELECT status, deadline FROM checkin_requests WHERE id = %s",
                       (late,)).fetchone()
    assert row == ("sent", now + minutes(15))


def test_a_checkin_stored_after_its_request_was_missed_resolves_the_alert(
    conn: psycopg.Connection[Any], world: World,
) -> None:
    """The phone uploaded late: the check-in was taken before the deadline but stored
    after `checkin_missed` was raised; the request becomes `passed` and the system
    resolves the alert, saying why on its timeline. An alert an officer already resolved
    keeps the officer's resolution and only gets the explanation."""
    rng = np.random.default_rng(7)
    template = rng.normal(size=DIM)
    subject = world.subject()
    enrol(conn, subject, template)
    case = world.case(subject=subject)
    phone = world.device(kind="phone", trusted_biometrics=True)
    world.assign(phone, case, datetime.now(UTC) - timedelta(days=1))
    deadline = datetime.now(UTC).replace(microsecond=0) - minutes(30)
    rids = [uuid.uuid4(), uuid.uuid4()]
    for k, rid in enumerate(rids):
        conn.execute(
            "INSERT INTO checkin_requests (id, case_id, device_id, source, due_at, deadline,"
            " status) VALUES (%s, %s, %s, 'officer', %s, %s, 'sent')",
            (rid, case, phone, deadline - minutes(15 + 60 * k), deadline - minutes(60 * k)))
    conn.commit()
    assert detect_missed_checkins(conn, now=deadline + minutes(1)).missed == 2
    conn.commit()
    alerts = {a["evidence"]["request_id"]: a for a in world.alerts(case, "checkin_missed")}
    officer_resolved = alerts[str(rids[1])]["id"]
    conn.execute("UPDATE alerts SET status = 'resolved', resolution = 'violation_confirmed'"
                 " WHERE id = %s", (officer_resolved,))
    conn.commit()
    assert resolve_late_checkins(conn, now=deadline + minutes(2)).passed_late == 0  # nothing yet

    same = template + rng.normal(scale=0.25, size=DIM)
    ingest(conn, world.serial(phone), [
        item(1, deadline - minutes(5), same, 0.95, rids[0]),  # in time, stored 30 min late
        item(2, deadline - minutes(65), same, 0.95, rids[1]),
    ])
    now = datetime.now(UTC)
    res = resolve_late_checkins(conn, now=now)
    conn.commit()
    assert (res.passed_late, res.alerts_resolved) == (2, 1)
    assert conn.execute("SELECT status, resolved_at FROM checkin_requests WHERE id = %s",
                        (rids[0],)).fetchone() == ("passed", deadline - minutes(5))
    a = next(x for x in world.alerts(case, "checkin_missed") if x["id"] == alerts[str(rids[0])]["id"])
    assert (a["status"], a["resolution"]) == ("resolved", "false_alarm")
    kind, data = world.timeline(a["id"])[-1]
    assert kind == "resolved" and data["reason"] == "checkin_arrived_late"
    assert data["checkin_ts"].startswith((deadline - minutes(5)).isoformat()[:19])
    b = next(x for x in world.alerts(case, "checkin_missed") if x["id"] == officer_resolved)
    assert b["resolution"] == "violation_confirmed"
    assert world.timeline(officer_resolved)[-1][0] == "note"
    # once: the requests are no longer `missed`
    assert resolve_late_checkins(conn, now=now).passed_late == 0
