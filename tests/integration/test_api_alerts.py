"""The alert lifecycle: list and filter, detail with evidence and timeline, acknowledge,
resolve, notes, 409 on invalid transitions, and the SSE stream with Last-Event-ID resume."""

from __future__ import annotations

import http.client
import queue
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import psycopg
from fastapi.testclient import TestClient

from tests.integration._api import World, insert_alert, running_server

pytest_plugins = ["tests.integration._api_fixtures"]


def test_list_filters_newest_first(app_client: TestClient, world: World, database_url: str) -> None:
    c, w = app_client, world
    t0 = datetime.now(UTC)
    with psycopg.connect(database_url, autocommit=True) as conn:
        low = insert_alert(conn, case_id=w.cases["off1"], type="battery_low", severity="low",
                           device_id=w.devices["off1"])
        tamper = insert_alert(conn, case_id=w.cases["off1"], type="strap_tamper",
                              severity="critical", status="acknowledged", device_id=w.devices["off1"])
    items = c.get("/api/v1/alerts", headers=w.h("off1")).json()["items"]
    assert [a["id"] for a in items] == [str(tamper), str(low), str(w.alerts["off1"])]

    def ids(q: str, who: str = "sup1") -> list[str]:
        r = c.get(f"/api/v1/alerts?{q}", headers=w.h(who))
        assert r.status_code == 200, r.text
        return [a["id"] for a in r.json()["items"]]

    assert ids("severity=low") == [str(low)]
    assert ids("status=acknowledged") == [str(tamper)]
    assert ids("type=exclusion_zone_entered") == [str(w.alerts[k]) for k in ("sup1", "off2", "off1")]
    assert ids(f"case_id={w.cases['off2']}") == [str(w.alerts["off2"])]
    assert ids(f"since={t0.isoformat().replace('+00:00', 'Z')}") == [str(tamper), str(low)]
    assert c.get("/api/v1/alerts?since=2026-01-01T00:00:00", headers=w.h("off1")).status_code == 422
    page1 = c.get("/api/v1/alerts?limit=2", headers=w.h("admin")).json()
    page2 = c.get(f"/api/v1/alerts?limit=2&cursor={page1['next_cursor']}", headers=w.h("admin")).json()
    page3 = c.get(f"/api/v1/alerts?limit=2&cursor={page2['next_cursor']}", headers=w.h("admin")).json()
    assert page3["next_cursor"] is None
    all_ids = [a["id"] for p in (page1, page2, page3) for a in p["items"]]
    assert len(all_ids) == len(set(all_ids)) == 6


def test_lifecycle_and_timeline(app_client: TestClient, world: World) -> None:
    c, w = app_client, world
    aid = w.alerts["off1"]
    detail = c.get(f"/api/v1/alerts/{aid}", headers=w.h("off1")).json()
    assert detail["status"] == "open" and detail["evidence"]["max_depth_m"] == 42.0
    assert detail["zone"] == {"id": str(w.zones["off1"]), "name": "zone off1", "kind": "exclusion"}
    assert 290 < detail["duration_s"] < 400
    assert [e["kind"] for e in detail["timeline"]] == ["opened"]
    # the supervisor acknowledges; acknowledging again or after resolving is a 409
    r = c.post(f"/api/v1/alerts/{aid}/acknowledge", headers=w.h("sup1"), json={"note": "on it"})
    assert r.status_code == 200, r.text
    acked = r.json()
    assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == str(w.users["sup1"])
    assert acked["change_seq"] > detail["change_seq"]
    again = c.post(f"/api/v1/alerts/{aid}/acknowledge", headers=w.h("off1"))
    assert again.status_code == 409 and again.json()["code"] == "alert_transition"
    note = c.post(f"/api/v1/alerts/{aid}/notes", headers=w.h("off1"), json={"text": "phoned him"})
    assert note.status_code == 201 and note.json()["actor"] == "off1"
    bad = c.post(f"/api/v1/alerts/{aid}/resolve", headers=w.h("off1"), json={"resolution": "nope"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "resolution"
    r = c.post(f"/api/v1/alerts/{aid}/resolve", headers=w.h("off1"),
               json={"resolution": "violation_confirmed", "note": "reported to court"})
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    assert r.json()["resolution"] == "violation_confirmed"
    for action, body in (("resolve", {"resolution": "other"}), ("acknowledge", None)):
        r = c.post(f"/api/v1/alerts/{aid}/{action}", headers=w.h("off1"), json=body)
        assert r.status_code == 409 and r.json()["current"] == "resolved", action
    timeline = c.get(f"/api/v1/alerts/{aid}", headers=w.h("admin")).json()["timeline"]
    assert [(e["kind"], e["actor"]) for e in timeline] == [
        ("opened", None), ("acknowledged", "sup1"), ("note", "off1"), ("resolved", "off1")]
    assert timeline[1]["data"] == {"note": "on it"}
    assert timeline[3]["data"] == {"resolution": "violation_confirmed", "note": "reported to court"}
    assert all(e["at"].endswith("Z") for e in timeline)
    # open → resolved directly is allowed (a false alarm need not be acknowledged first)
    r = c.post(f"/api/v1/alerts/{w.alerts['off2']}/resolve", headers=w.h("off2"),
               json={"resolution": "false_alarm"})
    assert r.status_code == 200 and r.json()["acknowledged_at"] is None


class _Reader(threading.Thread):
    """Reads an SSE stream (http.client: its socket can be shut down from outside) into a
    queue until `close()`."""

    def __init__(self, base: str, token: str, last_id: str | None = None,
                 in_query: bool = False) -> None:
        super().__init__(daemon=True)
        host, port = base.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.headers = {"Accept": "text/event-stream"}
        self.path = "/api/v1/alerts/stream"
        if in_query:  # as a browser's EventSource must
            self.path += f"?access_token={token}"
        else:
            self.headers["Authorization"] = f"Bearer {token}"
        if last_id:
            self.headers["Last-Event-ID"] = last_id
        self.q: queue.Queue[Any] = queue.Queue()

    def run(self) -> None:
        try:
            self.conn.request("GET", self.path, headers=self.headers)
            r = self.conn.getresponse()
            self.q.put(("status", r.status, r.getheader("content-type")))
            event: dict[str, str] = {}
            while True:
                raw = r.readline()
                if not raw:
                    return
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    self.q.put(("comment", line))
                elif line == "":
                    if "data" in event:
                        self.q.put(("event", event))
                    event = {}
                else:
                    k, _, v = line.partition(": ")
                    event[k] = v
        except Exception:  # closed under us: http.client fails in various ways
            return

    def close(self) -> None:
        if self.conn.sock is not None:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()
        self.join(5)


def _next_event(q: queue.Queue[Any], timeout: float = 6.0) -> dict[str, str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        item = q.get(timeout=max(0.01, end - time.monotonic()))
        if item[0] == "event":
            return item[1]  # type: ignore[no-any-return]
    raise AssertionError("no event")


def test_sse_stream_scoped_with_resume(
    app_client: TestClient, world: World, database_url: str
) -> None:
    w = world
    with running_server(app_client.app) as base:
        reader = _Reader(base, w.tokens["off1"])
        reader.start()
        q = reader.q
        status = q.get(timeout=5)
        assert status[1] == 200 and status[2].startswith("text/event-stream")
        assert q.get(timeout=5) == ("comment", ": connected")
        with psycopg.connect(database_url, autocommit=True) as conn:
            insert_alert(conn, case_id=w.cases["off3"], type="battery_low", severity="low")
            mine = insert_alert(conn, case_id=w.cases["off1"], type="power_off", severity="high")
        ev = _next_event(q)
        data = orjson.loads(ev["data"])
        assert ev["event"] == "alert" and data["id"] == str(mine) and data["status"] == "open"
        assert int(ev["id"]) == data["change_seq"]
        # a change made through the API arrives too
        httpx.post(f"{base}/api/v1/alerts/{mine}/acknowledge", headers=w.h("off1"), timeout=5)
        ev2 = _next_event(q)
        assert orjson.loads(ev2["data"])["status"] == "acknowledged"
        assert int(ev2["id"]) > int(ev["id"])
        reader.close()
        # while disconnected: two changes; resume from the last id seen
        with psycopg.connect(database_url, autocommit=True) as conn:
            missed = insert_alert(conn, case_id=w.cases["off1"], type="gps_jamming", severity="high")
            conn.execute("UPDATE alerts SET escalation_level = 1 WHERE id = %s", (w.alerts["off1"],))
        reader2 = _Reader(base, w.tokens["off1"], ev2["id"])
        reader2.start()
        q2 = reader2.q
        got = [orjson.loads(_next_event(q2)["data"]) for _ in range(2)]
        assert [g["id"] for g in got] == [str(missed), str(w.alerts["off1"])]
        assert got[1]["escalation_level"] == 1
        reader2.close()
        # nobody else's alerts ever came through
        assert all(uuid.UUID(g["case_id"]) == w.cases["off1"] for g in got)


def test_sse_stream_token_in_query_for_eventsource(
    app_client: TestClient, world: World, database_url: str
) -> None:
    """A browser's EventSource cannot set headers: the token may come as `access_token`,
    with the same scope as the header; a bad one is 401, not a stream."""
    w = world
    with running_server(app_client.app) as base:
        bad = httpx.get(f"{base}/api/v1/alerts/stream?access_token=not-a-token", timeout=5)
        assert bad.status_code == 401
        assert bad.headers["content-type"].startswith("application/problem+json")
        reader = _Reader(base, w.tokens["off1"], in_query=True)
        reader.start()
        status = reader.q.get(timeout=5)
        assert status[1] == 200 and status[2].startswith("text/event-stream")
        # The stream starts from the changes after it connected: insert only then.
        assert reader.q.get(timeout=5) == ("comment", ": connected")
        with psycopg.connect(database_url, autocommit=True) as conn:
            insert_alert(conn, case_id=w.cases["off3"], type="battery_low", severity="low")
            mine = insert_alert(conn, case_id=w.cases["off1"], type="power_off", severity="high")
        data = orjson.loads(_next_event(reader.q)["data"])
        assert data["id"] == str(mine)
        reader.close()
