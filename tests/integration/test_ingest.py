"""Ingestion through the real broker into the real database: storage, inventory, bad input.

Each test runs an `IngestWorker` in-process against the session's mosquitto
(a private topic prefix) and a fresh migrated database.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from prometheus_client import REGISTRY

from devices.downlink import CommandPublisher
from devices.ingest import IngestWorker
from devices.mqtt import broker_address, mqtt_client
from devices.pipeline import CheckinVerdict, DeviceBatch
from devices.protocol import Checkin, Reason
from simulator.publisher import Publisher

NOW = datetime.now(UTC).replace(microsecond=0)


# --------------------------------------------------------------------------- helpers


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def fix(seq: int, *, ts: datetime | None = None, **kw: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "seq": seq, "ts": iso(ts or NOW - timedelta(seconds=600 - seq % 600)),
        "lat": 43.238949, "lon": 76.889709, "acc": 8.5,
    }
    item.update(kw)
    return item


def fixes_payload(*items: dict[str, Any]) -> bytes:
    return orjson.dumps({"fixes": list(items)})


def wait_for(cond: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def scalar(url: str, sql: str, *args: Any) -> Any:
    with psycopg.connect(url) as c:
        row = c.execute(sql, args).fetchone()
        return None if row is None else row[0]


def add_device(url: str, serial: str, kind: str = "bracelet") -> uuid.UUID:
    dev = uuid.uuid4()
    with psycopg.connect(url) as c:
        c.execute("INSERT INTO devices (id, serial, kind) VALUES (%s, %s, %s)", (dev, serial, kind))
    return dev


def add_case(url: str, device_id: uuid.UUID, *, template_dim: int | None = None) -> uuid.UUID:
    """An officer, a subject, an active case and the device assigned to it."""
    officer, subject, case = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(url) as c:
        c.execute(
            "INSERT INTO users (id, username, password_hash, role) VALUES (%s, %s, 'x', 'officer')",
            (officer, f"o-{officer.hex[:8]}"),
        )
        c.execute(
            "INSERT INTO subjects (id, iin, full_name, birth_date) VALUES (%s, %s, 'S', '1990-01-01')",
            (subject, str(uuid.uuid4().int)[:12]),
        )
        c.execute(
            "INSERT INTO cases (id, subject_id, officer_id, court_order_ref, starts_on, ends_on, "
            "risk_level) VALUES (%s, %s, %s, 'ref', '2026-01-01', '2027-01-01', 'low')",
            (case, subject, officer),
        )
        c.execute(
            "INSERT INTO device_assignments (id, device_id, case_id) VALUES (%s, %s, %s)",
            (uuid.uuid4(), device_id, case),
        )
        if template_dim is not None:
            c.execute(
                "INSERT INTO biometric_templates (subject_id, method, dim, ciphertext) "
                "VALUES (%s, 'face', %s, '\\x00')",
                (subject, template_dim),
            )
    return case


def dead_letters(url: str) -> list[tuple[str, str, int | None, bytes, str]]:
    with psycopg.connect(url) as c:
        return c.execute(
            "SELECT reason, topic, item_index, payload, detail FROM dead_letters ORDER BY id"
        ).fetchall()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def start_worker(
    database_url: str, mqtt_url: str, mqtt_prefix: str
) -> Iterator[Callable[..., IngestWorker]]:
    workers: list[IngestWorker] = []

    def start(**kw: Any) -> IngestWorker:
        kw.setdefault("client_id", f"ingest-{uuid.uuid4().hex[:8]}")
        kw.setdefault("flush_ms", 20)
        w = IngestWorker(database_url=database_url, mqtt_url=mqtt_url, prefix=mqtt_prefix, **kw)
        w.start()
        workers.append(w)
        assert w.wait_ready(20), "worker not ready"
        return w

    yield start
    for w in workers:
        w.stop()


@pytest.fixture
def pub(mqtt_url: str) -> Iterator[Publisher]:
    with Publisher(mqtt_url) as p:
        yield p


def topic(prefix: str, serial: str, stream: str) -> str:
    return f"{prefix}/devices/{serial}/{stream}"


# --------------------------------------------------------------------------- storage


def test_fixes_are_stored_once_and_update_the_inventory(
    database_url: str, mqtt_prefix: str, start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    dev = add_device(database_url, "BR-1")
    start_worker()
    t = topic(mqtt_prefix, "BR-1", "fixes")
    newest = NOW - timedelta(seconds=10)
    pub.publish(t, fixes_payload(
        fix(3, ts=newest, bat=55, acc=250.0),  # newest, but not a good fix
        fix(1, ts=NOW - timedelta(seconds=30), bat=70, acc=20.0),
        fix(2, ts=NOW - timedelta(seconds=20), spd=1.5, hdg=270, src="wifi"),
    ))
    pub.flush()
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM fixes") == 3, what="3 fixes")
    with psycopg.connect(database_url) as c:
        rows = c.execute(
            "SELECT seq, ts, lat, lon, acc, src, spd, hdg, bat FROM fixes ORDER BY seq"
        ).fetchall()
        inv = c.execute(
            "SELECT online, battery, last_seen, last_fix_at, last_good_fix_at FROM devices "
            "WHERE id = %s", (dev,),
        ).fetchone()
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[1][5:8] == ("wifi", 1.5, 270.0)
    assert rows[0][5] == "gps" and rows[0][6] is None
    assert inv is not None
    online, battery, last_seen, last_fix_at, last_good_fix_at = inv
    assert online is True
    assert battery == 55  # from the newest fix
    assert last_fix_at == newest
    assert last_good_fix_at == NOW - timedelta(seconds=20)  # acc <= 100 m
    assert last_seen is not None and abs((last_seen - datetime.now(UTC)).total_seconds()) < 30

    # A late upload of older fixes moves no time backwards and keeps the newer battery.
    pub.publish(t, fixes_payload(fix(0, ts=NOW - timedelta(hours=2), bat=99)))
    pub.flush()
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM fixes") == 4, what="late fix")
    assert scalar(database_url, "SELECT battery FROM devices WHERE id = %s", dev) == 55
    assert scalar(database_url, "SELECT last_fix_at FROM devices WHERE id = %s", dev) == newest


def test_duplicates_10000_fixes_published_twice_interleaved_are_stored_once(
    database_url: str, mqtt_prefix: str, start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    serials = [f"DUP-{i}" for i in range(10)]
    for s in serials:
        add_device(database_url, s)
    start_worker()
    before = metric("probation_ingest_duplicates_total", stream="fixes")
    base = NOW - timedelta(hours=1)
    msgs: list[tuple[str, bytes]] = []
    for s in serials:  # 1,000 fixes per device, 50 per message
        for start in range(0, 1000, 50):
            items = [fix(q, ts=base + timedelta(seconds=q), lat=40 + q / 1e4) for q in range(start, start + 50)]
            msgs.append((topic(mqtt_prefix, s, "fixes"), fixes_payload(*items)))
    # Interleave: every message again, a little later, mixed with the first pass.
    order: list[tuple[str, bytes]] = []
    for i, m in enumerate(msgs):
        order.append(m)
        if i >= 7:
            order.append(msgs[i - 7])
    order.extend(msgs[-7:])
    assert len(order) == 2 * len(msgs) == 400
    pub.publish_many(order)
    pub.flush()
    wait_for(
        lambda: metric("probation_ingest_duplicates_total", stream="fixes") - before >= 10_000,
        timeout=60, what="10,000 duplicates counted",
    )
    assert scalar(database_url, "SELECT count(*) FROM fixes") == 10_000
    assert scalar(database_url, "SELECT count(DISTINCT (device_id, seq)) FROM fixes") == 10_000
    assert metric("probation_ingest_duplicates_total", stream="fixes") - before == 10_000
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0


def test_same_seq_with_another_ts_is_a_duplicate_in_every_stream(
    database_url: str, mqtt_prefix: str, start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    """The contract's dedup key is (device, stream, seq): a re-sent seq with a changed ts
    is acknowledged, counted as a duplicate and not stored, also after a worker restart."""
    add_case(database_url, add_device(database_url, "SEQ-1"), template_dim=128)
    worker = start_worker()
    before = {s: metric("probation_ingest_duplicates_total", stream=s)
              for s in ("fixes", "events", "checkins")}
    t1, t2 = NOW - timedelta(minutes=5), NOW - timedelta(minutes=4)
    emb = [0.5] * 128

    def items(ts: datetime) -> list[tuple[str, bytes]]:
        return [
            (topic(mqtt_prefix, "SEQ-1", "fixes"), fixes_payload(fix(7, ts=ts))),
            (topic(mqtt_prefix, "SEQ-1", "events"),
             orjson.dumps({"events": [{"seq": 7, "ts": iso(ts), "type": "strap_open"}]})),
            (topic(mqtt_prefix, "SEQ-1", "checkins"), orjson.dumps({"checkins": [
                {"seq": 7, "ts": iso(ts), "method": "face", "embedding": emb, "liveness": 0.9},
            ]})),
        ]

    def counts() -> tuple[int, ...]:
        return tuple(scalar(database_url, f"SELECT count(*) FROM {t}")
                     for t in ("fixes", "device_events", "checkins"))

    def dups() -> tuple[float, ...]:
        return tuple(metric("probation_ingest_duplicates_total", stream=s) - before[s]
                     for s in ("fixes", "events", "checkins"))

    pub.publish_many(items(t1))
    pub.flush()
    wait_for(lambda: counts() == (1, 1, 1), what="one item per stream")
    pub.publish_many(items(t2))  # the same seq, another ts, in a later batch
    pub.flush()
    wait_for(lambda: dups() == (1, 1, 1), what="three duplicates counted")
    worker.stop()  # a late duplicate after a restart (nothing of the past in memory)
    start_worker()
    pub.publish_many(items(t2 + timedelta(seconds=1)))
    pub.flush()
    wait_for(lambda: dups() == (2, 2, 2), what="duplicates counted after a restart")
    assert counts() == (1, 1, 1)
    assert scalar(database_url, "SELECT ts FROM fixes") == t1
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0


# --------------------------------------------------------------------------- bad input


def _reason_cases(prefix: str) -> dict[str, tuple[str, bytes]]:
    """reason → (topic, payload) that produces exactly that reason from device BAD-1."""
    t = topic(prefix, "BAD-1", "fixes")
    emb = [0.01] * 128
    checkin = {"seq": 1, "ts": iso(NOW), "method": "face", "embedding": emb, "liveness": 0.9}
    return {
        "not_json": (t, b'{"fixes": [{"seq": 1,'),
        "not_object": (t, b"[1, 2, 3]"),
        "wrong_stream_key": (t, orjson.dumps({"fix": [fix(1)]})),
        "too_large": (t, b'{"fixes": [' + b" " * (300 * 1024) + b"]}"),
        "too_many_items": (t, orjson.dumps({"fixes": [fix(i) for i in range(501)]})),
        "missing_field": (t, orjson.dumps({"fixes": [{k: v for k, v in fix(1).items() if k != "lat"}]})),
        "bad_type": (t, orjson.dumps({"fixes": [fix(1, lat="43.2")]})),
        "out_of_range": (t, orjson.dumps({"fixes": [fix(1, lat=91.0)]})),
        "not_finite": (t, b'{"fixes": [{"seq": 1, "ts": 0, "lat": NaN, "lon": 0, "acc": 1}]}'),
        "future_timestamp": (t, fixes_payload(fix(1, ts=datetime.now(UTC) + timedelta(minutes=10)))),
        "bad_timestamp": (t, fixes_payload(fix(1, ts=None) | {"ts": "yesterday"})),
        "unknown_event_type": (
            topic(prefix, "BAD-1", "events"),
            orjson.dumps({"events": [{"seq": 1, "ts": iso(NOW), "type": "exploded"}]}),
        ),
        "embedding_length": (
            topic(prefix, "BAD-1", "checkins"),
            orjson.dumps({"checkins": [checkin | {"embedding": [0.01] * 100}]}),
        ),
        "bad_image": (  # a check-in frame that is not a JPEG/PNG (base64 of "GIF89a…")
            topic(prefix, "BAD-1", "checkins"),
            orjson.dumps({"checkins": [{"seq": 1, "ts": iso(NOW), "method": "face",
                                        "challenge": "blink",
                                        "frames": ["R0lGODlhAQABAAAAACw="] * 3}]}),
        ),
        "unknown_device": (topic(prefix, "NOBODY-1", "fixes"), fixes_payload(fix(1))),
        "bad_topic": (topic(prefix, "bad.serial", "fixes"), fixes_payload(fix(1))),
    }


def test_every_reason_code_of_the_contract_is_covered() -> None:
    assert set(_reason_cases("p")) == {r.value for r in Reason}


@pytest.mark.parametrize("reason", [r.value for r in Reason])
def test_reason_code_lands_in_dead_letters_and_ingestion_goes_on(
    reason: str, database_url: str, mqtt_prefix: str,
    start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    add_device(database_url, "BAD-1")
    start_worker()
    bad_topic, bad_payload = _reason_cases(mqtt_prefix)[reason]
    before = metric("probation_ingest_dead_letters_total", reason=reason)
    pub.publish(bad_topic, bad_payload)
    pub.publish(topic(mqtt_prefix, "BAD-1", "fixes"), fixes_payload(fix(42)))
    pub.flush()
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM fixes WHERE seq = 42") == 1,
             what="the next valid message")
    wait_for(lambda: bool(dead_letters(database_url)), what="the dead letter")
    rows = dead_letters(database_url)
    assert [r[0] for r in rows] == [reason], rows
    _, got_topic, _index, payload, detail = rows[0]
    assert got_topic == bad_topic and detail
    assert payload and len(payload) <= 256 * 1024
    assert metric("probation_ingest_dead_letters_total", reason=reason) - before == 1
    assert scalar(database_url, "SELECT count(*) FROM fixes") == 1


def test_valid_items_of_a_partly_bad_message_are_kept(
    database_url: str, mqtt_prefix: str, start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    add_device(database_url, "MIX-1")
    start_worker()
    payload = (
        b'{"fixes": [' + orjson.dumps(fix(1)) + b', {"seq": 2, "ts": 0, "lat": NaN, "lon": 0, '
        b'"acc": 1}, ' + orjson.dumps(fix(3, acc=0)) + b", " + orjson.dumps(fix(4)) + b"]}"
    )
    pub.publish(topic(mqtt_prefix, "MIX-1", "fixes"), payload)
    pub.flush()
    wait_for(lambda: len(dead_letters(database_url)) == 2, what="2 dead letters")
    assert scalar(database_url, "SELECT array_agg(seq ORDER BY seq) FROM fixes") == [1, 4]
    rows = dead_letters(database_url)
    assert sorted((r[0], r[2]) for r in rows) == [("not_finite", 1), ("out_of_range", 2)]
    assert orjson.loads(next(r[3] for r in rows if r[2] == 2))["seq"] == 3


def test_hostile_payloads_each_get_their_reason_and_cost_nothing_else(
    database_url: str, mqtt_url: str, mqtt_prefix: str,
    start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    add_device(database_url, "HOST-1")
    worker = start_worker()
    t = topic(mqtt_prefix, "HOST-1", "fixes")
    cases: list[tuple[str, str, bytes]] = [
        # The test broker caps packets at 1 MiB, so the largest payload it passes on.
        ("too_large", t, b'{"fixes": "' + b"x" * (1024 * 1024 - 512) + b'"}'),
        ("too_many_items", t, b'{"fixes": [' + b",".join([b"0"] * 100_000) + b"]}"),
        ("not_json", t, b'{"fixes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("not_finite", t, b'{"fixes": [{"seq": 1, "ts": 0, "lat": 1, "lon": Infinity, "acc": 1}]}'),
        ("not_finite", t, b'{"fixes": [{"seq": 1, "ts": 0, "lat": 1e999, "lon": 1, "acc": 1}]}'),
        ("out_of_range", t, fixes_payload(fix(2**63))),
        ("bad_topic", topic(mqtt_prefix, "a/b", "fixes"), fixes_payload(fix(1))),
    ]
    for _reason, tp, payload in cases:
        pub.publish(tp, payload)
    # A serial with '+' is not even a valid MQTT topic name: paho refuses it, and a raw
    # PUBLISH with it gets that client disconnected by the broker, not the worker.
    with pytest.raises(ValueError):
        pub.client.publish(topic(mqtt_prefix, "a+b", "fixes"), fixes_payload(fix(1)), qos=1)
    _raw_publish_wildcard(mqtt_url, topic(mqtt_prefix, "a+b", "fixes"))
    pub.publish(t, fixes_payload(fix(7)))
    pub.flush()
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM fixes WHERE seq = 7") == 1,
             what="the valid message after the hostile ones")
    wait_for(lambda: len(dead_letters(database_url)) == len(cases), what="dead letters")
    rows = dead_letters(database_url)
    assert sorted(r[0] for r in rows) == sorted(c[0] for c in cases)
    assert all(len(r[3]) <= 256 * 1024 for r in rows)
    assert scalar(database_url, "SELECT count(*) FROM fixes") == 1
    assert worker.queue_depth == 0


def _raw_publish_wildcard(mqtt_url: str, bad_topic: str) -> None:
    """Publish to a topic name with a wildcard, bypassing paho's check."""
    import socket
    import struct

    host, port = broker_address(mqtt_url)
    with socket.create_connection((host, port), timeout=5) as s:
        cid = b"raw-" + uuid.uuid4().hex[:8].encode()
        var = b"\x00\x04MQTT\x04\x02\x00\x1e" + struct.pack("!H", len(cid)) + cid
        s.sendall(b"\x10" + bytes([len(var)]) + var)
        s.recv(4)  # CONNACK
        tb = bad_topic.encode()
        body = struct.pack("!H", len(tb)) + tb + b"\x00\x01" + b"{}"
        s.sendall(b"\x32" + bytes([len(body)]) + body)
        s.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(16) == b""  # the broker closes the connection


# --------------------------------------------------------------------------- streams


def test_events_are_stored_with_or_without_an_active_case(
    database_url: str, mqtt_prefix: str, start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    assigned = add_device(database_url, "EV-1")
    add_case(database_url, assigned)
    add_device(database_url, "EV-2")  # registered, not assigned
    seen: list[DeviceBatch] = []

    class Stage:
        name = "probe"

        def on_batch(self, conn: psycopg.Connection[Any], batches: Sequence[DeviceBatch]) -> None:
            seen.extend(batches)

    start_worker(after_store=[Stage()])
    for serial in ("EV-1", "EV-2"):
        pub.publish(topic(mqtt_prefix, serial, "events"), orjson.dumps({"events": [
            {"seq": 2, "ts": iso(NOW), "type": "strap_closed"},
            {"seq": 1, "ts": int((NOW - timedelta(seconds=5)).timestamp() * 1000),
             "type": "strap_open", "detail": {"circuit": "A", "ohm": [1, 2]}},
        ]}))
    pub.flush()
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM device_events") == 4, what="events")
    detail = scalar(database_url, "SELECT detail FROM device_events WHERE seq = 1 LIMIT 1")
    assert detail == {"circuit": "A", "ohm": [1, 2]}
    by_serial = {b.serial: b for b in seen}
    assert by_serial["EV-1"].case_id is not None and by_serial["EV-2"].case_id is None
    assert [e.type for e in by_serial["EV-2"].events] == ["strap_open", "strap_closed"]


def test_checkins_use_the_checkin_judge_and_the_enrolled_template_length(
    database_url: str, mqtt_prefix: str, start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    dev = add_device(database_url, "PH-1", kind="phone")
    case = add_case(database_url, dev, template_dim=256)
    add_device(database_url, "PH-2", kind="phone")  # no case: default verdict

    class Judge:
        def evaluate(
            self, conn: psycopg.Connection[Any], *, device_id: uuid.UUID,
            case_id: uuid.UUID | None, checkins: Sequence[Checkin],
        ) -> list[CheckinVerdict]:
            if case_id is None:
                return [CheckinVerdict(False, None) for _ in checkins]
            return [CheckinVerdict(c.liveness > 0.8, 0.75) for c in checkins]

    start_worker(checkin_judge=Judge())
    item = {"seq": 1, "ts": iso(NOW), "method": "face", "embedding": [0.5] * 256,
            "liveness": 0.97, "request_id": "req-1", "lat": 43.2, "lon": 76.9, "acc": 12}
    pub.publish(topic(mqtt_prefix, "PH-1", "checkins"), orjson.dumps({"checkins": [
        item, item | {"seq": 2, "embedding": [0.5] * 128},  # not the enrolled length
    ]}))
    pub.publish(topic(mqtt_prefix, "PH-2", "checkins"),
                orjson.dumps({"checkins": [item | {"embedding": [0.5] * 128}]}))
    pub.flush()
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM checkins") == 2, what="checkins")
    wait_for(lambda: len(dead_letters(database_url)) == 1, what="embedding_length")
    with psycopg.connect(database_url) as c:
        rows = c.execute(
            "SELECT d.serial, k.case_id, k.passed, k.similarity, k.liveness, k.request_id, k.lat "
            "FROM checkins k JOIN devices d ON d.id = k.device_id ORDER BY d.serial"
        ).fetchall()
    assert rows[0] == ("PH-1", case, True, 0.75, pytest.approx(0.97), "req-1", 43.2)
    assert rows[1][:4] == ("PH-2", None, False, None)
    assert dead_letters(database_url)[0][:3][0::2] == ("embedding_length", 1)


def test_default_checkin_judge_stores_not_passed_without_similarity(
    database_url: str, mqtt_prefix: str, start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    dev = add_device(database_url, "PH-3", kind="phone")
    case = add_case(database_url, dev)
    start_worker()
    pub.publish(topic(mqtt_prefix, "PH-3", "checkins"), orjson.dumps({"checkins": [
        {"seq": 1, "ts": iso(NOW), "method": "face", "embedding": [0.1] * 128, "liveness": 1}]}))
    pub.flush()
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM checkins") == 1, what="checkin")
    with psycopg.connect(database_url) as c:
        assert c.execute("SELECT case_id, passed, similarity FROM checkins").fetchone() == (
            case, False, None)


def test_status_updates_online_firmware_and_battery(
    database_url: str, mqtt_prefix: str, start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    dev = add_device(database_url, "ST-1")
    start_worker()
    t = topic(mqtt_prefix, "ST-1", "status")

    def state() -> tuple[Any, ...]:
        with psycopg.connect(database_url) as c:
            row = c.execute("SELECT online, firmware, battery, last_seen FROM devices WHERE id = %s",
                            (dev,)).fetchone()
            assert row is not None
            return tuple(row)

    pub.publish(t, orjson.dumps({"state": "online", "ts": iso(NOW), "fw": "2.4.1", "bat": 80}),
                retain=True)
    pub.flush()
    wait_for(lambda: state()[:3] == (True, "2.4.1", 80), what="online status")
    seen_online = state()[3]
    assert seen_online is not None
    pub.publish(t, orjson.dumps({"state": "offline"}), retain=True)  # the last will
    pub.flush()
    wait_for(lambda: state()[0] is False, what="offline status")
    assert state()[1:] == ("2.4.1", 80, seen_online)  # an offline will is not "seen"
    pub.publish(t, b"", retain=True)  # clear the retained message (empty payload: not_json)


def test_commands_are_published_and_acks_stored(
    database_url: str, mqtt_url: str, mqtt_prefix: str,
    start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    dev = add_device(database_url, "CMD-1")
    other = add_device(database_url, "CMD-2")
    start_worker()
    got: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    device = mqtt_client(mqtt_url, f"dev-{uuid.uuid4().hex[:6]}")
    device.on_message = lambda c, u, m: got.append(m)
    device.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
    host, port = broker_address(mqtt_url)
    device.connect(host, port)
    device.subscribe(f"{mqtt_prefix}/devices/CMD-1/commands", qos=1)
    device.loop_start()
    try:
        assert subscribed.wait(10)
        with CommandPublisher(database_url=database_url, mqtt_url=mqtt_url,
                              prefix=mqtt_prefix) as downlink:
            sent = downlink.send(device_id=dev, type="set_interval",
                                 params={"fix_interval_s": 15})
            assert sent.sent_at is not None and sent.serial == "CMD-1"
            with pytest.raises(ValueError):
                downlink.send(device_id=dev, type="set_interval", params={"fix_interval_s": 1})
            with pytest.raises(LookupError):
                downlink.send(device_id=uuid.uuid4(), type="notify", params={"text": "hi"})
            other_cmd = downlink.send(device_id=other, type="notify", params={"text": "hi"})
        wait_for(lambda: len(got) == 1, what="the command at the device")
        body = orjson.loads(got[0].payload)
        assert body["id"] == str(sent.id) and body["type"] == "set_interval"
        assert body["params"] == {"fix_interval_s": 15}
        assert got[0].qos == 1
    finally:
        device.loop_stop()
        device.disconnect()

    acks = topic(mqtt_prefix, "CMD-1", "acks")
    pub.publish(acks, orjson.dumps({"id": str(sent.id), "ts": iso(NOW), "result": "ok"}))
    pub.publish(acks, orjson.dumps({"id": str(sent.id), "result": "error", "detail": "late"}))
    pub.publish(acks, orjson.dumps({"id": str(other_cmd.id), "result": "ok"}))  # not its command
    pub.publish(acks, orjson.dumps({"id": "nope", "result": "ok"}))
    pub.flush()
    wait_for(lambda: len(dead_letters(database_url)) == 2, what="2 bad acks")
    with psycopg.connect(database_url) as c:
        row = c.execute("SELECT acked_at, result, detail, sent_at FROM commands WHERE id = %s",
                        (sent.id,)).fetchone()
        assert row is not None
        assert row[:3] == (NOW, "ok", None) and row[3] is not None
        assert c.execute("SELECT acked_at FROM commands WHERE id = %s",
                         (other_cmd.id,)).fetchone() == (None,)
    assert {r[0] for r in dead_letters(database_url)} == {"out_of_range"}


# --------------------------------------------------------------------------- hooks


def test_after_store_stages_get_new_items_once_sorted_per_device_in_the_transaction(
    database_url: str, mqtt_prefix: str, start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    add_device(database_url, "GF-1")
    calls: list[list[DeviceBatch]] = []
    in_tx: list[bool] = []

    class Stage:
        name = "probe"

        def on_batch(self, conn: psycopg.Connection[Any], batches: Sequence[DeviceBatch]) -> None:
            in_tx.append(conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS)
            calls.append(list(batches))

    start_worker(after_store=[Stage()], flush_ms=200)
    t = topic(mqtt_prefix, "GF-1", "fixes")
    first = fixes_payload(fix(3, ts=NOW - timedelta(seconds=1)), fix(1, ts=NOW - timedelta(seconds=3)))
    pub.publish(t, first)
    pub.publish(t, fixes_payload(fix(2, ts=NOW - timedelta(seconds=2))))
    pub.flush()
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM fixes") == 3, what="3 fixes")
    got = [f.seq for batches in calls for b in batches for f in b.fixes]
    assert sorted(got) == [1, 2, 3]
    for batches in calls:
        for b in batches:
            assert [f.ts for f in b.fixes] == sorted(f.ts for f in b.fixes)
    n_calls = len(calls)
    pub.publish(t, first)  # a redelivery: stored nothing new, so nothing to evaluate
    pub.publish(t, fixes_payload(fix(4)))
    pub.flush()
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM fixes") == 4, what="fix 4")
    later = [f.seq for batches in calls[n_calls:] for b in batches for f in b.fixes]
    assert later == [4]
    assert all(in_tx)


def test_a_failing_after_store_stage_is_counted_and_never_stops_ingestion_or_the_next_stage(
    database_url: str, mqtt_prefix: str, start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    add_device(database_url, "GF-BAD")
    add_device(database_url, "GF-OK")
    evaluated: list[str] = []
    after: list[str] = []

    class Failing:
        name = "failing_probe"

        def on_batch(self, conn: psycopg.Connection[Any], batches: Sequence[DeviceBatch]) -> None:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS hook_probe (x int)")
            for b in batches:
                if b.serial == "GF-BAD":
                    conn.execute("SELECT 1/0")  # aborts the (sub)transaction
            evaluated.extend(b.serial for b in batches)

    class Next:
        name = "next_probe"

        def on_batch(self, conn: psycopg.Connection[Any], batches: Sequence[DeviceBatch]) -> None:
            after.extend(b.serial for b in batches)

    before = metric("probation_ingest_stage_errors_total", stage="failing_probe")
    start_worker(after_store=[Failing(), Next()], flush_ms=200)
    pub.publish(topic(mqtt_prefix, "GF-BAD", "fixes"), fixes_payload(fix(1)))
    pub.publish(topic(mqtt_prefix, "GF-OK", "fixes"), fixes_payload(fix(1)))
    pub.flush()
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM fixes") == 2, what="both stored")
    assert "GF-OK" in evaluated and "GF-BAD" not in evaluated
    assert metric("probation_ingest_stage_errors_total", stage="failing_probe") - before >= 1
    assert {"GF-OK", "GF-BAD"} <= set(after)  # the next stage still saw both devices


def test_values_the_database_cannot_store_become_dead_letters(
    database_url: str, mqtt_prefix: str, start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    add_device(database_url, "NUL-1")
    start_worker()
    pub.publish(topic(mqtt_prefix, "NUL-1", "fixes"), fixes_payload(fix(1, spd=1e300), fix(2)))
    pub.publish(topic(mqtt_prefix, "NUL-1", "events"), orjson.dumps({"events": [
        {"seq": 1, "ts": iso(NOW), "type": "power_on", "detail": {"a": "x\u0000y"}}]}))
    pub.publish(topic(mqtt_prefix, "NUL-1", "status"), orjson.dumps({"state": "online", "fw": "\u0000"}))
    pub.flush()
    wait_for(lambda: len(dead_letters(database_url)) == 3, what="3 dead letters")
    assert scalar(database_url, "SELECT array_agg(seq) FROM fixes") == [2]
    assert sorted(r[0] for r in dead_letters(database_url)) == ["bad_type", "bad_type", "out_of_range"]
    assert next(r[2] for r in dead_letters(database_url) if r[0] == "out_of_range") == 0


def test_metrics_count_per_stream(
    database_url: str, mqtt_prefix: str, start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    add_device(database_url, "MET-1")
    start_worker()
    stored = metric("probation_ingest_items_stored_total", stream="fixes")
    received = metric("probation_ingest_items_received_total", stream="fixes")
    msgs = metric("probation_ingest_messages_received_total", stream="fixes")
    batches = metric("probation_ingest_batch_items_count")
    pub.publish(topic(mqtt_prefix, "MET-1", "fixes"), fixes_payload(fix(1), fix(2), fix(3, lat=100)))
    pub.flush()
    wait_for(lambda: metric("probation_ingest_items_stored_total", stream="fixes") - stored == 2,
             what="stored metric")
    assert metric("probation_ingest_items_received_total", stream="fixes") - received == 3
    assert metric("probation_ingest_messages_received_total", stream="fixes") - msgs == 1
    assert metric("probation_ingest_batch_items_count") > batches
    assert metric("probation_ingest_receive_to_commit_seconds_count") > 0
    assert metric("probation_ingest_publish_to_commit_seconds_count") > 0
    assert REGISTRY.get_sample_value("probation_ingest_queue_depth") is not None


def test_mqtt5_worker_ingests(
    database_url: str, mqtt_prefix: str, start_worker: Callable[..., IngestWorker], pub: Publisher,
) -> None:
    add_device(database_url, "V5-1")
    start_worker(protocol="5")
    pub.publish(topic(mqtt_prefix, "V5-1", "fixes"), fixes_payload(fix(1), fix(2)))
    pub.flush()
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM fixes") == 2, what="v5 fixes")
