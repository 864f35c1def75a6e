"""Attacks on sign-in and sessions: forged tokens, tokens after a password change or a
deactivation, refresh-token rotation and reuse, the TOTP second factor, the password
policy, throttling (per username and address, with backoff, no lock-out of others)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
import pyotp
import pytest
from fastapi.testclient import TestClient

from tests.integration._api import PASSWORD, World, auth

pytest_plugins = ["tests.integration._api_fixtures"]


def _login(c: TestClient, username: str, password: str, **extra: Any) -> Any:
    headers = extra.pop("headers", None)
    return c.post("/api/v1/auth/token", data={"username": username, "password": password, **extra},
                  headers=headers)


def _b64(d: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def test_forged_tokens_are_refused(app_client: TestClient, world: World, settings: Any) -> None:
    c, w = app_client, world
    good = w.tokens["off1"]
    claims = jwt.decode(good, settings.resolved_jwt_secret(), algorithms=["HS256"])
    now = int(time.time())
    header, _payload, sig = good.split(".")
    admin_claims = {**claims, "sub": str(w.users["admin"]), "role": "admin"}
    probes = {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(admin_claims)}.",
        "alg none, no dot": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(admin_claims)}",
        "wrong key": jwt.encode(admin_claims, "not-the-secret-" * 4, algorithm="HS256"),
        "tampered claims, original signature": f"{header}.{_b64(admin_claims)}.{sig}",
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600},
                              settings.resolved_jwt_secret(), algorithm="HS256"),
        "HS512 with the right key": jwt.encode(claims, settings.resolved_jwt_secret(),
                                               algorithm="HS512"),
        "no generation": jwt.encode({k: v for k, v in claims.items() if k != "gen"},
                                    settings.resolved_jwt_secret(), algorithm="HS256"),
        "old generation": jwt.encode({**claims, "gen": claims["gen"] - 1},
                                     settings.resolved_jwt_secret(), algorithm="HS256"),
        "unknown scope": jwt.encode({**claims, "scp": "everything"},
                                    settings.resolved_jwt_secret(), algorithm="HS256"),
        "unknown user": jwt.encode({**claims, "sub": str(uuid.uuid4())},
                                   settings.resolved_jwt_secret(), algorithm="HS256"),
        "garbage": "a.b.c",
    }
    results = {name: c.get("/api/v1/me", headers=auth(t)).status_code for name, t in probes.items()}
    print(f"JWT probes: {len(probes)}, accepted: {[n for n, s in results.items() if s != 401]}")
    assert results == dict.fromkeys(probes, 401)
    assert c.get("/api/v1/me", headers=auth(good)).status_code == 200


def test_password_change_and_deactivation_end_every_session(
    app_client: TestClient, world: World
) -> None:
    c, w = app_client, world
    first = _login(c, "off1", PASSWORD).json()
    second = _login(c, "off1", PASSWORD).json()
    assert c.get("/api/v1/me", headers=auth(first["access_token"])).status_code == 200
    r = c.post("/api/v1/me/password", headers=auth(first["access_token"]),
               json={"current_password": PASSWORD, "new_password": "a-new-long-passphrase"})
    assert r.status_code == 204, r.text
    for t in (first["access_token"], second["access_token"], w.tokens["off1"]):
        assert c.get("/api/v1/me", headers=auth(t)).status_code == 401
    for rt in (first["refresh_token"], second["refresh_token"]):
        assert c.post("/api/v1/auth/refresh", json={"refresh_token": rt}).status_code == 401
    assert _login(c, "off1", PASSWORD).status_code == 401
    fresh = _login(c, "off1", "a-new-long-passphrase").json()
    assert c.get("/api/v1/me", headers=auth(fresh["access_token"])).status_code == 200
    # a wrong current password changes nothing
    r = c.post("/api/v1/me/password", headers=auth(fresh["access_token"]),
               json={"current_password": "not-it-at-all", "new_password": "another-long-phrase"})
    assert r.status_code == 403
    # an admin's password reset and a deactivation end sessions too
    t2 = _login(c, "off2", PASSWORD).json()
    c.patch(f"/api/v1/users/{w.users['off2']}", headers=w.h("admin"),
            json={"password": "reset-by-the-admin"})
    assert c.get("/api/v1/me", headers=auth(t2["access_token"])).status_code == 401
    t3 = _login(c, "off3", PASSWORD).json()
    c.patch(f"/api/v1/users/{w.users['off3']}", headers=w.h("admin"), json={"is_active": False})
    assert c.get("/api/v1/me", headers=auth(t3["access_token"])).status_code == 401
    assert c.post("/api/v1/auth/refresh",
                  json={"refresh_token": t3["refresh_token"]}).status_code == 401


def test_refresh_tokens_rotate_and_a_reused_one_revokes_the_family(
    app_client: TestClient, world: World
) -> None:
    c = app_client
    t = _login(c, "sup1", PASSWORD).json()
    assert t["refresh_token"] and t["refresh_expires_in"] > t["expires_in"]
    r1 = c.post("/api/v1/auth/refresh", json={"refresh_token": t["refresh_token"]}).json()
    assert r1["refresh_token"] != t["refresh_token"]
    assert c.get("/api/v1/me", headers=auth(r1["access_token"])).status_code == 200
    # the old one again: a stolen copy; the whole family (r1's token too) dies
    assert c.post("/api/v1/auth/refresh",
                  json={"refresh_token": t["refresh_token"]}).status_code == 401
    assert c.post("/api/v1/auth/refresh",
                  json={"refresh_token": r1["refresh_token"]}).status_code == 401
    # sign-out revokes
    t = _login(c, "sup1", PASSWORD).json()
    assert c.post("/api/v1/auth/logout", json={"refresh_token": t["refresh_token"]}).status_code == 204
    assert c.post("/api/v1/auth/refresh",
                  json={"refresh_token": t["refresh_token"]}).status_code == 401
    assert c.post("/api/v1/auth/refresh", json={"refresh_token": "made-up"}).status_code == 401


def _code(secret: str, offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + offset)


def test_totp_required_for_admins_and_optional_for_others(
    app_client: TestClient, world: World
) -> None:
    c, w = app_client, world
    # an admin without a second factor gets a token that only reaches /me and /me/totp
    t = _login(c, "admin", PASSWORD).json()
    assert t["scope"] == "totp_setup" and t["refresh_token"] is None
    setup = auth(t["access_token"])
    assert c.get("/api/v1/me", headers=setup).json()["totp_required"] is False  # per user flag
    r = c.get("/api/v1/users", headers=setup)
    assert r.status_code == 401 and r.json()["code"] == "totp_setup_required"
    started = c.post("/api/v1/me/totp", headers=setup, json={"action": "enable"}).json()
    secret = started["secret"]
    assert started["otpauth_uri"].startswith("otpauth://totp/")
    bad = c.post("/api/v1/me/totp", headers=setup, json={"action": "confirm", "code": "000000"})
    assert bad.status_code in (401, 422) or _code(secret) == "000000"
    ok = c.post("/api/v1/me/totp", headers=setup, json={"action": "confirm", "code": _code(secret)})
    assert ok.status_code == 200 and ok.json()["enabled"] is True
    # confirming ended the setup token; sign-in now needs the code
    assert c.get("/api/v1/me", headers=setup).status_code == 401
    r = _login(c, "admin", PASSWORD)
    assert r.status_code == 401 and r.json()["code"] == "totp_required"
    r = _login(c, "admin", PASSWORD, totp="123456" if _code(secret) != "123456" else "654321")
    assert r.status_code == 401 and r.json()["code"] == "invalid_totp"
    # the step confirm used is spent: the next one works once
    code = _code(secret, 30)
    full = _login(c, "admin", PASSWORD, totp=code)
    assert full.status_code == 200, full.text
    assert full.json()["scope"] is None and full.json()["refresh_token"]
    admin = auth(full.json()["access_token"])
    assert c.get("/api/v1/users", headers=admin).status_code == 200
    assert _login(c, "admin", PASSWORD, totp=code).json()["code"] == "invalid_totp"  # replay
    # admins may not turn it off
    r = c.post("/api/v1/me/totp", headers=admin, json={"action": "disable", "code": _code(secret)})
    assert r.status_code == 409 and r.json()["code"] == "totp_required_by_role"
    # an officer may turn it on and off
    off = w.h("off1")
    s2 = c.post("/api/v1/me/totp", headers=off, json={"action": "enable"}).json()["secret"]
    assert c.post("/api/v1/me/totp", headers=off,
                  json={"action": "confirm", "code": _code(s2)}).status_code == 200
    assert _login(c, "off1", PASSWORD).json()["code"] == "totp_required"
    off_t = _login(c, "off1", PASSWORD, totp=_code(s2, 30)).json()["access_token"]
    r = c.post("/api/v1/me/totp", headers=auth(off_t), json={"action": "disable",
                                                            "code": _code(s2, -30)})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert _login(c, "off1", PASSWORD).status_code == 200


def test_totp_enforced_per_role_by_setting(settings: Any, database_url: str, mqtt_url: str,
                                           world: World) -> None:
    from probation.app import create_app

    s = settings.model_copy(update={"totp_required_roles": ["admin", "supervisor"]})
    with TestClient(create_app(s, database_url=database_url, mqtt_url=mqtt_url)) as c:
        assert _login(c, "sup2", PASSWORD).json()["scope"] == "totp_setup"
        assert _login(c, "off3", PASSWORD).json()["scope"] is None


@pytest.mark.parametrize("password,accepted", [
    ("short-pw", False), ("password1234", False), ("qwerty123456", False), ("Leavemealone", False),
    ("aaaaaaaaaaaaaaa", False), ("correct-horse-battery", True)])
def test_password_policy(app_client: TestClient, world: World, password: str, accepted: bool) -> None:
    r = app_client.post("/api/v1/users", headers=world.h("admin"), json={
        "username": f"u{uuid.uuid4().hex[:8]}", "password": password, "role": "officer"})
    assert (r.status_code == 201) is accepted, r.text


def test_throttling_backs_off_per_address_without_locking_others_out(
    settings: Any, database_url: str, mqtt_url: str, world: World
) -> None:
    from probation.app import create_app

    s = settings.model_copy(update={"trusted_proxies": ["testclient"], "login_free_attempts": 3})
    with TestClient(create_app(s, database_url=database_url, mqtt_url=mqtt_url)) as c:
        attacker = {"X-Forwarded-For": "203.0.113.9"}
        user = {"X-Forwarded-For": "198.51.100.7"}
        assert _login(c, "off2", PASSWORD, headers=user).status_code == 200  # known place
        codes = [_login(c, "off2", f"guess-{i}", headers=attacker).status_code for i in range(6)]
        assert codes[:3] == [401, 401, 401] and 429 in codes[3:], codes
        r = _login(c, "off2", PASSWORD, headers=attacker)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["code"] == "too_many_attempts"
        # the real user elsewhere, and other users, sign in normally
        assert _login(c, "off2", PASSWORD, headers=user).status_code == 200
        assert _login(c, "off1", PASSWORD, headers={"X-Forwarded-For": "192.0.2.1"}).status_code == 200
        # an untrusted peer's X-Forwarded-For is ignored (the peer is the address)
    s2 = settings.model_copy(update={"login_free_attempts": 2})
    with TestClient(create_app(s2, database_url=database_url, mqtt_url=mqtt_url)) as c:
        for i in range(3):
            _login(c, "off3", f"guess-{i}", headers={"X-Forwarded-For": f"10.0.0.{i}"})
        assert _login(c, "off3", PASSWORD,
                      headers={"X-Forwarded-For": "10.9.9.9"}).status_code == 429
