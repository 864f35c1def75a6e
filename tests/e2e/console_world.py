"""A small world for the console's browser tests, made through the public surfaces: users,
people, cases, devices and zones over the API, positions over MQTT."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import httpx
import paho.mqtt.client as mqtt

from probation.subjects.iin import make_iin

PASSWORD = "console-password-1"
#: Where the people live (Almaty) and where the first one's exclusion zone is: a 150 m
#: circle 200 m east of home, a short walk away.
HOME = (43.2389, 76.8897)
ZONE_CENTER = (43.2389, 76.8922)
#: A violation opens on the 2nd of 2 fixes on the wrong side at least 30 s apart.
CONFIRM_S = 31


@dataclass
class Person:
    name: str
    case_id: str
    device_id: str
    serial: str
    officer: str
    seq: int = 0
    last_ts: datetime | None = None


@dataclass
class World:
    base: str
    mqtt_url: str
    prefix: str = "pm/v1"
    people: dict[str, Person] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    zone_id: str = ""

    def token(self, username: str, password: str = PASSWORD) -> str:
        r = httpx.post(f"{self.base}/api/v1/auth/token",
                       data={"username": username, "password": password}, timeout=10)
        r.raise_for_status()
        return str(r.json()["access_token"])

    def publish_fix(self, who: str, lat: float, lon: float, *, acc: float = 8.0,
                    ts: datetime | None = None) -> None:
        p = self.people[who]
        p.seq += 1
        ts = ts or datetime.now(UTC)
        p.last_ts = max(ts, p.last_ts or ts)
        fix = {"seq": p.seq, "ts": ts.isoformat(), "lat": lat, "lon": lon, "acc": acc, "bat": 80}
        publish(self.mqtt_url, f"{self.prefix}/devices/{p.serial}/fixes", {"fixes": [fix]})


    def first_fix_inside(self, who: str, lat: float, lon: float) -> None:
        """The first of the two fixes that open a violation: after every earlier fix, and
        early enough that the second (`fix_inside_now`) can be stamped now."""
        p = self.people[who]
        now = datetime.now(UTC)
        ts = now - timedelta(seconds=CONFIRM_S)
        if p.last_ts is not None and ts < p.last_ts + timedelta(seconds=CONFIRM_S):
            ts = p.last_ts + timedelta(seconds=CONFIRM_S)  # a walking pace from the last fix
        self.publish_fix(who, lat, lon, ts=ts)
        wait = (ts + timedelta(seconds=CONFIRM_S) - datetime.now(UTC)).total_seconds()
        if wait > 0:  # the second must not be stamped ahead of the backend's clock
            time.sleep(wait)


def publish(mqtt_url: str, topic: str, payload: dict[str, Any]) -> None:
    u = urlparse(mqtt_url)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"e2e-{uuid.uuid4().hex[:8]}")
    if u.username:
        c.username_pw_set(u.username, u.password)
    c.connect(u.hostname or "127.0.0.1", u.port or 1883)
    c.loop_start()
    try:
        c.publish(topic, json.dumps(payload), qos=1).wait_for_publish(timeout=10)
    finally:
        c.loop_stop()
        c.disconnect()


def _post(http: httpx.Client, path: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    r = http.post(f"/api/v1{path}", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code in (200, 201), r.text
    out: dict[str, Any] = r.json()
    return out


def make_world(base: str, mqtt_url: str, admin_password: str, prefix: str = "pm/v1") -> World:
    """sup1 supervises off1 and off2; off1 has two people, off2 one; one exclusion zone."""
    w = World(base=base, mqtt_url=mqtt_url, prefix=prefix)
    admin = w.token("admin", admin_password)
    with httpx.Client(base_url=base, timeout=20) as http:
        sup = _post(http, "/users", {"username": "sup1", "password": PASSWORD,
                                     "role": "supervisor", "full_name": "Гульнара Серикова"}, admin)
        w.users["sup1"] = sup["id"]
        for name, full in (("off1", "Ерлан Ахметов"), ("off2", "Марат Касымов")):
            u = _post(http, "/users", {"username": name, "password": PASSWORD, "role": "officer",
                                       "full_name": full, "supervisor_id": sup["id"]}, admin)
            w.users[name] = u["id"]
        people = (("Асель Нурланова", "off1", "high"), ("Бауыржан Сейткали", "off1", "medium"),
                  ("Дина Омарова", "off2", "low"))
        for i, (name, officer, risk) in enumerate(people, start=1):
            born = date(1990, 1, i)
            s = _post(http, "/subjects", {"iin": make_iin(born, serial=100 + i), "full_name": name,
                                          "birth_date": born.isoformat()}, admin)
            c = _post(http, "/cases", {
                "subject_id": s["id"], "officer_id": w.users[officer],
                "court_order_ref": f"2-{1000 + i}/2026", "starts_on": "2026-01-01",
                "ends_on": "2027-12-31", "risk_level": risk}, admin)
            serial = f"BR-E2E-{i:03d}"
            d = _post(http, "/devices", {"serial": serial, "kind": "bracelet",
                                         "model": "T1", "firmware": "1.0"}, admin)
            _post(http, f"/cases/{c['id']}/devices", {"device_id": d["id"]}, admin)
            w.people[name] = Person(name, c["id"], d["id"], serial, officer)
        first = w.people["Асель Нурланова"]
        z = _post(http, f"/cases/{first.case_id}/zones", {
            "name": "Дом потерпевшей", "kind": "exclusion", "buffer_m": 0,
            "circle": {"center": [ZONE_CENTER[1], ZONE_CENTER[0]], "radius_m": 150}}, admin)
        w.zone_id = z["id"]
    # since the devices were assigned: a few steps near home
    start = datetime.now(UTC) - timedelta(seconds=3)
    for k, p in enumerate(w.people.values()):
        for j in range(3):
            w.publish_fix(p.name, HOME[0] + 0.001 * k, HOME[1] + 0.0005 * j,
                          ts=start + timedelta(seconds=j))
    return w


def wait_for(predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
