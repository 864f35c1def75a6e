"""BOLA matrix, generated from `/openapi.json`: every route that takes an object id in its
path x six callers (the owner officer, a teammate, an officer of another team, the
owner's supervisor, another supervisor, an admin) x two objects (off1's and off3's).

A caller outside the object's line (owner, owner's supervisor, admin) must get 403 or
404, nothing else: not a 2xx (a leak) and not a 422 (the request got past the ownership
check to body validation). So that this cannot pass vacuously, every read by a caller
inside the line must succeed (or be refused for their role, never for the object),
the admin's reads must all succeed, and every other request by the admin must get past the
ownership check (not 404). Request bodies and required query parameters are synthesised
from the route's JSON schema. A route whose id parameter this file does not know fails
the test: new routes are covered as soon as they exist.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.integration._api import World

pytest_plugins = ["tests.integration._api_fixtures"]

OWNERS = ("off1", "off3")
CALLERS = ("off1", "off2", "off3", "sup1", "sup2", "admin")
#: Who may reach an object of each owner: the owner, their supervisor, admins.
LINE = {"off1": {"off1", "sup1", "admin"}, "off3": {"off3", "sup2", "admin"}}
#: Path parameter -> the world's objects of that kind (by owner).
KINDS = {"case_id": "cases", "subject_id": "subjects", "device_id": "devices",
         "zone_id": "zones", "alert_id": "alerts", "user_id": "users"}
#: Parameters of objects no officer or supervisor owns (admin only).
ADMIN_ONLY = {"dead_letter_id"}
METHOD_ORDER = {"get": 0, "patch": 1, "post": 2, "put": 3, "delete": 4}


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].split("/")[-1]]
    return schema


def synth(doc: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> Any:
    """A value valid for simple JSON schemas (examples and defaults first)."""
    schema = _resolve(doc, schema)
    for key in ("examples", "example", "default"):
        if key in schema and schema[key] is not None:
            v = schema[key]
            return v[0] if key == "examples" and isinstance(v, list) else v
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for union in ("anyOf", "oneOf", "allOf"):
        if union in schema:
            options = [o for o in schema[union] if _resolve(doc, o).get("type") != "null"]
            return synth(doc, options[0] if options else schema[union][0], depth + 1)
    t = schema.get("type")
    if t == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: synth(doc, props[k], depth + 1) for k in schema.get("required", [])
                if k in props}
    if t == "array":
        n = max(int(schema.get("minItems", 0)), 1 if depth == 0 else 0)
        return [synth(doc, schema.get("items", {}), depth + 1) for _ in range(n)]
    if t == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if t == "number":
        return 0.5
    if t == "boolean":
        return False
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    if schema.get("format") == "date-time":
        return datetime.now(UTC).isoformat()
    if schema.get("format") == "date":
        return "2026-06-01"
    return "probe"


def id_routes(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path, item in doc["paths"].items():
        if "{" not in path:
            continue
        for method, op in item.items():
            if method in METHOD_ORDER:
                out.append((path, method, op))
    return sorted(out, key=lambda r: (METHOD_ORDER[r[1]], r[0].endswith("/close"), r[0]))


def request_for(doc: dict[str, Any], op: dict[str, Any], path: str, ids: dict[str, str]) -> dict[str, Any]:
    url = path.format(**ids)
    query = {p["name"]: synth(doc, p.get("schema", {})) for p in op.get("parameters", [])
             if p["in"] == "query" and p.get("required")}
    kw: dict[str, Any] = {"params": query}
    body = op.get("requestBody")
    if body:
        content = body["content"]
        if "application/json" in content:
            kw["json"] = synth(doc, content["application/json"].get("schema", {}))
        elif "multipart/form-data" in content:
            kw["files"] = {"probe": ("probe.bin", b"probe")}
    return {"url": url, **kw}


@pytest.fixture(scope="module")
def dead_letter(module_db: tuple[str, Any]) -> int:
    with psycopg.connect(module_db[0], autocommit=True) as c:
        row = c.execute(
            "INSERT INTO dead_letters (topic, reason, detail, payload, fingerprint) "
            "VALUES ('pm/v1/d/x/fixes', 'not_json', 'probe', 'x', %s) RETURNING id",
            (uuid.uuid4().bytes,),
        ).fetchone()
        assert row is not None
        return int(row[0])


def test_bola_matrix(module_client: TestClient, module_world: World, dead_letter: int) -> None:
    c, w = module_client, module_world
    doc = c.get("/openapi.json").json()
    routes = id_routes(doc)
    leaks: list[str] = []
    vacuous: list[str] = []
    unknown: set[str] = set()
    requests = 0
    for path, method, op in routes:
        params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
        for name in params:
            if name not in KINDS and name not in ADMIN_ONLY:
                unknown.add(f"{method.upper()} {path}: {name}")
        if any(n not in KINDS and n not in ADMIN_ONLY for n in params):
            continue
        for owner in OWNERS:
            ids = {n: str(getattr(w, KINDS[n])[owner]) if n in KINDS else str(dead_letter)
                   for n in params}
            line = {"admin"} if any(n in ADMIN_ONLY for n in params) else LINE[owner]
            req = request_for(doc, op, path, ids)
            # outsiders first: an insider's change (a delete) must not hide a leak
            for caller in sorted(CALLERS, key=lambda x: x in line):
                r = c.request(method.upper(), headers=w.h(caller), **req)
                requests += 1
                where = f"{method.upper()} {path} as {caller} on {owner}'s -> {r.status_code}"
                if caller not in line and r.status_code not in (403, 404):
                    leaks.append(where + f" {r.text[:200]}")
                elif (caller in line and method == "get" and r.status_code != 200
                      and not (r.status_code == 403 and caller != "admin")) or (caller == "admin" and r.status_code in (401, 404) and method != "delete"):  # role-only route
                    vacuous.append(where + f" {r.text[:200]}")
    print(f"BOLA matrix: {len(routes)} id routes, {requests} requests, {len(leaks)} leaks")
    assert not unknown, f"routes with an id this matrix does not know: {sorted(unknown)}"
    assert not leaks, "\n".join(leaks)
    assert not vacuous, "\n".join(vacuous)
    assert requests >= len(routes) * len(CALLERS)


def test_refused_attempts_are_audited(module_client: TestClient, module_world: World,
                                       module_db: tuple[str, Any]) -> None:
    c, w = module_client, module_world
    since = datetime.now(UTC) - timedelta(seconds=1)
    assert c.get(f"/api/v1/cases/{w.cases['off3']}", headers=w.h("off1")).status_code == 404
    assert c.get(f"/api/v1/cases/{w.cases['off3']}/devices", headers=w.h("off1")).status_code == 404
    with psycopg.connect(module_db[0]) as conn:
        rows = conn.execute(
            "SELECT detail->>'path', detail->>'status', case_id FROM audit_log "
            "WHERE action = 'access.refused' AND user_id = %s AND at >= %s ORDER BY id",
            (w.users["off1"], since),
        ).fetchall()
    assert [(p, s) for p, s, _ in rows][-2:] == [
        (f"/api/v1/cases/{w.cases['off3']}", "404"),
        (f"/api/v1/cases/{w.cases['off3']}/devices", "404")]
    assert rows[-1][2] == w.cases["off3"]
