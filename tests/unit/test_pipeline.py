"""Unit tests of the ingest pipeline's pure stages (no broker, no database)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from devices.ingest import _install_fast_receive
from devices.mqtt import is_v5, mqtt_client
from devices.pipeline import (
    ByteBoundedQueue,
    DeviceDirectory,
    RawMessage,
    UndecidedCheckins,
    _DeviceAcc,
    dead_letter,
    decode_stage,
    fingerprint,
    is_downlink,
)
from devices.protocol import MAX_PAYLOAD, Checkin, Fix, Reason, Rejected

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def raw(topic: str = "pm/v1/devices/D1/fixes", payload: bytes = b"{}", mid: int = 1) -> RawMessage:
    return RawMessage(topic, payload, mid, 1, False, 1, time.time())


def fix(seq: int, ts: datetime, acc: float = 5.0, bat: int | None = None) -> Fix:
    return Fix(seq, ts, 43.0, 76.0, acc, "gps", None, None, bat)


# --------------------------------------------------------------------------- queue


def test_queue_is_bounded_by_count_and_gives_back_in_order() -> None:
    q = ByteBoundedQueue(max_items=3, max_bytes=1000)
    for i in range(3):
        assert q.put(raw(mid=i), timeout=0.1)
    assert not q.put(raw(mid=9), timeout=0.05)  # full
    assert [m.mid for m in q.get_many(2, 0)] == [0, 1]
    assert q.put(raw(mid=3), timeout=0.1)
    assert [m.mid for m in q.get_many(10, 0)] == [2, 3]
    assert q.get_many(10, 0.01) == [] and len(q) == 0 and q.bytes == 0


def test_queue_is_bounded_by_bytes_but_takes_one_oversized_message_when_empty() -> None:
    q = ByteBoundedQueue(max_items=100, max_bytes=10)
    assert q.put(raw(payload=b"x" * 50), timeout=0.1)  # alone: accepted
    assert not q.put(raw(payload=b"y"), timeout=0.05)
    assert q.bytes == 50
    q.get_many(1, 0)
    assert q.put(raw(payload=b"y" * 6), timeout=0.1)
    assert not q.put(raw(payload=b"z" * 6), timeout=0.05)
    assert q.put(raw(payload=b"z" * 4), timeout=0.1) and q.bytes == 10


def test_a_blocked_put_resumes_when_the_consumer_takes() -> None:
    q = ByteBoundedQueue(max_items=1, max_bytes=1000)
    q.put(raw(mid=1))
    done = threading.Event()

    def producer() -> None:
        q.put(raw(mid=2))
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    assert not done.wait(0.1)
    assert [m.mid for m in q.get_many(5, 0)] == [1]
    assert done.wait(2)
    assert [m.mid for m in q.get_many(5, 1)] == [2]
    t.join()


def test_get_many_wakes_up_on_put() -> None:
    q = ByteBoundedQueue(max_items=10, max_bytes=1000)
    threading.Timer(0.05, lambda: q.put(raw(mid=7))).start()
    t0 = time.monotonic()
    assert [m.mid for m in q.get_many(5, 5)] == [7]
    assert time.monotonic() - t0 < 2


# --------------------------------------------------------------------------- decode stage


def test_downlink_topics_are_recognised() -> None:
    assert is_downlink("pm/v1/devices/D1/commands", "pm/v1")
    assert is_downlink("pm/v1/devices/D1/commands", "pm/v1/")
    assert not is_downlink("pm/v1/devices/D1/acks", "pm/v1")
    assert not is_downlink("pm/v1/devices/a/b/commands", "pm/v1")
    assert not is_downlink("other/devices/D1/commands", "pm/v1")


def test_decode_stage_counts_items_and_defers_checkins() -> None:
    payload = orjson.dumps({"fixes": [
        {"seq": 1, "ts": "2026-11-25T11:00:00Z", "lat": 1, "lon": 2, "acc": 3},
        {"seq": 1, "ts": "2026-11-25T11:00:00Z", "lat": 1, "lon": 2, "acc": 3},
        {"seq": 2, "ts": "2026-11-25T11:00:00Z", "lat": 100, "lon": 2, "acc": 3},
    ]})
    inc = decode_stage(raw(payload=payload), prefix="pm/v1", now=NOW)
    assert (inc.serial, inc.stream, inc.items) == ("D1", "fixes", 3)
    assert inc.decoded is not None and inc.decoded.duplicates == 1
    assert [r.reason for r in inc.decoded.rejected] == [Reason.OUT_OF_RANGE]
    checkin = decode_stage(raw("pm/v1/devices/P1/checkins", b"garbage"), prefix="pm/v1")
    assert checkin.decoded is None and checkin.serial == "P1"  # validated by the writer
    bad = decode_stage(raw("pm/v1/devices/a.b/fixes", b"{}"), prefix="pm/v1")
    assert bad.serial is None and bad.stream == "unknown"
    assert bad.decoded is not None and bad.decoded.rejected[0].reason is Reason.BAD_TOPIC


# --------------------------------------------------------------------------- dead letters


def test_dead_letters_keep_the_whole_payload_capped_or_the_item() -> None:
    big = raw(payload=b"x" * (MAX_PAYLOAD + 100))
    whole = dead_letter(big, Rejected(Reason.TOO_LARGE, "too big", None, None))
    assert len(whole.payload) == MAX_PAYLOAD and whole.item_index is None
    item = dead_letter(raw(payload=b'{"fixes": [...]}'),
                       Rejected(Reason.BAD_TYPE, "lat\x00", {"seq": 1, "lat": "x"}, 3))
    assert orjson.loads(item.payload) == {"seq": 1, "lat": "x"} and item.item_index == 3
    assert "\x00" not in item.detail
    odd = dead_letter(raw(), Rejected(Reason.OUT_OF_RANGE, "big int", {"seq": 2**70}, 0))
    assert b"1180591620717411303424" in odd.payload  # not JSON-serialisable: repr


def test_fingerprints_identify_a_message_and_item() -> None:
    a = fingerprint("t", 1, b"p")
    assert a == fingerprint("t", 1, b"p")
    assert len({a, fingerprint("t", 2, b"p"), fingerprint("t", None, b"p"),
                fingerprint("u", 1, b"p"), fingerprint("t", 1, b"q")}) == 5


# --------------------------------------------------------------------------- inventory


def test_inventory_of_a_device_batch() -> None:
    acc = _DeviceAcc(uuid.uuid4(), "D1", heard_at=time.time(), online=True)
    acc.fixes = sorted([
        fix(1, NOW - timedelta(seconds=30), acc=10, bat=90),
        fix(2, NOW - timedelta(seconds=20), acc=150, bat=None),
        fix(3, NOW - timedelta(seconds=10), acc=500, bat=None),
    ], key=lambda f: f.ts)
    inv = acc.inventory()
    assert inv.last_fix_at == NOW - timedelta(seconds=10)
    assert inv.last_good_fix_at == NOW - timedelta(seconds=30)
    assert (inv.fix_battery, inv.fix_battery_ts) == (90, NOW - timedelta(seconds=30))
    assert inv.online is True and inv.last_seen is not None
    silent = _DeviceAcc(uuid.uuid4(), "D2", online=False).inventory()
    assert silent.last_seen is None and silent.last_fix_at is None and silent.online is False


def test_the_default_checkin_judge_passes_nothing() -> None:
    c = Checkin(1, NOW, "face", [0.1] * 128, 0.99, None, None, None, None)
    verdicts = UndecidedCheckins().evaluate(None, device_id=uuid.uuid4(), case_id=None,  # type: ignore[arg-type]
                                            checkins=[c, c])
    assert [(v.passed, v.similarity) for v in verdicts] == [(False, None), (False, None)]


def test_device_directory_caches_known_and_briefly_unknown_serials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from devices import service

    registered = {"A": uuid.uuid4()}
    calls: list[list[str]] = []

    def lookup(conn: Any, *, serials: list[str]) -> dict[str, uuid.UUID]:
        calls.append(sorted(serials))
        return {s: registered[s] for s in serials if s in registered}

    monkeypatch.setattr(service, "lookup_devices", lookup)
    d = DeviceDirectory(negative_ttl=0.2)
    assert d.resolve(None, {"A", "B"}) == {"A": registered["A"]}  # type: ignore[arg-type]
    assert d.resolve(None, {"A", "B"}) == {"A": registered["A"]}  # type: ignore[arg-type]
    assert calls == [["A", "B"]]
    registered["B"] = uuid.uuid4()
    time.sleep(0.25)
    assert d.resolve(None, {"B"}) == {"B": registered["B"]}  # type: ignore[arg-type]
    assert calls == [["A", "B"], ["B"]]


# --------------------------------------------------------------------------- MQTT


def test_protocol_versions() -> None:
    assert is_v5("5") and is_v5("5.0") and is_v5("MQTTv5") and is_v5(5)
    assert not is_v5("3.1.1") and not is_v5("mqttv311") and not is_v5(4)
    with pytest.raises(ValueError):
        is_v5("3.1")


@pytest.mark.parametrize("v5", [False, True])
@pytest.mark.parametrize("qos", [0, 1])
def test_the_fast_receive_path_parses_publish_packets(v5: bool, qos: int) -> None:
    client = mqtt_client("mqtt://127.0.0.1:1", "unit", v5=v5, manual_ack=True)
    got: list[tuple[bytes, bytes, int, int, bool]] = []
    _install_fast_receive(client, lambda *a: got.append(a))
    topic, payload, mid = b"pm/v1/devices/D1/fixes", b'{"fixes": []}', 4242
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    if v5:  # properties: a user property is harmless; length 200 needs two VBI bytes
        prop = b"\x26" + (5).to_bytes(2, "big") + b"hello" + (190).to_bytes(2, "big") + b"v" * 190
        assert len(prop) == 200
        body += bytes([0x80 | (200 & 0x7F), 200 >> 7]) + prop
    body += payload
    client._in_packet["command"] = 0x30 | (qos << 1) | 0x01  # PUBLISH, retained
    client._in_packet["packet"] = bytearray(body)
    assert client._handle_publish() == mqtt.MQTT_ERR_SUCCESS
    assert got == [(topic, payload, mid if qos else 0, qos, True)]
