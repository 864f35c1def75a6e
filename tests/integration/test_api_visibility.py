"""Who sees what: one table-driven matrix of route x caller x owner.

The world has two teams: sup1 supervises off1 and off2, sup2 supervises off3; an
admin sees everything. For every case-scoped route and every caller, a resource
owned by off1 or by off3 must answer exactly as if it did not exist (404) to
callers outside the owner's team, and work for the owner, the owner's
supervisor and the admin. Role-restricted routes answer 403 to other roles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration._api import World

CALLERS = ("off1", "off2", "off3", "sup1", "sup2", "admin")
TEAM = {"off1": "sup1", "off2": "sup1", "off3": "sup2", "sup1": "sup1"}

pytest_plugins = ["tests.integration._api_fixtures"]


def sees(caller: str, owner: str) -> bool:
    """The visibility rule of the contract, written independently of the code."""
    return caller == "admin" or caller == owner or TEAM.get(owner) == caller


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {case} {zone} {alert} {subject} {device} of the owner
    ok: tuple[int, ...]  # statuses meaning "visible and allowed"
    body: Any = None
    roles: tuple[str, ...] | None = None  # None: every role; else others get 403

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("GET", "/cases/{case}", (200,)),
    Route("PATCH", "/cases/{case}", (200,), {"court_order_ref": "ORD-X"}),
    Route("GET", "/cases/{case}/track", (200,)),
    Route("GET", "/cases/{case}/events", (200,)),
    Route("GET", "/cases/{case}/checkins", (200,)),
    Route("GET", "/cases/{case}/devices", (200,)),
    Route("GET", "/cases/{case}/zones", (200,)),
    Route("POST", "/cases/{case}/zones", (201,),
          {"name": "pub", "kind": "exclusion", "circle": {"center": [76.95, 43.25], "radius_m": 50}}),
    Route("POST", "/cases/{case}/checkin-requests", (201,)),
    Route("GET", "/zones/{zone}", (200,)),
    Route("PATCH", "/zones/{zone}", (200,), {"buffer_m": 25}),
    Route("GET", "/alerts/{alert}", (200,)),
    Route("GET", "/alerts?case_id={case}", (200,)),
    Route("POST", "/alerts/{alert}/acknowledge", (200, 409)),
    Route("POST", "/alerts/{alert}/notes", (201,), {"text": "called the person"}),
    Route("GET", "/subjects/{subject}", (200,)),
    Route("GET", "/devices/{device}", (200,)),
    Route("GET", "/audit?case_id={case}", (200,), roles=("sup1", "sup2", "admin")),
]


def _url(route: Route, w: World, owner: str) -> str:
    return "/api/v1" + route.path.format(
        case=w.cases[owner], zone=w.zones[owner], alert=w.alerts[owner],
        subject=w.subjects[owner], device=w.devices[owner],
    )


@pytest.mark.parametrize("owner", ["off1", "off3"])
@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_visibility_matrix(
    module_client: TestClient, module_world: World, route: Route, caller: str, owner: str
) -> None:
    r = module_client.request(route.method, _url(route, module_world, owner),
                              headers=module_world.h(caller), json=route.body)
    if route.roles is not None and caller not in route.roles:
        assert r.status_code == 403, r.text
        return
    if sees(caller, owner):
        assert r.status_code in route.ok, r.text
    else:
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "not_found"


def test_invisible_is_exactly_like_missing(module_client: TestClient, module_world: World) -> None:
    """Same status, same body shape and text for another team's case and a case that never was."""
    w = module_world
    other = module_client.get(f"/api/v1/cases/{w.cases['off3']}", headers=w.h("off1")).json()
    missing = module_client.get("/api/v1/cases/00000000-0000-4000-8000-000000000000",
                                headers=w.h("off1")).json()
    for k in ("type", "title", "status", "detail", "code"):
        assert other[k] == missing[k]


@pytest.mark.parametrize(
    ("caller", "expected"),
    [("off1", {"off1"}), ("off2", {"off2"}), ("off3", {"off3"}), ("sup1", {"off1", "off2", "sup1"}),
     ("sup2", {"off3"}), ("admin", {"off1", "off2", "off3", "sup1"})],
)
def test_caseload_and_alert_lists_hold_exactly_the_visible_cases(
    module_client: TestClient, module_world: World, caller: str, expected: set[str]
) -> None:
    w = module_world
    want = {w.cases[o] for o in expected}
    cases = module_client.get("/api/v1/cases?limit=500", headers=w.h(caller)).json()["items"]
    assert {c["id"] for c in cases} == {str(c) for c in want}
    alerts = module_client.get("/api/v1/alerts?limit=500", headers=w.h(caller)).json()["items"]
    assert {a["case_id"] for a in alerts} == {str(c) for c in want}
    stream_scope = module_client.get("/api/v1/devices?limit=500", headers=w.h(caller)).json()
    serials = {d["serial"] for d in stream_scope["items"]}
    assert serials == {f"BR-{o}" for o in expected}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/users", {"sup1", "sup2", "admin"}),
        ("POST", "/devices", {"admin"}),
        ("POST", "/users", {"admin"}),
        ("POST", "/zones", {"sup1", "sup2", "admin"}),
        ("GET", "/audit", {"sup1", "sup2", "admin"}),
        ("GET", "/audit/verify", {"admin"}),
    ],
)
def test_role_restricted_routes(
    module_client: TestClient, module_world: World, method: str, path: str, allowed: set[str]
) -> None:
    for caller in CALLERS:
        r = module_client.request(method, "/api/v1" + path, headers=module_world.h(caller), json={})
        if caller in allowed:
            assert r.status_code in (200, 422), (caller, r.text)  # {} is not a valid body
        else:
            assert r.status_code == 403, (caller, r.text)
            assert r.json()["code"] == "forbidden"


def test_officer_cannot_acknowledge_another_officers_alert(
    module_client: TestClient, module_world: World
) -> None:
    w = module_world
    r = module_client.post(f"/api/v1/alerts/{w.alerts['off2']}/acknowledge", headers=w.h("off1"))
    assert r.status_code == 404
    detail = module_client.get(f"/api/v1/alerts/{w.alerts['off2']}", headers=w.h("off2")).json()
    assert all(e["actor"] != "off1" for e in detail["timeline"])
