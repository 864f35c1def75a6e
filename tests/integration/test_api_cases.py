"""Subjects (IIN, biometric enrolment), cases (CRUD, caseload with live status, filters,
pagination, closing), devices and assignments, events, check-ins and check-in requests."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import psycopg
from fastapi.testclient import TestClient

from devices.biometrics import decrypt_template, load_key
from probation.subjects.iin import make_iin
from tests.integration._api import World, insert_alert

pytest_plugins = ["tests.integration._api_fixtures"]


def _new_case(c: TestClient, w: World, who: str, officer: str, **extra: Any) -> dict[str, Any]:
    born = date(1991, 7, 3)
    s = c.post("/api/v1/subjects", headers=w.h(who),
               json={"iin": make_iin(born, "f", serial=uuid.uuid4().int % 9000),
                     "full_name": "Жанар Тестова", "birth_date": str(born)})
    assert s.status_code == 201, s.text
    body = {"subject_id": s.json()["id"], "officer_id": str(w.users[officer]),
            "court_order_ref": "2-123/2026", "starts_on": "2026-11-01", "ends_on": "2027-11-01",
            "risk_level": "medium", **extra}
    r = c.post("/api/v1/cases", headers=w.h(who), json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_subjects_and_biometric_enrolment(
    app_client: TestClient, world: World, database_url: str, settings: Any
) -> None:
    c = app_client
    born = date(2001, 12, 31)
    iin = make_iin(born, "m")
    r = c.post("/api/v1/subjects", headers=world.h("off1"),
               json={"iin": iin, "full_name": "Ерлан", "birth_date": "2001-12-31"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["has_biometric_template"] is False
    # a teammate who cannot see the new person is not told who has them
    dup = c.post("/api/v1/subjects", headers=world.h("off2"),
                 json={"iin": iin, "full_name": "Ерлан", "birth_date": "2001-12-31"})
    assert dup.status_code == 409 and dup.json()["code"] == "iin_unavailable"
    dup = c.post("/api/v1/subjects", headers=world.h("sup1"),
                 json={"iin": iin, "full_name": "Ерлан", "birth_date": "2001-12-31"})
    assert dup.status_code == 409 and dup.json()["code"] == "iin_taken"
    assert dup.json()["subject_id"] == sid
    mismatch = c.post("/api/v1/subjects", headers=world.h("off1"),
                      json={"iin": make_iin(born, "m", serial=77), "full_name": "X",
                            "birth_date": "2001-12-30"})
    assert mismatch.status_code == 422 and mismatch.json()["errors"][0]["code"] == "iin_birth_date"
    embedding = [((i * 37) % 101 - 50) / 50 for i in range(128)]
    r = c.post(f"/api/v1/subjects/{sid}/biometric-template", headers=world.h("off1"),
               json={"method": "face", "embedding": embedding})
    assert r.status_code == 201, r.text
    assert r.json() == {"subject_id": sid, "method": "face", "dim": 128,
                        "created_at": r.json()["created_at"]}
    assert "embedding" not in c.get(f"/api/v1/subjects/{sid}", headers=world.h("off1")).text
    assert c.get(f"/api/v1/subjects/{sid}", headers=world.h("off1")).json()["has_biometric_template"]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT dim, ciphertext FROM biometric_templates WHERE subject_id = %s",
                           (sid,)).fetchone()
    assert row is not None and row[0] == 128
    blob = bytes(row[1])
    assert orjson.dumps(embedding) not in blob
    plain = decrypt_template(load_key(settings.resolved_biometric_key()), blob,
                             subject_id=uuid.UUID(sid), method="face")
    assert max(abs(a - b) for a, b in zip(plain.tolist(), embedding, strict=True)) < 1e-6
    short = c.post(f"/api/v1/subjects/{sid}/biometric-template", headers=world.h("off1"),
                   json={"method": "face", "embedding": [0.1] * 10})
    assert short.status_code == 422 and short.json()["errors"][0]["field"] == "embedding"
    # a person with a case is visible only through that case
    _new_case(c, world, "off1", "off1")
    assert c.get(f"/api/v1/subjects/{world.subjects['off1']}", headers=world.h("off3")).status_code == 404


def test_case_lifecycle(app_client: TestClient, world: World, database_url: str) -> None:
    c = app_client
    case = _new_case(c, world, "off1", "off1", timezone="Europe/Berlin",
                     checkin_policy={"per_day": 3, "from_hour": 9, "to_hour": 18})
    assert case["status"] == "active" and case["timezone"] == "Europe/Berlin"
    assert case["checkin_policy"] == {"per_day": 3, "from_hour": 9, "to_hour": 18}
    live = c.get(f"/api/v1/cases/{case['id']}", headers=world.h("off1")).json()
    assert live["compliance"] == "unknown" and live["device"] is None and live["last_fix"] is None
    assert live["open_alerts"] == 0 and live["subject_name"] == "Жанар Тестова"
    # an officer cannot give a case to someone else; a supervisor can, within the team
    r = c.post("/api/v1/cases", headers=world.h("off1"),
               json={"subject_id": case["subject_id"], "officer_id": str(world.users["off2"]),
                     "court_order_ref": "x", "starts_on": "2026-01-01", "ends_on": "2026-02-01",
                     "risk_level": "low"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "officer_id"
    r = c.patch(f"/api/v1/cases/{case['id']}", headers=world.h("sup1"),
                json={"officer_id": str(world.users["off2"]), "risk_level": "high",
                      "checkin_policy": None})
    assert r.status_code == 200 and r.json()["officer_id"] == str(world.users["off2"])
    assert r.json()["checkin_policy"] is None
    assert c.get(f"/api/v1/cases/{case['id']}", headers=world.h("off1")).status_code == 404
    r = c.patch(f"/api/v1/cases/{case['id']}", headers=world.h("sup1"),
                json={"officer_id": str(world.users["off3"])})
    assert r.status_code == 422
    r = c.patch(f"/api/v1/cases/{case['id']}", headers=world.h("off2"), json={"ends_on": "2020-01-01"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "ends_on"
    # closing ends the device assignment and freezes the case
    dev = c.post("/api/v1/devices", headers=world.h("admin"),
                 json={"serial": "BR-NEW-1", "kind": "bracelet", "model": "X1", "firmware": "2.4"})
    assert dev.status_code == 201
    assert c.post(f"/api/v1/cases/{case['id']}/devices", headers=world.h("off2"),
                  json={"device_id": dev.json()["id"]}).status_code == 201
    with psycopg.connect(database_url) as conn:
        v0 = conn.execute("SELECT version FROM config_versions WHERE name = 'zones'").fetchone()
    r = c.post(f"/api/v1/cases/{case['id']}/close", headers=world.h("off2"), json={"reason": "served"})
    assert r.status_code == 200 and r.json()["status"] == "closed" and r.json()["closed_at"]
    assert c.post(f"/api/v1/cases/{case['id']}/close", headers=world.h("off2")).status_code == 409
    assert c.patch(f"/api/v1/cases/{case['id']}", headers=world.h("off2"),
                   json={"risk_level": "low"}).json()["code"] == "case_closed"
    history = c.get(f"/api/v1/cases/{case['id']}/devices", headers=world.h("off2")).json()["items"]
    assert len(history) == 1 and history[0]["unassigned_at"] is not None
    assert c.get(f"/api/v1/devices/{dev.json()['id']}", headers=world.h("admin")).json()["current_case_id"] is None
    with psycopg.connect(database_url) as conn:
        v1 = conn.execute("SELECT version FROM config_versions WHERE name = 'zones'").fetchone()
    assert v0 is not None and v1 is not None and v1[0] > v0[0]


def test_case_confirmation_is_a_supervisors_decision(
    app_client: TestClient, world: World, database_url: str
) -> None:
    """`confirm_points` / `confirm_seconds` (monitoring-rules.md "Episodes": configurable
    per case): null means the defaults; only a supervisor or an admin may set them (they
    decide whether a short violation alerts at all); the engine is told (config version)."""
    c = app_client
    case = _new_case(c, world, "off1", "off1")
    assert case["confirm_points"] is None and case["confirm_seconds"] is None
    r = c.patch(f"/api/v1/cases/{case['id']}", headers=world.h("off1"),
                json={"confirm_points": 5})
    assert r.status_code == 403 and r.json()["code"] == "confirmation_needs_supervisor"
    r = c.post("/api/v1/cases", headers=world.h("off1"), json={
        "subject_id": case["subject_id"], "officer_id": str(world.users["off1"]),
        "court_order_ref": "x", "starts_on": "2026-01-01", "ends_on": "2026-02-01",
        "risk_level": "low", "confirm_seconds": 120})
    assert r.status_code == 403
    for bad in ({"confirm_points": 0}, {"confirm_points": 21}, {"confirm_seconds": -1},
                {"confirm_seconds": 3601}):
        r = c.patch(f"/api/v1/cases/{case['id']}", headers=world.h("sup1"), json=bad)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == next(iter(bad)), r.text
    with psycopg.connect(database_url) as conn:
        v0 = conn.execute("SELECT version FROM config_versions WHERE name = 'zones'").fetchone()
    r = c.patch(f"/api/v1/cases/{case['id']}", headers=world.h("sup1"),
                json={"confirm_points": 3, "confirm_seconds": 60})
    assert r.status_code == 200 and (r.json()["confirm_points"], r.json()["confirm_seconds"]) == (3, 60)
    got = c.get(f"/api/v1/cases/{case['id']}", headers=world.h("off1")).json()
    assert (got["confirm_points"], got["confirm_seconds"]) == (3, 60)
    with psycopg.connect(database_url) as conn:
        v1 = conn.execute("SELECT version FROM config_versions WHERE name = 'zones'").fetchone()
        audited = conn.execute("SELECT detail FROM audit_log WHERE action = 'case.update' "
                               "AND resource_id = %s ORDER BY id DESC LIMIT 1",
                               (case["id"],)).fetchone()
    assert v0 is not None and v1 is not None and v1[0] > v0[0]
    assert audited is not None and audited[0] == {"confirm_points": 3, "confirm_seconds": 60.0}
    r = c.patch(f"/api/v1/cases/{case['id']}", headers=world.h("admin"),
                json={"confirm_points": None, "confirm_seconds": None})
    assert r.status_code == 200 and r.json()["confirm_points"] is None


def test_caseload_live_status_filters_and_pagination(
    app_client: TestClient, world: World, database_url: str
) -> None:
    c = app_client
    w = world
    # off1's case: open violation episode → violation; make off2's compliant, off3's stale
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE alerts SET episode_open = false, status = 'resolved' WHERE case_id = %s",
                     (w.cases["off2"],))
        conn.execute("UPDATE alerts SET episode_open = false, status = 'resolved' WHERE case_id = %s",
                     (w.cases["sup1"],))
        conn.execute("DELETE FROM fixes WHERE device_id = %s AND ts > now() - interval '2 hours'",
                     (w.devices["sup1"],))
        insert_alert(conn, case_id=w.cases["off1"], type="battery_low", severity="low")
    items = {i["id"]: i for i in c.get("/api/v1/cases", headers=w.h("sup1")).json()["items"]}
    off1, off2, own = (items[str(w.cases[k])] for k in ("off1", "off2", "sup1"))
    assert off1["compliance"] == "violation" and off1["open_alerts"] == 2
    assert off2["compliance"] == "compliant" and off2["open_alerts"] == 0
    assert own["compliance"] == "unknown" and own["last_fix"] is None
    assert off1["device"]["serial"] == "BR-off1" and off1["device"]["battery"] == 80
    assert abs(off1["last_fix"]["lat"] - 43.249) < 1e-9
    assert datetime.fromisoformat(off1["last_fix"]["ts"]) > datetime.now(UTC) - timedelta(minutes=2)

    def ids(query: str, who: str = "sup1") -> set[str]:
        r = c.get(f"/api/v1/cases?{query}", headers=w.h(who))
        assert r.status_code == 200, r.text
        return {i["id"] for i in r.json()["items"]}

    assert ids("compliance=violation") == {str(w.cases["off1"])}
    assert ids("compliance=compliant") == {str(w.cases["off2"])}
    assert ids(f"officer_id={w.users['off2']}") == {str(w.cases["off2"])}
    assert ids(f"officer_id={w.users['off3']}") == set()
    assert ids("risk_level=low") == set() and len(ids("risk_level=high")) == 3
    assert len(ids("status=active")) == 3 and ids("status=closed") == set()
    # pagination: limit 1 walks all three cases once, newest first
    seen: list[str] = []
    cursor = None
    while True:
        q = "limit=1" + (f"&cursor={cursor}" if cursor else "")
        page = c.get(f"/api/v1/cases?{q}", headers=w.h("sup1")).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(w.cases[k]) for k in ("sup1", "off2", "off1")]
    assert c.get("/api/v1/cases?limit=501", headers=w.h("sup1")).status_code == 422


def test_devices_and_assignments(app_client: TestClient, world: World) -> None:
    c = app_client
    w = world
    r = c.post("/api/v1/devices", headers=w.h("admin"), json={"serial": "PH-1", "kind": "phone"})
    assert r.status_code == 201
    phone = r.json()
    assert phone["current_case_id"] is None and phone["online"] is False
    assert c.post("/api/v1/devices", headers=w.h("admin"),
                  json={"serial": "PH-1", "kind": "phone"}).json()["code"] == "serial_taken"
    assert c.post("/api/v1/devices", headers=w.h("admin"),
                  json={"serial": "bad serial!", "kind": "phone"}).status_code == 422
    # free devices are visible to officers (to assign them); assign, then it is busy
    assert c.get(f"/api/v1/devices/{phone['id']}", headers=w.h("off1")).status_code == 200
    r = c.post(f"/api/v1/cases/{w.cases['off1']}/devices", headers=w.h("off1"),
               json={"device_id": phone["id"]})
    assert r.status_code == 201 and r.json()["serial"] == "PH-1"
    again = c.post(f"/api/v1/cases/{w.cases['off1']}/devices", headers=w.h("off1"),
                   json={"device_id": phone["id"]})
    assert again.json()["code"] == "device_already_assigned"
    busy = c.post(f"/api/v1/cases/{w.cases['off3']}/devices", headers=w.h("off3"),
                  json={"device_id": phone["id"]})
    assert busy.status_code == 409 and busy.json()["code"] == "device_in_use"
    assert c.get(f"/api/v1/devices/{phone['id']}", headers=w.h("off3")).status_code == 404
    unknown = c.post(f"/api/v1/cases/{w.cases['off1']}/devices", headers=w.h("off1"),
                     json={"device_id": str(uuid.uuid4())})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "device_id"
    listed = c.get("/api/v1/devices?kind=phone", headers=w.h("admin")).json()["items"]
    assert [d["current_case_id"] for d in listed] == [str(w.cases["off1"])]
    assert c.get("/api/v1/devices?assigned=false", headers=w.h("admin")).json()["items"] == []
    assert len(c.get("/api/v1/devices?serial=BR-", headers=w.h("admin")).json()["items"]) == 4
    # unassign keeps the history; the device can serve another case
    r = c.delete(f"/api/v1/cases/{w.cases['off1']}/devices/{phone['id']}", headers=w.h("off1"))
    assert r.status_code == 200 and r.json()["unassigned_by"] == str(w.users["off1"])
    assert c.delete(f"/api/v1/cases/{w.cases['off1']}/devices/{phone['id']}",
                    headers=w.h("off1")).json()["code"] == "no_active_assignment"
    assert c.post(f"/api/v1/cases/{w.cases['off3']}/devices", headers=w.h("off3"),
                  json={"device_id": phone["id"]}).status_code == 201
    page = c.get(f"/api/v1/cases/{w.cases['off1']}/devices", headers=w.h("off1")).json()
    assert page["next_cursor"] is None  # a list is a page (api-v1.md), one for a case's few
    history = page["items"]
    assert {h["serial"] for h in history} == {"PH-1", "BR-off1"}


def test_events_checkins_and_checkin_requests(
    app_client: TestClient, world: World, database_url: str, mqtt_url: str, settings: Any
) -> None:
    from devices.mqtt import broker_address, mqtt_client

    c = app_client
    w = world
    r = c.get(f"/api/v1/cases/{w.cases['off1']}/events", headers=w.h("off1"))
    assert r.status_code == 200 and [e["type"] for e in r.json()["items"]] == ["strap_open"]
    assert c.get(f"/api/v1/cases/{w.cases['off1']}/events?type=power_off",
                 headers=w.h("off1")).json()["items"] == []
    now = datetime.now(UTC)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for k in range(3):
            conn.execute(
                "INSERT INTO checkins (device_id, seq, ts, case_id, method, similarity, liveness,"
                " passed) VALUES (%s, %s, %s, %s, 'face', 0.9, 0.95, true)",
                (w.devices["off1"], k, now - timedelta(hours=k), w.cases["off1"]),
            )
    page = c.get(f"/api/v1/cases/{w.cases['off1']}/checkins?limit=2", headers=w.h("off1")).json()
    assert [p["seq"] for p in page["items"]] == [0, 1] and page["next_cursor"]
    rest = c.get(f"/api/v1/cases/{w.cases['off1']}/checkins?limit=2&cursor={page['next_cursor']}",
                 headers=w.h("off1")).json()
    assert [p["seq"] for p in rest["items"]] == [2] and rest["next_cursor"] is None

    # the request is recorded and the command reaches the device's topic
    got: list[bytes] = []
    arrived = threading.Event()
    sub = mqtt_client(mqtt_url, f"sub-{uuid.uuid4().hex[:6]}")
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        got.append(msg.payload)
        arrived.set()

    sub.on_message = on_message
    sub.connect(*broker_address(mqtt_url))
    sub.subscribe(f"{settings.mqtt_prefix}/devices/BR-off1/commands", qos=1)
    sub.loop_start()
    try:
        assert subscribed.wait(5)
        r = c.post(f"/api/v1/cases/{w.cases['off1']}/checkin-requests", headers=w.h("off1"),
                   json={"deadline_s": 600})
        assert r.status_code == 201, r.text
        req = r.json()
        assert req["source"] == "officer" and req["device_id"] == str(w.devices["off1"])
        assert arrived.wait(10)
    finally:
        sub.disconnect()
        sub.loop_stop()
    cmd = orjson.loads(got[0])
    assert cmd["type"] == "request_checkin"
    assert cmd["params"] == {"deadline_s": 600, "challenge": req["challenge"]}
    assert req["challenge"] in ("turn_left", "turn_right", "blink", "smile")
    assert cmd["id"] == req["id"] == req["command_id"]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status, source, requested_by FROM checkin_requests WHERE id = %s",
                           (req["id"],)).fetchone()
        sent = conn.execute("SELECT sent_at FROM commands WHERE id = %s", (req["id"],)).fetchone()
    assert row == ("sent", "officer", w.users["off1"])
    assert sent is not None and sent[0] is not None
    # no device → 409
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE device_assignments SET unassigned_at = now() WHERE case_id = %s",
                     (w.cases["off2"],))
    r = c.post(f"/api/v1/cases/{w.cases['off2']}/checkin-requests", headers=w.h("off2"))
    assert r.status_code == 409 and r.json()["code"] == "no_device"
