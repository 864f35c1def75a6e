"""Zones: geometry, circle, buffer, schedule and exceptions validated (422 naming the
field), shared zones attached to several cases, and every change bumping the engine's
configuration version."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.integration._api import World

HOLED = {
    "type": "Polygon",
    "coordinates": [
        [[76.90, 43.20], [76.95, 43.20], [76.95, 43.25], [76.90, 43.25], [76.90, 43.20]],
        [[76.92, 43.22], [76.93, 43.22], [76.93, 43.23], [76.92, 43.23], [76.92, 43.22]],
    ],
}
CURFEW = {"windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "22:00", "end": "06:00"}]}

pytest_plugins = ["tests.integration._api_fixtures"]


def _version(database_url: str) -> int:
    with psycopg.connect(database_url) as c:
        row = c.execute("SELECT version FROM config_versions WHERE name = 'zones'").fetchone()
    assert row is not None
    return int(row[0])


def test_case_zone_crud_bumps_the_config_version(
    app_client: TestClient, world: World, database_url: str
) -> None:
    c, w = app_client, world
    v = _version(database_url)
    r = c.post(f"/api/v1/cases/{w.cases['off1']}/zones", headers=w.h("off1"), json={
        "name": "Home (curfew)", "kind": "inclusion", "geometry": HOLED, "schedule": CURFEW,
        "exceptions": [{"from": "2026-12-01T10:00:00+05:00", "to": "2026-12-01T18:00:00+05:00",
                        "reason": "court hearing"}],
    })
    assert r.status_code == 201, r.text
    zone = r.json()
    assert zone["geometry"]["coordinates"][1][0] == [76.92, 43.22]
    assert zone["exceptions"][0]["from"] == "2026-12-01T05:00:00Z"  # stored and served in UTC
    assert zone["case_ids"] == [str(w.cases["off1"])] and zone["shared"] is False
    assert _version(database_url) > v
    v = _version(database_url)
    r = c.patch(f"/api/v1/zones/{zone['id']}", headers=w.h("off1"),
                json={"circle": {"center": [76.93, 43.23], "radius_m": 150}, "schedule": None})
    assert r.status_code == 200, r.text
    assert r.json()["geometry"] is None and r.json()["circle"]["radius_m"] == 150
    assert r.json()["schedule"] is None and r.json()["version"] == 2
    assert _version(database_url) > v
    v = _version(database_url)
    listed = c.get(f"/api/v1/cases/{w.cases['off1']}/zones", headers=w.h("sup1")).json()["items"]
    assert {z["id"] for z in listed} == {zone["id"], str(w.zones["off1"])}
    assert c.delete(f"/api/v1/zones/{zone['id']}", headers=w.h("off1")).status_code == 204
    assert _version(database_url) > v
    assert c.get(f"/api/v1/zones/{zone['id']}", headers=w.h("off1")).status_code == 404
    listed = c.get(f"/api/v1/cases/{w.cases['off1']}/zones", headers=w.h("off1")).json()["items"]
    assert [z["id"] for z in listed] == [str(w.zones["off1"])]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT deleted_at IS NOT NULL FROM zones WHERE id = %s", (zone["id"],)).fetchone()
    assert row == (True,)


BASE: dict[str, Any] = {"name": "z", "kind": "exclusion"}


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({**BASE, "geometry": {"type": "Polygon", "coordinates": [[[76.9, 43.2], [76.95, 43.25], [76.95, 43.2], [76.9, 43.25], [76.9, 43.2]]]}},
         "geometry.coordinates.0", "geometry_invalid"),  # bow tie: self-intersecting
        ({**BASE, "geometry": {"type": "Polygon", "coordinates": [[[76.9, 43.2], [76.95, 43.2], [76.95, 43.25], [76.9, 43.25]]]}},
         "geometry.coordinates.0", "geometry_invalid"),  # not closed
        ({**BASE, "geometry": {"type": "Polygon", "coordinates": [[[76.9, 43.2], [76.95, 43.2], [76.9, 43.2]]]}},
         "geometry.coordinates.0", "too_short"),
        ({**BASE, "geometry": {"type": "Point", "coordinates": [76.9, 43.2]}}, "geometry", "union_tag_invalid"),
        ({**BASE, "geometry": {"type": "Polygon", "coordinates": [[[200, 43.2], [76.95, 43.2], [76.95, 43.25], [200, 43.2]]]}},
         "geometry.coordinates.0.0", "geometry_invalid"),
        ({**BASE}, "geometry", "geometry_or_circle"),
        ({**BASE, "geometry": HOLED, "circle": {"center": [76.9, 43.2], "radius_m": 10}}, "geometry", "geometry_or_circle"),
        ({**BASE, "circle": {"center": [76.9, 43.2], "radius_m": 0}}, "circle.radius_m", "greater_than"),
        ({**BASE, "circle": {"center": [76.9, 95], "radius_m": 10}}, "circle.center.1", "less_than_equal"),
        ({**BASE, "circle": {"center": [76.9, 43.2], "radius_m": 10}, "buffer_m": -1}, "buffer_m", "greater_than_equal"),
        ({**BASE, "circle": {"center": [76.9, 43.2], "radius_m": 10},
          "schedule": {"windows": [{"days": ["mon", "funday"], "start": "22:00", "end": "06:00"}]}},
         "schedule.windows.0.days.1", "literal_error"),
        ({**BASE, "circle": {"center": [76.9, 43.2], "radius_m": 10},
          "schedule": {"windows": [{"days": ["mon", "mon"], "start": "22:00", "end": "06:00"}]}},
         "schedule.windows.0.days.1", "schedule_invalid"),
        ({**BASE, "circle": {"center": [76.9, 43.2], "radius_m": 10},
          "schedule": {"windows": [{"days": ["mon"], "start": "25:00", "end": "06:00"}]}},
         "schedule.windows.0.start", "string_pattern_mismatch"),
        ({**BASE, "circle": {"center": [76.9, 43.2], "radius_m": 10},
          "exceptions": [{"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}]},
         "exceptions.0.to", "time_order"),
        ({**BASE, "circle": {"center": [76.9, 43.2], "radius_m": 10},
          "exceptions": [{"from": "2026-12-02T00:00:00", "to": "2026-12-03T00:00:00Z"}]},
         "exceptions.0.from", "timezone_aware"),
    ],
)
def test_invalid_zones_are_422_naming_the_field(
    module_client: TestClient, module_world: World, body: dict[str, Any], field: str, code: str
) -> None:
    w = module_world
    r = module_client.post(f"/api/v1/cases/{w.cases['off1']}/zones", headers=w.h("off1"), json=body)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert any(e["field"] == field and e["code"] == code for e in errors), errors


SWAPPED = {"type": "Polygon", "coordinates": [[[lat, lon] for lon, lat in HOLED["coordinates"][0]]]}


@pytest.mark.parametrize(("lang", "hint"), [
    ("en", "[longitude, latitude]"), ("ru", "[долгота, широта]"), ("kk", "[бойлық, ендік]"),
])
def test_a_zone_outside_the_service_area_is_refused_with_the_swap_hint(
    module_client: TestClient, module_world: World, lang: str, hint: str
) -> None:
    c, w = module_client, module_world
    url = f"/api/v1/cases/{w.cases['off1']}/zones"
    h = w.h("off1", **{"Accept-Language": lang})
    r = c.post(url, headers=h, json={**BASE, "geometry": SWAPPED})  # [lat, lon]: the Barents Sea
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    [e] = r.json()["errors"]
    assert (e["field"], e["code"]) == ("geometry", "outside_service_area_swapped")
    assert hint in e["message"] and "40.5" in e["message"] and "87.4" in e["message"]
    r = c.post(url, headers=h, json={**BASE, "circle": {"center": [2.35, 48.85], "radius_m": 50}})
    assert r.status_code == 422, r.text  # Paris: outside, swapping does not help
    [e] = r.json()["errors"]
    assert (e["field"], e["code"]) == ("circle", "outside_service_area")
    assert hint not in e["message"]
    r = c.post(url, headers=h, json={**BASE, "geometry": HOLED})  # the same zone, [lon, lat]
    assert r.status_code == 201, r.text
    r = c.patch(f"/api/v1/zones/{r.json()['id']}", headers=h,
                json={"circle": {"center": [43.23, 76.93], "radius_m": 150}})
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "outside_service_area_swapped"


def test_shared_zones(app_client: TestClient, world: World, database_url: str) -> None:
    c, w = app_client, world
    school = {"name": "School No. 12", "kind": "exclusion", "buffer_m": 200,
              "circle": {"center": [76.95, 43.24], "radius_m": 120}}
    assert c.post("/api/v1/zones", headers=w.h("off1"), json=school).status_code == 403
    r = c.post("/api/v1/zones", headers=w.h("sup1"), json=school)
    assert r.status_code == 201 and r.json()["shared"] is True and r.json()["case_ids"] == []
    zid = r.json()["id"]
    # the shared zones are listed for a picker (supervisor, admin), a case's own zone is not
    assert c.get("/api/v1/zones", headers=w.h("off1")).status_code == 403
    listed = c.get("/api/v1/zones?limit=1", headers=w.h("sup2")).json()
    assert [z["id"] for z in listed["items"]] == [zid] and listed["next_cursor"] is None
    assert str(w.zones["off1"]) not in [z["id"] for z in c.get(
        "/api/v1/zones", headers=w.h("admin")).json()["items"]]
    assert c.get(f"/api/v1/zones/{zid}", headers=w.h("off1")).status_code == 404  # not attached yet
    assert c.get(f"/api/v1/zones/{zid}", headers=w.h("sup2")).status_code == 200  # supervisors see shared
    for owner in ("off1", "off3"):
        who = "sup1" if owner == "off1" else "sup2"
        v = _version(database_url)
        r = c.post(f"/api/v1/cases/{w.cases[owner]}/zones/{zid}", headers=w.h(who))
        assert r.status_code == 200, r.text
        assert _version(database_url) > v
    assert c.post(f"/api/v1/cases/{w.cases['off1']}/zones/{zid}",
                  headers=w.h("sup1")).json()["code"] == "zone_already_attached"
    # each officer sees the zone and only their own case among its cases
    assert c.get(f"/api/v1/zones/{zid}", headers=w.h("off1")).json()["case_ids"] == [str(w.cases["off1"])]
    assert c.get(f"/api/v1/zones/{zid}", headers=w.h("off3")).json()["case_ids"] == [str(w.cases["off3"])]
    assert len(c.get(f"/api/v1/zones/{zid}", headers=w.h("admin")).json()["case_ids"]) == 2
    # a case's own zone cannot be attached elsewhere
    r = c.post(f"/api/v1/cases/{w.cases['off2']}/zones/{w.zones['off1']}", headers=w.h("sup1"))
    assert r.status_code == 409 and r.json()["code"] == "zone_not_shared"
    # officers may not change or detach shared zones; supervisors may
    assert c.patch(f"/api/v1/zones/{zid}", headers=w.h("off1"), json={"buffer_m": 300}).status_code == 403
    assert c.delete(f"/api/v1/cases/{w.cases['off1']}/zones/{zid}", headers=w.h("off1")).status_code == 403
    r = c.patch(f"/api/v1/zones/{zid}", headers=w.h("sup2"), json={"buffer_m": 300})
    assert r.status_code == 200 and r.json()["buffer_m"] == 300 and r.json()["version"] == 2
    assert c.delete(f"/api/v1/cases/{w.cases['off3']}/zones/{zid}", headers=w.h("sup2")).status_code == 204
    assert c.get(f"/api/v1/zones/{zid}", headers=w.h("off3")).status_code == 404
    assert c.get(f"/api/v1/zones/{zid}", headers=w.h("off1")).status_code == 200
    assert c.delete(f"/api/v1/zones/{zid}", headers=w.h("sup1")).status_code == 204
    assert c.get(f"/api/v1/cases/{w.cases['off1']}/zones", headers=w.h("off1")).json()["items"][0]["id"] == str(w.zones["off1"])
    # a closed case takes no new zones
    c.post(f"/api/v1/cases/{w.cases['off2']}/close", headers=w.h("off2"))
    r = c.post(f"/api/v1/cases/{w.cases['off2']}/zones", headers=w.h("off2"), json=school)
    assert r.status_code == 409 and r.json()["code"] == "case_closed"
