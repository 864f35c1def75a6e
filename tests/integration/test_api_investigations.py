"""Proximity searches through the API: probabilities, roles, the reason rule, the audit trail,
the rate limit; court reports rendered, read back in kk/ru/en and verified."""

# ruff: noqa: RUF001
from __future__ import annotations

import hashlib
import math
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.integration._api import World

pytest_plugins = ["tests.integration._api_fixtures"]

LAT0, LON0 = 43.30, 76.95  # away from the world's own fixes
M_LAT = 111_195.0
M_LON = M_LAT * math.cos(math.radians(LAT0))
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)


def _insert(database_url: str, device: uuid.UUID, rows: list[tuple[datetime, float, float, float, str]]
            ) -> None:
    with psycopg.connect(database_url, autocommit=True) as c, c.cursor() as cur:
        cur.executemany(
            "INSERT INTO fixes (device_id, seq, ts, lat, lon, acc, src) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(device, 10_000 + k, *r) for k, r in enumerate(rows)])


def _people(database_url: str, w: World) -> None:
    """off1 walks through the place at 20 m; off2 walks by 1 km east; off3 has only 2 km cell
    fixes on the place; sup1's person is silent for the first 35 minutes, 600 m from it."""
    walk = [(T0 + timedelta(seconds=30 * k), LAT0 + (-600 + 60 * k) / M_LAT, LON0 + e / M_LON,
             20.0, "gps") for k in range(21) for e in [0.0]]
    _insert(database_url, w.devices["off1"], walk)
    _insert(database_url, w.devices["off2"],
            [(t, la, lo + 1000 / M_LON, a, s) for t, la, lo, a, s in walk])
    _insert(database_url, w.devices["off3"],
            [(T0 + timedelta(minutes=k), LAT0, LON0, 2000.0, "cell") for k in range(60)])
    _insert(database_url, w.devices["sup1"],
            [(T0 - timedelta(minutes=5), LAT0, LON0 + 600 / M_LON, 10.0, "gps"),
             (T0 + timedelta(minutes=35), LAT0, LON0 + 600 / M_LON, 10.0, "gps"),
             (T0 + timedelta(minutes=59), LAT0, LON0 + 2000 / M_LON, 10.0, "gps")])


def _investigator(database_url: str, w: World, settings: Any) -> None:
    from probation.users.auth import create_access_token
    from probation.users.models import Role, User

    uid = uuid.uuid4()
    with psycopg.connect(database_url, autocommit=True) as c:
        row = c.execute("INSERT INTO users (id, username, password_hash, role) "
                        "VALUES (%s, 'inv1', 'x', 'investigator') RETURNING tokens_valid_after",
                        (uid,)).fetchone()
    assert row is not None
    w.users["inv1"] = uid
    w.tokens["inv1"] = create_access_token(  # the token's generation is the stored row's
        User(id=uid, username="inv1", password_hash="", role=Role.INVESTIGATOR,
             tokens_valid_after=row[0]), settings)[0]


def _query(**over: Any) -> dict[str, Any]:
    q: dict[str, Any] = {
        "circle": {"center": [LON0, LAT0], "radius_m": 100},
        "from": T0.isoformat(), "to": (T0 + timedelta(hours=1)).isoformat(),
        "reason": "Robbery at the kiosk, reported by the owner at 19:40",
        "reference": "УД-2026-0142", "min_probability": 0.001}
    q.update(over)
    return {k: v for k, v in q.items() if v is not None}


@pytest.fixture
def setup(app_client: TestClient, world: World, database_url: str, settings: Any) -> World:
    _people(database_url, world)
    _investigator(database_url, world, settings)
    return world


def test_probabilities_and_audit(app_client: TestClient, setup: World, database_url: str) -> None:
    c, w = app_client, setup
    r = c.post("/api/v1/investigations/proximity", json=_query(), headers=w.h("inv1"))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    by_case = {m["case_id"]: m for m in body["matches"]}
    walker = by_case[str(w.cases["off1"])]
    assert walker["probability"] > 0.99
    assert walker["closest"]["distance_m"] == 0.0
    assert all(f["acc"] == 20.0 for f in walker["fixes"]) and len(walker["fixes"]) >= 3
    assert str(w.cases["off2"]) not in by_case  # 1 km away: nothing
    cell = by_case[str(w.cases["off3"])]
    assert 0.001 < cell["probability"] < 0.1  # sixty 2 km cell fixes: one run, low
    silent = by_case[str(w.cases["sup1"])]  # no fix there, but 35 silent minutes 600 m away
    assert silent["probability"] == 0.0
    assert any(g["near_place"] and g["minutes"] == 35.0 for g in silent["gaps"]), silent["gaps"]
    assert "68 %" in body["model"]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT user_id, detail FROM audit_log WHERE action = "
                           "'investigation.proximity' ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None and row[0] == w.users["inv1"]
    assert row[1]["reason"] == _query()["reason"] and row[1]["reference"] == "УД-2026-0142"
    assert set(row[1]["case_ids"]) == set(by_case)
    # supervisors search their own caseload only
    r = c.post("/api/v1/investigations/proximity", json=_query(), headers=w.h("sup2"))
    assert {m["case_id"] for m in r.json()["matches"]} == {str(w.cases["off3"])}


def test_polygon_place_gives_the_same_verdicts(app_client: TestClient, setup: World) -> None:
    d_lat, d_lon = 100 / M_LAT, 100 / M_LON
    ring = [[LON0 - d_lon, LAT0 - d_lat], [LON0 + d_lon, LAT0 - d_lat], [LON0 + d_lon, LAT0 + d_lat],
            [LON0 - d_lon, LAT0 + d_lat], [LON0 - d_lon, LAT0 - d_lat]]
    r = app_client.post("/api/v1/investigations/proximity", headers=setup.h("sup1"), json=_query(
        circle=None, geometry={"type": "Polygon", "coordinates": [ring]}))
    assert r.status_code == 200, r.text
    by_case = {m["case_id"]: m["probability"] for m in r.json()["matches"]}
    assert by_case[str(setup.cases["off1"])] > 0.99
    assert str(setup.cases["off2"]) not in by_case


def test_refusals(app_client: TestClient, setup: World) -> None:
    c, w = app_client, setup
    r = c.post("/api/v1/investigations/proximity", json=_query(reason=None), headers=w.h("inv1"))
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert any(e["field"].endswith("reason") for e in r.json()["errors"])
    r = c.post("/api/v1/investigations/proximity", json=_query(reference=""), headers=w.h("inv1"))
    assert r.status_code == 422
    long = _query(to=(T0 + timedelta(days=8)).isoformat())
    assert c.post("/api/v1/investigations/proximity", json=long, headers=w.h("inv1")).status_code == 422
    for who in ("off1", "admin"):
        r = c.post("/api/v1/investigations/proximity", json=_query(), headers=w.h(who))
        assert r.status_code == 403, who
    # the investigator has no caseload
    assert c.get(f"/api/v1/cases/{w.cases['off1']}", headers=w.h("inv1")).status_code == 404


def test_rate_limit(setup: World, settings: Any, database_url: str, mqtt_url: str) -> None:
    from probation.app import create_app

    settings.proximity_rate_limit = 2
    app = create_app(settings, database_url=database_url, mqtt_url=mqtt_url)
    with TestClient(app, raise_server_exceptions=False) as c:
        codes = [c.post("/api/v1/investigations/proximity", json=_query(),
                        headers=setup.h("inv1")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = c.post("/api/v1/investigations/proximity", json=_query(), headers=setup.h("sup1"))
        assert r.status_code == 200  # per user


EXPECTED = {"kk": "Электрондық мониторинг есебі", "ru": "Отчёт электронного мониторинга",
            "en": "Electronic monitoring report"}


def test_reports_render_read_back_and_verify(app_client: TestClient, world: World,
                                             tmp_path: Path) -> None:
    c, w = app_client, world
    c.post(f"/api/v1/alerts/{w.alerts['off1']}/acknowledge", headers=w.h("sup1"), json={})
    for lang in ("kk", "ru", "en"):
        r = c.get(f"/api/v1/alerts/{w.alerts['off1']}/report.pdf",
                  headers=w.h("off1", **{"Accept-Language": f"{lang},en;q=0.5"}))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/pdf"
        pdf = tmp_path / f"alert-{lang}.pdf"
        pdf.write_bytes(r.content)
        subprocess.run(["pdftoppm", "-r", "50", "-png", "-f", "1", "-l", "1", str(pdf),
                        str(tmp_path / f"page-{lang}")], check=True)
        assert list(tmp_path.glob(f"page-{lang}*.png"))
        text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True,
                              capture_output=True, text=True).stdout
        assert EXPECTED[lang] in text and "Person off1" in text and "ORD-1" in text
        flat = text.replace("\n", "")
        printed = next(tok for tok in flat.replace(".", " ").split() if len(tok) == 64)
        v = c.get(f"/api/v1/reports/verify?sha256={printed}", headers=w.h("sup2")).json()
        assert v["valid"] and v["matched"] == "content" and v["kind"] == "alert"
        assert v["lang"] == lang and v["case_id"] == str(w.cases["off1"])
        file_hash = hashlib.sha256(r.content).hexdigest()
        v = c.get(f"/api/v1/reports/verify?sha256={file_hash}", headers=w.h("off2")).json()
        assert v["valid"] and v["matched"] == "file" and v["content_sha256"] == printed
    tampered = hashlib.sha256(r.content + b"x").hexdigest()
    assert c.get(f"/api/v1/reports/verify?sha256={tampered}", headers=w.h("off1")).json() == {
        "valid": False, "sha256": tampered}
    r = c.get(f"/api/v1/cases/{w.cases['off1']}/report.pdf?lang=ru", headers=w.h("sup1"))
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    # someone else's alert: 404 as if missing
    assert c.get(f"/api/v1/alerts/{w.alerts['off3']}/report.pdf",
                 headers=w.h("off1")).status_code == 404
