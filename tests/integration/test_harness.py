"""The harness itself: real PostgreSQL/TimescaleDB and a real broker."""

from __future__ import annotations

import os
import threading
import uuid

import psycopg

from devices.mqtt import broker_address, mqtt_client


def test_schema_is_migrated(database_url: str) -> None:
    with psycopg.connect(database_url) as c:
        tables = {r[0] for r in c.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )}
    for t in ("users", "subjects", "cases", "devices", "device_assignments", "zones",
              "case_zones", "fixes", "device_events", "checkins", "alerts", "audit_log"):
        assert t in tables, t


def test_telemetry_tables_are_hypertables_on_timescaledb(database_url: str, timescale: bool) -> None:
    if os.environ.get("PROBATION_TEST_REQUIRE_TIMESCALE") == "1":
        assert timescale
    with psycopg.connect(database_url) as c:
        if timescale:
            rows = c.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables"
            ).fetchall()
            assert {r[0] for r in rows} == {"fixes", "device_events", "checkins"}
            interval = c.execute(
                "SELECT time_interval FROM timescaledb_information.dimensions "
                "WHERE hypertable_name = 'fixes'"
            ).fetchone()
            assert interval is not None and interval[0].days == 1
        else:
            brin = c.execute(
                "SELECT indexname FROM pg_indexes WHERE indexname = 'fixes_ts_brin'"
            ).fetchall()
            assert brin


def test_dedup_key_on_telemetry(database_url: str) -> None:
    dev = uuid.uuid4()
    with psycopg.connect(database_url) as c:
        c.execute("INSERT INTO devices (id, serial, kind) VALUES (%s, 'D1', 'bracelet')", (dev,))
        for _ in range(2):
            c.execute(
                "INSERT INTO fixes (device_id, seq, ts, lat, lon, acc) "
                "VALUES (%s, 1, '2026-11-25T10:00:00Z', 43.2, 76.9, 5) ON CONFLICT DO NOTHING",
                (dev,),
            )
        assert c.execute("SELECT count(*) FROM fixes").fetchone() == (1,)


def test_each_test_gets_a_clean_database(database_url: str) -> None:
    with psycopg.connect(database_url) as c:
        assert c.execute("SELECT count(*) FROM devices").fetchone() == (0,)


def test_broker_delivers_a_published_message(mqtt_url: str, mqtt_prefix: str) -> None:
    if os.environ.get("PROBATION_TEST_REQUIRE_MOSQUITTO") == "1":
        assert mqtt_url
    got = threading.Event()
    received: list[bytes] = []
    host, port = broker_address(mqtt_url)
    topic = f"{mqtt_prefix}/devices/X1/status"

    sub = mqtt_client(mqtt_url, f"sub-{uuid.uuid4().hex[:6]}")
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()

    def on_message(client, userdata, msg):  # type: ignore[no-untyped-def]
        received.append(msg.payload)
        got.set()

    sub.on_message = on_message
    sub.connect(host, port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    assert subscribed.wait(5)
    pub = mqtt_client(mqtt_url, f"pub-{uuid.uuid4().hex[:6]}")
    pub.connect(host, port)
    pub.loop_start()
    pub.publish(topic, b'{"state": "online"}', qos=1).wait_for_publish(5)
    assert got.wait(5)
    assert received == [b'{"state": "online"}']
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
