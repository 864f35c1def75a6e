"""Helpers of the pipeline tests: a case with an exclusion circle, a device gateway
publishing over the real broker, the running ingestion, and waits on what it stored."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from devices.mqtt import broker_address, mqtt_client
from probation.runtime.workers import Ingestion, build_ingestion
from probation.settings import Settings

CENTER = (76.9000, 43.2400)  # lon, lat: the exclusion zone (a victim's home), 150 m radius
M_PER_DEG_LAT = 111_320.0


def offset(east_m: float, north_m: float = 0.0) -> tuple[float, float]:
    """lat, lon that many metres from CENTER."""
    lat = CENTER[1] + north_m / M_PER_DEG_LAT
    lon = CENTER[0] + east_m / (M_PER_DEG_LAT * math.cos(math.radians(CENTER[1])))
    return lat, lon


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def setup_case(
    url: str, serial: str, buffer_m: float = 0.0
) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """Officer, subject, case, assigned device, and an exclusion circle; returns ids."""
    officer, subject, case, dev, zone = (uuid.uuid4() for _ in range(5))
    with psycopg.connect(url) as c:
        c.execute("INSERT INTO users (id, username, password_hash, role) VALUES (%s, %s, 'x', 'officer')",
                  (officer, f"o{officer.hex[:6]}"))
        c.execute("INSERT INTO subjects (id, iin, full_name, birth_date) VALUES (%s, %s, 'S', '1990-01-01')",
                  (subject, str(uuid.uuid4().int)[:12]))
        c.execute(
            "INSERT INTO cases (id, subject_id, officer_id, court_order_ref, starts_on, ends_on,"
            " risk_level) VALUES (%s, %s, %s, 'X-1', '2026-01-01', '2027-12-31', 'high')",
            (case, subject, officer),
        )
        c.execute("INSERT INTO devices (id, serial, kind) VALUES (%s, %s, 'bracelet')", (dev, serial))
        c.execute("INSERT INTO device_assignments (id, device_id, case_id) VALUES (%s, %s, %s)",
                  (uuid.uuid4(), dev, case))
        c.execute(
            "INSERT INTO zones (id, name, kind, circle, buffer_m)"
            " VALUES (%s, 'victim', 'exclusion', %s, %s)",
            (zone, Jsonb({"center": list(CENTER), "radius_m": 150}), buffer_m),
        )
        c.execute("INSERT INTO case_zones (case_id, zone_id) VALUES (%s, %s)", (case, zone))
    return case, dev, zone


class Gateway:
    """A device gateway publishing QoS 1 fixes and events for one serial."""

    def __init__(self, settings: Settings, serial: str) -> None:
        assert settings.mqtt_url
        self.prefix = settings.mqtt_prefix
        self.serial = serial
        self.client = mqtt_client(settings.mqtt_url, f"gw-{uuid.uuid4().hex[:6]}")
        self.client.connect(*broker_address(settings.mqtt_url))
        self.client.loop_start()
        self.seq = 0

    def fixes(self, points: list[tuple[datetime, float, float, float]]) -> float:
        items = []
        for ts, lat, lon, acc in points:
            self.seq += 1
            items.append({"seq": self.seq, "ts": iso(ts), "lat": lat, "lon": lon, "acc": acc})
        t0 = time.monotonic()
        self.client.publish(f"{self.prefix}/devices/{self.serial}/fixes",
                            orjson.dumps({"fixes": items}), qos=1).wait_for_publish(5)
        return t0

    def event(self, ts: datetime, type: str) -> None:
        self.seq += 1
        self.client.publish(f"{self.prefix}/devices/{self.serial}/events",
                            orjson.dumps({"events": [{"seq": self.seq, "ts": iso(ts), "type": type}]}),
                            qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def running_ingestion(settings: Settings, *, verifier_poll_s: float | None = None
                      ) -> Iterator[Ingestion]:
    """The ingestion workers (flushing every 5 ms) on the test database and broker."""
    assert settings.database_url and settings.mqtt_url
    ing = build_ingestion(settings, database_url=settings.database_url, mqtt_url=settings.mqtt_url,
                          flush_ms=5)
    if verifier_poll_s is not None:
        assert ing.verifier is not None
        ing.verifier.poll_s = verifier_poll_s
    ing.start()
    time.sleep(0.3)
    try:
        yield ing
    finally:
        ing.stop()


def alerts(url: str, case: uuid.UUID) -> list[dict[str, Any]]:
    with psycopg.connect(url) as c:
        c.row_factory = psycopg.rows.dict_row
        return c.execute("SELECT * FROM alerts WHERE case_id = %s ORDER BY created_at", (case,)).fetchall()


def wait_alerts(url: str, case: uuid.UUID, n: int, timeout: float = 15) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = alerts(url, case)
        if len(got) >= n:
            return got
        time.sleep(0.01)
    raise AssertionError(f"expected {n} alerts, got {alerts(url, case)}")


def wait_fixes(url: str, dev: uuid.UUID, n: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(url) as c:
            row = c.execute("SELECT count(*) FROM fixes WHERE device_id = %s", (dev,)).fetchone()
        if row and row[0] >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{n} fixes not stored")
