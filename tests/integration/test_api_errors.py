"""RFC 9457 problem details for every error, in kk/ru/en, with request ids; Idempotency-Key."""

from __future__ import annotations

import base64
import json
import logging
import uuid

import pytest
from fastapi.testclient import TestClient

from probation.i18n import PROBLEMS
from tests.integration._api import World, auth

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "code", "request_id"}

pytest_plugins = ["tests.integration._api_fixtures"]


def _is_problem(r, status: int, code: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert set(body) >= PROBLEM_KEYS
    assert body["status"] == status and body["code"] == code
    assert body["type"].startswith("urn:probation:problem:")
    assert r.headers["x-request-id"] == body["request_id"]
    return body  # type: ignore[no-any-return]


def test_each_status_is_a_problem(app_client: TestClient, world: World) -> None:
    c = app_client
    _is_problem(c.get("/api/v1/cases"), 401, "not_authenticated")
    _is_problem(c.get("/api/v1/audit/verify", headers=world.h("off1")), 403, "forbidden")
    _is_problem(c.get(f"/api/v1/cases/{uuid.uuid4()}", headers=world.h("off1")), 404, "not_found")
    _is_problem(c.get("/api/v1/no-such-route"), 404, "not_found")
    _is_problem(c.put("/api/v1/cases", headers=world.h("off1")), 405, "method_not_allowed")
    c.post(f"/api/v1/alerts/{world.alerts['off1']}/resolve", headers=world.h("off1"),
           json={"resolution": "false_alarm"})
    body = _is_problem(c.post(f"/api/v1/alerts/{world.alerts['off1']}/resolve",
                              headers=world.h("off1"), json={"resolution": "false_alarm"}),
                       409, "alert_transition")
    assert body["current"] == "resolved"


def test_422_names_each_bad_field(app_client: TestClient, world: World) -> None:
    r = app_client.post(
        "/api/v1/cases", headers=world.h("off1"),
        json={"subject_id": "not-a-uuid", "officer_id": str(world.users["off1"]),
              "court_order_ref": "", "starts_on": "2026-02-30", "ends_on": "2026-01-01",
              "risk_level": "extreme", "timezone": "Mars/Olympus"},
    )
    body = _is_problem(r, 422, "validation_failed")
    fields = {e["field"]: e for e in body["errors"]}
    assert set(fields) == {"subject_id", "court_order_ref", "starts_on", "risk_level", "timezone"}
    assert fields["timezone"]["code"] == "timezone_unknown"
    assert all(e["location"] == "body" and e["message"] for e in body["errors"])
    # query and path parameters
    body = _is_problem(app_client.get("/api/v1/cases?limit=0&risk_level=x", headers=world.h("off1")),
                       422, "validation_failed")
    assert {(e["location"], e["field"]) for e in body["errors"]} == {("query", "limit"), ("query", "risk_level")}
    body = _is_problem(app_client.get("/api/v1/cases/123", headers=world.h("off1")), 422,
                       "validation_failed")
    assert body["errors"][0]["location"] == "path" and body["errors"][0]["field"] == "case_id"
    # a body that is not JSON
    r = app_client.post("/api/v1/subjects", headers=world.h("off1", **{"content-type": "application/json"}),
                        content=b"{nope")
    assert _is_problem(r, 422, "validation_failed")["errors"][0]["code"] == "json_invalid"
    # cross-field rules name the field they blame
    r = app_client.post(
        "/api/v1/cases", headers=world.h("off1"),
        json={"subject_id": str(world.subjects["off1"]), "officer_id": str(world.users["off1"]),
              "court_order_ref": "X", "starts_on": "2026-02-01", "ends_on": "2026-01-01",
              "risk_level": "low"},
    )
    assert _is_problem(r, 422, "validation_failed")["errors"][0]["field"] == "ends_on"
    # NUL characters never reach PostgreSQL
    r = app_client.post("/api/v1/alerts/{}/notes".format(world.alerts["off1"]),
                        headers=world.h("off1"), json={"text": "a\x00b"})
    assert _is_problem(r, 422, "validation_failed")["errors"][0]["code"] == "nul_character"
    r = app_client.get("/api/v1/cases?cursor=bm90LWEtY3Vyc29y", headers=world.h("off1"))
    assert _is_problem(r, 422, "validation_failed")["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("lang", ["kk", "ru", "en"])
def test_accept_language(app_client: TestClient, world: World, lang: str) -> None:
    r = app_client.get(f"/api/v1/cases/{uuid.uuid4()}",
                       headers=world.h("off1", **{"Accept-Language": f"{lang};q=0.9, de;q=0.1"}))
    body = _is_problem(r, 404, "not_found")
    assert body["title"] == PROBLEMS[lang]["not_found"].title
    assert r.headers["content-language"] == lang
    r = app_client.post("/api/v1/subjects", headers=world.h("off1", **{"Accept-Language": lang}),
                        json={"iin": "900101300018", "full_name": "X", "birth_date": "1990-01-01"})
    err = _is_problem(r, 422, "validation_failed")["errors"][0]
    assert err["field"] == "iin" and err["code"] == "iin_checksum"
    assert err["message"] == {"en": "The IIN's check digit is wrong.",
                              "ru": "Неверная контрольная цифра ИИН.",
                              "kk": "ЖСН бақылау цифры қате."}[lang]


def test_500_is_logged_with_the_request_id_and_answers_no_internals(
    app_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    app_client.app.add_api_route("/api/v1/boom", boom)  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="probation.errors"):
        r = app_client.get("/api/v1/boom", headers={"Accept-Language": "kk",
                                                    "X-Request-ID": "req-12345678"})
    body = _is_problem(r, 500, "internal_error")
    assert body["request_id"] == "req-12345678"
    assert "hunter2" not in r.text and "RuntimeError" not in r.text and "Traceback" not in r.text
    assert "req-12345678" in body["detail"]
    assert any("req-12345678" in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_idempotency_key_replays_the_first_response(app_client: TestClient, world: World) -> None:
    c = app_client
    key = {"Idempotency-Key": "note-" + uuid.uuid4().hex}
    url = f"/api/v1/alerts/{world.alerts['off1']}/notes"
    first = c.post(url, headers=world.h("off1", **key), json={"text": "first"})
    again = c.post(url, headers=world.h("off1", **key), json={"text": "first"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    timeline = c.get(f"/api/v1/alerts/{world.alerts['off1']}", headers=world.h("off1")).json()["timeline"]
    assert [e["kind"] for e in timeline].count("note") == 1
    # the same key elsewhere is refused; another user's identical key is their own
    other = c.post(f"/api/v1/alerts/{world.alerts['off1']}/acknowledge", headers=world.h("off1", **key))
    _is_problem(other, 422, "idempotency_key_reused")
    mine = c.post(url, headers=world.h("sup1", **key), json={"text": "second"})
    assert mine.status_code == 201 and mine.json()["id"] != first.json()["id"]
    # failures are not stored: fixing the request with the same key works
    key2 = {"Idempotency-Key": "case-" + uuid.uuid4().hex}
    bad = c.patch(f"/api/v1/cases/{world.cases['off1']}", headers=world.h("off1", **key2),
                  json={"ends_on": "1999-01-01"})
    assert bad.status_code == 422
    good = c.patch(f"/api/v1/cases/{world.cases['off1']}", headers=world.h("off1", **key2),
                   json={"ends_on": "2027-06-01"})
    assert good.status_code == 200 and good.json()["ends_on"] == "2027-06-01"
    r = c.post(url, headers=world.h("off1", **{"Idempotency-Key": "bad key with spaces"}),
               json={"text": "x"})
    assert r.status_code == 422 and r.json()["errors"][0]["location"] == "header"


def test_unauthenticated_requests_carry_no_token(app_client: TestClient) -> None:
    r = app_client.get("/api/v1/me", headers=auth("x.y.z"))
    _is_problem(r, 401, "invalid_token")


def _cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


def test_forged_cursors_are_422_not_500(app_client: TestClient, world: World) -> None:
    case = world.cases["off1"]
    forged = [
        ("/api/v1/cases", _cursor("cases", "2026-01-01T00:00:00", str(uuid.uuid4()))),  # naive
        ("/api/v1/cases", _cursor("alerts", "2026-01-01T00:00:00Z", str(uuid.uuid4()))),  # other list
        ("/api/v1/alerts", _cursor("alerts", "2026-01-01T00:00:00Z", "not-a-uuid")),
        ("/api/v1/audit", _cursor("audit", 2**70)),
        ("/api/v1/users", _cursor("users", "a\x00b")),
        ("/api/v1/devices", _cursor("devices", 12)),
        (f"/api/v1/cases/{case}/events", _cursor("events", "2026-01-01T00:00:00Z", str(uuid.uuid4()), -(2**64))),
        ("/api/v1/cases", "!!!"),
    ]
    for path, cursor in forged:
        r = app_client.get(path, params={"cursor": cursor}, headers=world.h("admin"))
        body = _is_problem(r, 422, "validation_failed")
        assert body["errors"][0]["field"] == "cursor", (path, cursor)
