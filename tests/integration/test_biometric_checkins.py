"""Biometric registration and check-ins verified by the backend, end to end: the API
(enrolment, device trust), check-ins with real face photographs published over the real
broker, the real ingest worker and the check-in verifier's process pool, the real database.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from devices.faces.images import decode, encode_jpeg
from devices.mqtt import broker_address, mqtt_client
from probation.runtime.workers import Ingestion
from probation.settings import Settings
from tests.integration._api import World
from tests.integration._pipeline import running_ingestion

pytest_plugins = ["tests.integration._api_fixtures"]

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"


def photo(name: str) -> bytes:
    return (FACES / f"{name}.jpg").read_bytes()


def mirrored(name: str) -> bytes:
    return encode_jpeg(np.ascontiguousarray(decode(photo(name))[0][:, ::-1]))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def enrol(client: TestClient, world: World, who: str, names: list[str],
          lang: str = "en") -> Any:
    return client.post(
        f"/api/v1/subjects/{world.subjects['off1']}/biometric-enrolment",
        headers=world.h(who, **{"Accept-Language": lang}),
        files=[("photos", (f"{n}.jpg", photo(n), "image/jpeg")) for n in names],
    )


def test_enrolment_quality_reasons_reenrolment_and_device_trust(
    app_client: TestClient, world: World, database_url: str,
) -> None:
    r = enrol(app_client, world, "off1", ["obama_portrait", "obama_standing", "obama_briefing"],
              lang="ru")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["templates"] == 2 and body["dim"] == 128 and not body["replaced"]
    refused = [p for p in body["photos"] if not p["accepted"]]
    assert [p["index"] for p in refused] == [1]
    assert refused[0]["reasons"][0]["code"] == "turned_away"
    assert refused[0]["reasons"][0]["message"] == "Лицо отвёрнуто: смотрите прямо в камеру."
    assert body["photos_kept"] is False

    # every photo refused: a 422 naming each, in the caller's language
    r = enrol(app_client, world, "sup1", ["obama_standing"], lang="kk")
    assert r.status_code == 422
    err = r.json()["errors"][0]
    assert err["code"] == "turned_away" and "камераға" in err["message"]

    # re-enrolment: not the officer, the case's supervisor (or an admin); audited
    assert enrol(app_client, world, "off1", ["obama_portrait"]).status_code == 403
    assert enrol(app_client, world, "sup2", ["obama_portrait"]).status_code in (403, 404)
    r = enrol(app_client, world, "sup1", ["obama_portrait", "obama_briefing"])
    assert r.status_code == 201 and r.json()["replaced"] is True
    with psycopg.connect(database_url) as c:
        actions = [a for (a,) in c.execute(
            "SELECT action FROM audit_log WHERE resource_id = %s AND action LIKE"
            " 'subject.biometric%%' ORDER BY id", (str(world.subjects["off1"]),))]
        assert actions == ["subject.biometric_enrol", "subject.biometric_reenrol"]
        assert c.execute("SELECT count(*) FROM biometric_photos").fetchone() == (0,)

    dev = world.devices["off1"]
    assert app_client.patch(f"/api/v1/devices/{dev}", headers=world.h("off1"),
                            json={"trusted_biometrics": True}).status_code == 403
    r = app_client.patch(f"/api/v1/devices/{dev}", headers=world.h("admin"),
                         json={"trusted_biometrics": True})
    assert r.status_code == 200 and r.json()["trusted_biometrics"] is True


class Phone:
    """The check-in app of one device, publishing QoS 1 over the real broker."""

    def __init__(self, settings: Settings, serial: str) -> None:
        assert settings.mqtt_url
        self.topic = f"{settings.mqtt_prefix}/devices/{serial}/checkins"
        self.client = mqtt_client(settings.mqtt_url, f"app-{uuid.uuid4().hex[:6]}")
        self.client.connect(*broker_address(settings.mqtt_url))
        self.client.loop_start()
        self.seq = 0

    def send(self, item: dict[str, Any]) -> int:
        self.seq += 1
        item = {"seq": self.seq, "ts": iso(datetime.now(UTC)), "method": "face", **item}
        self.client.publish(self.topic, orjson.dumps({"checkins": [item]}),
                            qos=1).wait_for_publish(5)
        return self.seq

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def ingestion(settings: Settings) -> Iterator[Ingestion]:
    with running_ingestion(settings, verifier_poll_s=0.1) as ing:
        yield ing


def wait_row(url: str, sql: str, args: tuple[Any, ...], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as c:
        while time.monotonic() < deadline:
            row = c.execute(sql, args).fetchone()
            if row is not None:
                return row
            time.sleep(0.1)
    raise AssertionError(f"no row for {sql} {args}")


def verdict(url: str, device: uuid.UUID, seq: int) -> tuple[bool, dict[str, Any]]:
    return wait_row(url, "SELECT passed, verdict FROM checkins WHERE device_id = %s AND seq = %s"
                         " AND verdict IS NOT NULL", (device, seq))  # type: ignore[no-any-return]


def failed_alert(url: str, case: uuid.UUID, seq: int) -> dict[str, Any]:
    row = wait_row(url, "SELECT evidence FROM alerts WHERE case_id = %s AND type = 'checkin_failed'"
                        " AND (evidence->>'seq')::int = %s", (case, seq), timeout=20)
    return row[0]  # type: ignore[no-any-return]


def request(url: str, case: uuid.UUID, device: uuid.UUID, challenge: str) -> uuid.UUID:
    rid = uuid.uuid4()
    now = datetime.now(UTC)
    with psycopg.connect(url) as c:
        c.execute(
            "INSERT INTO checkin_requests (id, case_id, device_id, source, due_at, deadline,"
            " command_id, status, challenge) VALUES (%s, %s, %s, 'officer', %s, %s, %s, 'sent', %s)",
            (rid, case, device, now - timedelta(minutes=1), now + timedelta(minutes=14), rid,
             challenge),
        )
    return rid


def test_checkins_with_frames_verified_off_the_ingest_path(
    app_client: TestClient, world: World, settings: Settings, ingestion: Ingestion,
) -> None:
    url = settings.database_url
    assert url
    case, dev = world.cases["off1"], world.devices["off1"]
    assert enrol(app_client, world, "off1", ["obama_portrait", "obama_briefing"]).status_code == 201
    app = Phone(settings, "BR-off1")
    honest = [photo("obama_portrait"), photo("obama_briefing"), photo("obama_portrait")]

    # an honest check-in answering a request that asked to turn left
    rid = request(url, case, dev, "turn_left")
    seq = app.send({"request_id": str(rid), "challenge": "turn_left",
                    "frames": [b64(f) for f in honest]})
    passed, v = verdict(url, dev, seq)
    assert passed and v["reasons"] == [] and v["similarity"] >= settings.face_match_min
    wait_row(url, "SELECT 1 FROM checkin_requests WHERE id = %s AND status = 'passed'", (rid,))

    # someone else in front of the camera
    seq = app.send({"challenge": "smile", "frames": [b64(photo(n)) for n in (
        "biden_portrait", "biden_portrait_2021", "biden_portrait")]})
    passed, v = verdict(url, dev, seq)
    assert not passed and "no_match" in v["reasons"]
    ev = failed_alert(url, case, seq)
    assert ev["reason"] == "no_match" and ev["verdict"]["similarity"] < 0.9

    # the honest frames again, re-encoded: a replay
    rid = request(url, case, dev, "turn_left")
    resent = [encode_jpeg(decode(f)[0], max_side=320) for f in honest]
    seq = app.send({"request_id": str(rid), "challenge": "turn_left",
                    "frames": [b64(f) for f in resent]})
    passed, v = verdict(url, dev, seq)
    assert not passed and v["reasons"] == ["replayed_frames"]
    assert failed_alert(url, case, seq)["reason"] == "replayed_frames"

    # the app echoes another gesture than the request asked: the request's is verified
    # (mirrored photos: new frames; the podium photo's right turn becomes a left turn)
    rid = request(url, case, dev, "turn_right")
    frames = [mirrored("obama_portrait"), mirrored("obama_podium"), mirrored("obama_portrait")]
    seq = app.send({"request_id": str(rid), "challenge": "smile",
                    "frames": [b64(f) for f in frames]})
    passed, v = verdict(url, dev, seq)
    assert not passed and v["challenge"] == "turn_right"
    assert v["reasons"] == ["challenge_not_performed"]

    # an app-computed embedding from a device not trusted for biometrics
    seq = app.send({"embedding": [0.01] * 128, "liveness": 0.99})
    ev = failed_alert(url, case, seq)
    assert ev["reason"] == "untrusted_device_biometrics"

    # a frame that is not an image: dead-lettered with its reason
    seq = app.send({"challenge": "blink", "frames": [b64(honest[0]), b64(b"GIF89a not a jpeg"),
                                                     b64(honest[1])]})
    row = wait_row(url, "SELECT reason, detail FROM dead_letters WHERE topic = %s"
                        " AND reason = 'bad_image'", (app.topic,), timeout=20)
    assert "frames[1]" in row[1]
    app.close()
    with psycopg.connect(url) as c:
        assert c.execute("SELECT count(*) FROM checkin_frames").fetchone() == (0,)
