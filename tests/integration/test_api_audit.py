"""The audit log: reads and changes are logged, the hash chain holds under concurrency,
and `verify` points at an entry edited or removed behind the application's back."""

from __future__ import annotations

import hashlib
import itertools
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from probation.audit.service import GENESIS, canonical
from tests.integration._api import World, running_server

pytest_plugins = ["tests.integration._api_fixtures"]


def _activity(c: TestClient, w: World) -> None:
    c.get(f"/api/v1/cases/{w.cases['off1']}", headers=w.h("off1"))
    c.get(f"/api/v1/subjects/{w.subjects['off1']}", headers=w.h("off1"))
    c.get(f"/api/v1/cases/{w.cases['off1']}/track", headers=w.h("sup1"))
    c.patch(f"/api/v1/cases/{w.cases['off1']}", headers=w.h("off1"), json={"risk_level": "low"})
    c.post(f"/api/v1/alerts/{w.alerts['off1']}/acknowledge", headers=w.h("off1"))
    c.get(f"/api/v1/cases/{w.cases['off3']}", headers=w.h("off3"))


def _verify(c: TestClient, w: World) -> dict:  # type: ignore[type-arg]
    r = c.get("/api/v1/audit/verify", headers=w.h("admin"))
    assert r.status_code == 200, r.text
    body = r.json()
    return {k: body[k] for k in ("ok", "entries", "broken_at", "reason")}


def _superuser_sql(database_url: str, sql: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
        c.execute(sql)
        c.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update")


def test_reads_and_changes_are_logged_and_listed(app_client: TestClient, world: World) -> None:
    c, w = app_client, world
    _activity(c, w)
    everything = c.get("/api/v1/audit?limit=500", headers=w.h("admin")).json()["items"]
    actions = [(e["action"], e["user_id"]) for e in reversed(everything)]
    assert actions == [
        ("case.read", str(w.users["off1"])), ("subject.read", str(w.users["off1"])),
        ("track.read", str(w.users["sup1"])), ("case.update", str(w.users["off1"])),
        ("alert.acknowledge", str(w.users["off1"])), ("case.read", str(w.users["off3"])),
    ]
    update = next(e for e in everything if e["action"] == "case.update")
    assert update["case_id"] == str(w.cases["off1"]) and update["detail"] == {"risk_level": "low"}
    # the chain links each entry to the one before
    ordered = sorted(everything, key=lambda e: e["id"])
    assert ordered[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(ordered))
    # supervisors see their team's cases and their team's actions outside cases; a case
    # outside the team is a 404; officers get 403
    team = c.get("/api/v1/audit", headers=w.h("sup1")).json()["items"]
    assert {e["case_id"] for e in team} == {str(w.cases["off1"]), None}
    assert {e["action"] for e in team if e["case_id"] is None} == {"subject.read"}
    assert c.get(f"/api/v1/audit?case_id={w.cases['off3']}", headers=w.h("sup1")).status_code == 404
    about_off3 = c.get(f"/api/v1/audit?case_id={w.cases['off3']}", headers=w.h("sup2")).json()["items"]
    assert [e["action"] for e in about_off3] == ["case.read"]
    assert c.get("/api/v1/audit", headers=w.h("off1")).status_code == 403
    mine = c.get(f"/api/v1/audit?user_id={w.users['sup1']}", headers=w.h("admin")).json()["items"]
    assert [e["action"] for e in mine] == ["access.refused", "track.read"]
    only = c.get("/api/v1/audit?action=case.read", headers=w.h("admin")).json()["items"]
    assert len(only) == 2


def test_the_application_cannot_change_the_log(app_client: TestClient, world: World, database_url: str) -> None:
    _activity(app_client, world)
    with psycopg.connect(database_url) as c, pytest.raises(psycopg.errors.RaiseException):
        c.execute("UPDATE audit_log SET action = 'nothing' WHERE id = 1")
    with psycopg.connect(database_url) as c, pytest.raises(psycopg.errors.RaiseException):
        c.execute("DELETE FROM audit_log WHERE id = 1")


def test_verify_points_at_an_edited_entry(app_client: TestClient, world: World, database_url: str) -> None:
    c, w = app_client, world
    _activity(c, w)
    ok = _verify(c, w)
    assert ok == {"ok": True, "entries": 6, "broken_at": None, "reason": None}
    _superuser_sql(database_url, "UPDATE audit_log SET detail = '{\"risk_level\": \"high\"}' WHERE id = 4")
    bad = _verify(c, w)
    assert bad == {"ok": False, "entries": 3, "broken_at": 4, "reason": "hash_mismatch"}


def test_verify_catches_a_rehashed_forgery_and_a_removed_entry(
    app_client: TestClient, world: World, database_url: str
) -> None:
    c, w = app_client, world
    _activity(c, w)
    # the forger recomputes the edited entry's own hash without the key: it does not match
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT id, at, user_id, action, resource, resource_id, case_id, detail, "
                           "prev_hash FROM audit_log WHERE id = 2").fetchone()
    assert row is not None
    doc = {"id": row[0], "at": row[1].isoformat(timespec="microseconds"), "user_id": str(row[2]),
           "action": "subject.read", "resource": row[4], "resource_id": row[5], "case_id": None,
           "detail": {"forged": True}, "prev_hash": row[8]}
    forged = hashlib.sha256(canonical(doc)).hexdigest()
    _superuser_sql(database_url, f"UPDATE audit_log SET detail = '{json.dumps(doc['detail'])}', "
                                 f"hash = '{forged}' WHERE id = 2")
    assert _verify(c, w) == {"ok": False, "entries": 1, "broken_at": 2, "reason": "hash_mismatch"}


def test_verify_catches_a_removed_entry(app_client: TestClient, world: World, database_url: str) -> None:
    c, w = app_client, world
    _activity(c, w)
    _superuser_sql(database_url, "DELETE FROM audit_log WHERE id = 5")
    assert _verify(c, w) == {"ok": False, "entries": 4, "broken_at": 6, "reason": "prev_hash_mismatch"}


def test_concurrent_appends_never_fork_the_chain(app_client: TestClient, world: World) -> None:
    w = world
    with running_server(app_client.app) as base, httpx.Client(base_url=base, timeout=30) as http:
        def hit(i: int) -> int:
            who = ("off1", "off2", "sup1", "admin")[i % 4]
            owner = who if who.startswith("off") else "off1"
            return http.get(f"/api/v1/cases/{w.cases[owner]}", headers=w.h(who)).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            assert set(pool.map(hit, range(80))) == {200}
        v = http.get("/api/v1/audit/verify", headers=w.h("admin")).json()
    assert {k: v[k] for k in ("ok", "entries", "broken_at", "reason")} == {
        "ok": True, "entries": 80, "broken_at": None, "reason": None}
