"""Device broker credentials through the API, against the embedded broker: issued at
registration and shown once, rotatable by an admin only, stored as a hash only (not in
the devices table, the audit log, or the idempotency store), and in force at the broker
as soon as the request returns."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from devices.broker import EmbeddedMosquitto, device_accounts
from devices.mqtt_auth import verify_password
from tests.integration._api import World, auth
from tests.security import brokers

pytest_plugins = ["tests.integration._api_fixtures"]


@pytest.fixture
def embedded(database_url: str) -> Iterator[brokers.Broker]:
    with brokers.private_dir() as tmp:
        b = brokers.Broker("embedded", brokers.free_port(), 0, Path("/nonexistent"),
                           "backend-" + uuid.uuid4().hex, {})
        mq = EmbeddedMosquitto(data_dir=tmp / "mq", backend_password=b.backend_password,
                               port=b.port, accounts=lambda: device_accounts(database_url))
        mq.start()
        b.sync = mq
        try:
            yield b
        finally:
            mq.stop()


@pytest.fixture
def client(settings: Any, database_url: str, embedded: brokers.Broker) -> Iterator[TestClient]:
    from probation.app import create_app

    app = create_app(settings, database_url=database_url, mqtt_url=settings.mqtt_url,
                     broker_accounts=embedded.sync)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _everything_stored(url: str) -> str:
    with psycopg.connect(url) as c:
        parts = [str(c.execute(f"SELECT coalesce(json_agg(t)::text, '') FROM {table} t"
                               ).fetchone()) for table in ("devices", "audit_log",
                                                           "idempotency_keys")]
    return "\n".join(parts)


def test_issue_show_once_rotate(client: TestClient, world: World, embedded: brokers.Broker,
                                database_url: str) -> None:
    admin = auth(world.tokens["admin"], **{"Idempotency-Key": "reg-1"})
    r = client.post("/api/v1/devices", json={"serial": "SEC-1", "kind": "bracelet"},
                    headers=admin)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    cred = r.json()["credentials"]
    assert cred["mqtt_username"] == "SEC-1" and len(cred["mqtt_password"]) >= 40
    first = cred["mqtt_password"]
    assert brokers.accepted(embedded, "SEC-1", first)  # in force when the request returned
    assert not brokers.accepted(embedded, "SEC-1", first[:-1])

    # shown once: not by a read, not by an idempotent retry, not kept in clear anywhere
    device_id = r.json()["id"]
    got = client.get(f"/api/v1/devices/{device_id}", headers=auth(world.tokens["admin"]))
    assert first not in got.text and "credentials" not in got.json()
    retry = client.post("/api/v1/devices", json={"serial": "SEC-1", "kind": "bracelet"},
                        headers=admin)
    assert first not in retry.text and retry.status_code == 409
    stored = _everything_stored(database_url)
    assert first not in stored
    with psycopg.connect(database_url) as c:
        row = c.execute("SELECT mqtt_password_hash FROM devices WHERE serial = 'SEC-1'"
                        ).fetchone()
    assert row is not None and verify_password(first, row[0])

    # rotation: officers and supervisors may not; an admin may, the old password dies
    for who in ("off1", "sup1"):
        denied = client.post(f"/api/v1/devices/{device_id}/mqtt-credentials",
                             headers=auth(world.tokens[who]))
        assert denied.status_code == 403, denied.text
    rot = client.post(f"/api/v1/devices/{device_id}/mqtt-credentials",
                      headers=auth(world.tokens["admin"]))
    assert rot.status_code == 200 and rot.headers["cache-control"] == "no-store"
    second = rot.json()["mqtt_password"]
    assert second != first
    assert brokers.accepted(embedded, "SEC-1", second)
    assert not brokers.accepted(embedded, "SEC-1", first)
    assert second not in _everything_stored(database_url)
    missing = client.post(f"/api/v1/devices/{uuid.uuid4()}/mqtt-credentials",
                          headers=auth(world.tokens["admin"]))
    assert missing.status_code == 404
    with psycopg.connect(database_url) as c:
        actions = [r[0] for r in c.execute(
            "SELECT action FROM audit_log WHERE resource_id = %s ORDER BY id", (device_id,))]
    # reads are audited too (device.read); the changes are the registration and the rotation
    assert [a for a in actions if a != "device.read"] == ["device.create",
                                                         "device.rotate_credentials"]
