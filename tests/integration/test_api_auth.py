"""Sign-in, tokens, `/me`, the bootstrap admin and the users routes."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from fastapi.testclient import TestClient

from tests.integration._api import PASSWORD, World, auth

pytest_plugins = ["tests.integration._api_fixtures"]


def _login(c: TestClient, username: str, password: str) -> Any:
    return c.post("/api/v1/auth/token", data={"username": username, "password": password})


def test_password_flow_gives_a_short_lived_jwt(app_client: TestClient, world: World, settings: Any) -> None:
    r = _login(app_client, "off1", PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.jwt_ttl_s == 900
    claims = jwt.decode(body["access_token"], settings.resolved_jwt_secret(), algorithms=["HS256"])
    assert claims["sub"] == str(world.users["off1"])
    assert claims["exp"] - claims["iat"] == 900
    me = app_client.get("/api/v1/me", headers=auth(body["access_token"])).json()
    assert me["username"] == "off1" and me["role"] == "officer"
    assert "password_hash" not in me


def test_the_language_is_kept_per_user(app_client: TestClient, world: World) -> None:
    """`PATCH /me` `{"language"}`: the console's language follows the user (an addition)."""
    h = auth(_login(app_client, "off1", PASSWORD).json()["access_token"])
    assert app_client.get("/api/v1/me", headers=h).json()["language"] is None
    r = app_client.patch("/api/v1/me", headers=h, json={"language": "de"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "language"
    r = app_client.patch("/api/v1/me", headers=h, json={"language": "kk"})
    assert r.status_code == 200 and r.json()["language"] == "kk"
    h2 = auth(_login(app_client, "off1", PASSWORD).json()["access_token"])  # a new session
    assert app_client.get("/api/v1/me", headers=h2).json()["language"] == "kk"
    assert app_client.patch("/api/v1/me", json={"language": "ru"}).status_code == 401


def test_bad_credentials_and_tokens_are_401_problems(app_client: TestClient, world: World, settings: Any) -> None:
    for user, pw in (("off1", "wrong-password"), ("nobody", PASSWORD)):
        r = _login(app_client, user, pw)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "invalid_credentials"
        assert r.headers["www-authenticate"] == "Bearer"
    assert app_client.get("/api/v1/me").json()["code"] == "not_authenticated"
    for token in ("garbage", jwt.encode({"sub": str(world.users["off1"]), "iat": 0, "exp": 1},
                                        settings.resolved_jwt_secret(), algorithm="HS256"),
                  jwt.encode({"sub": str(world.users["off1"]), "iat": int(time.time()),
                              "exp": int(time.time()) + 60}, "another-secret-" * 4, algorithm="HS256"),
                  jwt.encode({"sub": str(uuid.uuid4()), "iat": int(time.time()),
                              "exp": int(time.time()) + 60}, settings.resolved_jwt_secret(),
                             algorithm="HS256")):
        r = app_client.get("/api/v1/me", headers=auth(token))
        assert r.status_code == 401 and r.json()["code"] == "invalid_token", token


def test_bootstrap_admin(settings: Any, database_url: str, mqtt_url: str) -> None:
    from probation.app import create_app

    s = settings.model_copy(update={"admin_password": "bootstrap-pass-1"})
    with TestClient(create_app(s, database_url=database_url, mqtt_url=mqtt_url)) as c:
        r = _login(c, "admin", "bootstrap-pass-1")
        assert r.status_code == 200
        assert c.get("/api/v1/me", headers=auth(r.json()["access_token"])).json()["role"] == "admin"


def test_users_routes(app_client: TestClient, world: World) -> None:
    c = app_client
    body = {"username": "off4", "password": "long-enough-pw", "role": "officer",
            "full_name": "Айгерим Officer", "supervisor_id": str(world.users["sup2"])}
    r = c.post("/api/v1/users", headers=world.h("admin"), json=body)
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["supervisor_id"] == str(world.users["sup2"]) and "password" not in new
    assert c.post("/api/v1/users", headers=world.h("admin"), json=body).json()["code"] == "username_taken"
    assert _login(c, "off4", "long-enough-pw").status_code == 200
    # the new officer's cases are now sup2's team's
    team = c.get("/api/v1/users", headers=world.h("sup2")).json()["items"]
    assert {u["username"] for u in team} == {"sup2", "off3", "off4"}
    everyone = c.get("/api/v1/users?limit=3", headers=world.h("admin")).json()
    assert len(everyone["items"]) == 3 and everyone["next_cursor"]
    rest = c.get(f"/api/v1/users?cursor={everyone['next_cursor']}", headers=world.h("admin")).json()
    assert len(everyone["items"]) + len(rest["items"]) == 7
    assert c.get(f"/api/v1/users/{world.users['off1']}", headers=world.h("sup2")).status_code == 404
    # supervisor_id must name a supervisor, and only officers have one
    bad = {**body, "username": "off5", "supervisor_id": str(world.users["off1"])}
    r = c.post("/api/v1/users", headers=world.h("admin"), json=bad)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "supervisor_id"
    bad = {**body, "username": "sup3", "role": "supervisor"}
    assert c.post("/api/v1/users", headers=world.h("admin"), json=bad).status_code == 422
    # PATCH: deactivate → the token stops working
    r = c.patch(f"/api/v1/users/{new['id']}", headers=world.h("admin"),
                json={"is_active": False, "full_name": "Gone"})
    assert r.status_code == 200 and r.json()["is_active"] is False
    token = _login(c, "off1", PASSWORD).json()["access_token"]
    c.patch(f"/api/v1/users/{world.users['off1']}", headers=world.h("admin"), json={"is_active": False})
    assert c.get("/api/v1/me", headers=auth(token)).status_code == 401
    assert c.patch(f"/api/v1/users/{uuid.uuid4()}", headers=world.h("admin"), json={}).status_code == 404
    # password change
    c.patch(f"/api/v1/users/{world.users['off2']}", headers=world.h("admin"),
            json={"password": "brand-new-password"})
    assert _login(c, "off2", "brand-new-password").status_code == 200
