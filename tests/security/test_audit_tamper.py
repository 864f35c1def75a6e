"""The audit log against its own database administrator: an edit, a deleted row, a
dropped tail, a truncation and a recomputed chain are each found by `verify` (API and
CLI); TRUNCATE itself is refused; the key is not in the database."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from probation.audit.service import GENESIS, canonical, entry_hash
from tests.integration._api import World

pytest_plugins = ["tests.integration._api_fixtures"]


def _activity(c: TestClient, w: World, n: int = 3) -> None:
    for _ in range(n):
        c.get(f"/api/v1/cases/{w.cases['off1']}", headers=w.h("off1"))
        c.get(f"/api/v1/subjects/{w.subjects['off1']}", headers=w.h("off1"))
        c.get(f"/api/v1/cases/{w.cases['off3']}", headers=w.h("off3"))


def _verify(c: TestClient, w: World) -> dict[str, Any]:
    r = c.get("/api/v1/audit/verify", headers=w.h("admin"))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _as_owner(database_url: str, *sql: str) -> None:
    """What the database's owner (or a superuser) can do: triggers off, then anything."""
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        for s in sql:
            c.execute(s)  # type: ignore[arg-type]
        c.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")


def _anchor(settings: Any, database_url: str) -> None:
    from probation.audit.service import anchor

    assert anchor(database_url, settings)["anchored"]


def _rows(database_url: str) -> list[Any]:
    with psycopg.connect(database_url) as c:
        return c.execute("SELECT id, at, user_id, action, resource, resource_id, case_id, "
                         "detail, prev_hash, hash FROM audit_log ORDER BY id").fetchall()


def _rewrite(database_url: str, hasher: Any, *, drop_id: int | None = None,
             edit_id: int | None = None) -> None:
    """Recompute the whole chain with `hasher` after deleting or editing one entry."""
    rows = _rows(database_url)
    sql = []
    if drop_id is not None:
        sql.append(f"DELETE FROM audit_log WHERE id = {drop_id}")
        rows = [r for r in rows if r[0] != drop_id]
    prev = GENESIS
    for r in rows:
        detail = {"forged": True} if r[0] == edit_id else r[7]
        h = hasher(dict(id=r[0], at=r[1], user_id=r[2], action=r[3], resource=r[4],
                        resource_id=r[5], case_id=r[6], detail=detail, prev_hash=prev))
        sql.append(f"UPDATE audit_log SET detail = '{json.dumps(detail)}', prev_hash = '{prev}', "
                   f"hash = '{h}' WHERE id = {r[0]}")
        prev = h
    _as_owner(database_url, *sql)


def test_truncate_is_refused(app_client: TestClient, world: World, database_url: str) -> None:
    _activity(app_client, world, 1)
    with psycopg.connect(database_url) as c, pytest.raises(psycopg.errors.RaiseException):
        c.execute("TRUNCATE audit_log")


def test_the_key_is_not_in_the_database(app_client: TestClient, world: World, database_url: str,
                                        settings: Any) -> None:
    _activity(app_client, world, 1)
    key = settings.resolved_audit_key()
    path = settings.secret_file("audit_key")
    assert path.exists() and (os.stat(path).st_mode & 0o777) == 0o600
    with psycopg.connect(database_url) as c:
        dump = "".join(str(r) for r in c.execute(
            "SELECT * FROM audit_log UNION ALL SELECT NULL, NULL, NULL, key_id, NULL, NULL, NULL, "
            "NULL, NULL, NULL FROM audit_chain").fetchall())
    assert key.hex() not in dump and path.read_text().strip() not in dump


def test_tamper_probes_are_each_detected(app_client: TestClient, world: World,
                                         database_url: str, settings: Any) -> None:
    """Each probe on a fresh copy of the same history; all five must be detected."""
    c, w = app_client, world
    _activity(c, w)
    _anchor(settings, database_url)
    _activity(c, w, 1)  # entries after the last anchor
    assert _verify(c, w)["ok"] is True
    pristine = _rows(database_url)
    n = len(pristine)
    mid = pristine[n // 2][0]
    key = settings.resolved_audit_key()

    def restore() -> None:
        stmts = ["DELETE FROM audit_log"]
        for r in pristine:
            stmts.append(
                "INSERT INTO audit_log (id, at, user_id, action, resource, resource_id, case_id, "
                f"detail, prev_hash, hash) VALUES ({r[0]}, '{r[1].isoformat()}', "
                f"{repr(str(r[2])) if r[2] else 'NULL'}, '{r[3]}', '{r[4]}', "
                f"{repr(r[5]) if r[5] else 'NULL'}, {repr(str(r[6])) if r[6] else 'NULL'}, "
                f"'{json.dumps(r[7])}', '{r[8]}', '{r[9]}')")
        _as_owner(database_url, *stmts)
        assert _verify(c, w)["ok"] is True

    def plain(doc: dict[str, Any]) -> str:  # the old unkeyed chain
        d = {**doc, "at": doc["at"].isoformat(timespec="microseconds"),
             "user_id": str(doc["user_id"]) if doc["user_id"] else None,
             "case_id": str(doc["case_id"]) if doc["case_id"] else None}
        return hashlib.sha256(canonical(d)).hexdigest()

    def with_key(doc: dict[str, Any]) -> str:  # even an attacker who has the key
        return entry_hash(**doc, key=key)

    anchored_id = max(a.id for a in __import__("probation.audit.service", fromlist=["x"])
                      .read_anchors(settings.anchor_path()))
    probes = {
        "edit": (lambda: _as_owner(database_url, "UPDATE audit_log SET detail = "
                                   f"'{{\"x\": 1}}' WHERE id = {mid}"), "hash_mismatch"),
        "delete a row": (lambda: _as_owner(database_url, f"DELETE FROM audit_log WHERE id = {mid}"),
                         "prev_hash_mismatch"),
        "drop the tail (past the anchor)": (
            lambda: _as_owner(database_url, f"DELETE FROM audit_log WHERE id >= {anchored_id}"),
            "tail_missing"),
        "truncate (triggers off)": (lambda: _as_owner(database_url, "TRUNCATE audit_log"),
                                    "tail_missing"),
        "recompute the chain without the key": (
            lambda: _rewrite(database_url, plain, edit_id=mid), "hash_mismatch"),
        "recompute the chain with the key": (
            lambda: _rewrite(database_url, with_key, drop_id=mid), "anchor_mismatch"),
    }
    detected = {}
    for name, (tamper, expected) in probes.items():
        tamper()
        v = _verify(c, w)
        detected[name] = (v["ok"], v["reason"])
        assert v["ok"] is False and v["reason"] == expected, (name, v)
        restore()
    print(f"audit tamper probes: {len(probes)}, detected: {sum(not ok for ok, _ in detected.values())}")


def test_cli_verify(app_client: TestClient, world: World, database_url: str, settings: Any) -> None:
    _activity(app_client, world, 1)
    env = {**os.environ, "PROBATION_DATABASE_URL": database_url,
           "PROBATION_DATA_DIR": str(settings.data_dir)}
    run = [sys.executable, "-m", "probation.cli", "audit", "verify"]
    ok = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    _as_owner(database_url, "UPDATE audit_log SET action = 'x' WHERE id = 1")
    bad = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["reason"] == "hash_mismatch"


def test_an_unkeyed_chain_is_rechained_at_upgrade_and_that_is_recorded(
    app_client: TestClient, world: World, database_url: str, settings: Any, mqtt_url: str,
) -> None:
    from probation.app import create_app

    c, w = app_client, world
    _activity(c, w, 1)
    # turn the chain into what a pre-0021 database holds: plain SHA-256, not keyed yet
    rows = _rows(database_url)
    prev, stmts = GENESIS, []
    for r in rows:
        d = {"id": r[0], "at": r[1].isoformat(timespec="microseconds"),
             "user_id": str(r[2]) if r[2] else None, "action": r[3], "resource": r[4],
             "resource_id": r[5], "case_id": str(r[6]) if r[6] else None, "detail": r[7],
             "prev_hash": prev}
        h = hashlib.sha256(canonical(d)).hexdigest()
        stmts.append(f"UPDATE audit_log SET prev_hash = '{prev}', hash = '{h}' WHERE id = {r[0]}")
        prev = h
    stmts.append("UPDATE audit_chain SET key_id = NULL, keyed_at = NULL")
    _as_owner(database_url, *stmts)
    with TestClient(create_app(settings, database_url=database_url, mqtt_url=mqtt_url)) as c2:
        v = _verify(c2, w)
        assert v["ok"] is True and v["entries"] == len(rows) + 1
        last = c2.get("/api/v1/audit?limit=1", headers=w.h("admin")).json()["items"][0]
    assert last["action"] == "audit.rechain"
    assert last["detail"]["entries"] == len(rows) and last["detail"]["previous_chain_ok"] is True
    lines = settings.anchor_path().read_text().splitlines()
    assert json.loads(lines[-1])["rechain"] is True
