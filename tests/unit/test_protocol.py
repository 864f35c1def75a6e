"""Unit tests of the device gateway protocol (devices.protocol): no broker, no database."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import protocol as P
from devices.protocol import (
    MAX_ITEMS,
    MAX_PAYLOAD,
    Ack,
    Checkin,
    CommandType,
    Decoded,
    DeviceEvent,
    Fix,
    Reason,
    Status,
    Stream,
    Topic,
    command_topic,
    decode,
    encode_command,
    parse_topic,
    subscription_topics,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SERIAL = "BR-000123_x"
EMB = [round(0.001 * i - 0.05, 4) for i in range(128)]


def topic(stream: str, serial: str = SERIAL, prefix: str = "pm/v1") -> str:
    return f"{prefix}/devices/{serial}/{stream}"


def no_internal_errors(d: Decoded) -> None:
    """The defensive catch-all in decode must never be what produced a rejection."""
    assert not any(r.detail.startswith("unexpected:") for r in d.rejected), d.rejected


def dec(stream: str, payload: Any, **kw: Any) -> Decoded:
    """Decode `payload` (bytes, or an object to serialise) on the device's `stream` topic."""
    if isinstance(payload, bytes | bytearray):
        raw = bytes(payload)
    else:  # stdlib json: it also writes integers beyond 64 bits, like some gateways might
        raw = json.dumps(payload, allow_nan=False).encode()
    kw.setdefault("now", NOW)
    d = decode(topic(stream), raw, **kw)
    no_internal_errors(d)
    return d


def fix(**kw: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "seq": 1,
        "ts": "2026-11-25T10:15:00Z",
        "lat": 43.238949,
        "lon": 76.889709,
        "acc": 8.5,
    }
    item.update(kw)
    return {k: v for k, v in item.items() if v is not DROP}


def event(**kw: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"seq": 77, "ts": 1764065700000, "type": "strap_open"}
    item.update(kw)
    return {k: v for k, v in item.items() if v is not DROP}


def checkin(**kw: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "seq": 5,
        "ts": "2026-11-25T10:20:31+05:00",
        "method": "face",
        "embedding": EMB,
        "liveness": 0.97,
    }
    item.update(kw)
    return {k: v for k, v in item.items() if v is not DROP}


DROP = object()


def whole(d: Decoded, reason: Reason) -> None:
    """Assert a whole-message rejection."""
    assert d.items == []
    assert len(d.rejected) == 1
    r = d.rejected[0]
    assert r.reason is reason, r
    assert r.item is None and r.index is None
    assert r.detail


def one_rejected(d: Decoded, reason: Reason, index: int | None = 0) -> str:
    """Assert exactly one item-level rejection and return its detail."""
    assert d.items == []
    assert len(d.rejected) == 1, d.rejected
    r = d.rejected[0]
    assert r.reason is reason, r
    assert r.index == index
    assert r.detail
    return r.detail


# --------------------------------------------------------------------------- topics


@pytest.mark.parametrize("stream", list(Stream))
def test_parse_topic_every_stream(stream: Stream) -> None:
    assert parse_topic(topic(stream.value)) == Topic(SERIAL, stream)


def test_parse_topic_custom_prefix() -> None:
    assert parse_topic("acme/pm/v1/devices/D1/fixes", "acme/pm/v1") == Topic("D1", Stream.FIXES)
    assert parse_topic("acme/pm/v1/devices/D1/fixes", "acme/pm/v1/") == Topic("D1", Stream.FIXES)
    assert parse_topic("pm/v1/devices/D1/fixes", "acme/pm/v1") is None


@pytest.mark.parametrize(
    "t",
    [
        "pm/v2/devices/D1/fixes",
        "/pm/v1/devices/D1/fixes",
        "pm/v1/device/D1/fixes",
        "pm/v1/devices/D1",
        "pm/v1/devices/D1/",
        "pm/v1/devices//fixes",
        "pm/v1/devices/D1/commands",
        "pm/v1/devices/D1/telemetry",
        "pm/v1/devices/D1/fixes/extra",
        "pm/v1/devices/D1/Fixes",
        "pm/v1/devices/a+b/fixes",
        "pm/v1/devices/+/fixes",
        "pm/v1/devices/#/fixes",
        "pm/v1/devices/a/b/fixes",
        "pm/v1/devices/a b/fixes",
        "pm/v1/devices/a.b/fixes",
        "pm/v1/devices/\u00e9t\u00e9/fixes",
        "pm/v1/devices/D1\n/fixes",
        f"pm/v1/devices/{'x' * 65}/fixes",
        "",
    ],
)
def test_parse_topic_rejects(t: str) -> None:
    assert parse_topic(t) is None


def test_serial_length_limit_and_case() -> None:
    assert parse_topic(f"pm/v1/devices/{'x' * 64}/fixes") == Topic("x" * 64, Stream.FIXES)
    assert parse_topic("pm/v1/devices/ab/acks") != parse_topic("pm/v1/devices/AB/acks")


@pytest.mark.parametrize("serial", ["a/b", "a+b", "+", "#"])
def test_bad_topic_serial_with_wildcards_or_slash(serial: str) -> None:
    d = decode(f"pm/v1/devices/{serial}/fixes", orjson.dumps({"fixes": [fix()]}), now=NOW)
    whole(d, Reason.BAD_TOPIC)
    assert d.topic is None


def test_bad_topic_commands_is_downlink() -> None:
    whole(dec("commands", {"fixes": [fix()]}), Reason.BAD_TOPIC)


def test_subscription_topics_and_command_topic() -> None:
    assert subscription_topics("pm/v1") == [
        "pm/v1/devices/+/fixes",
        "pm/v1/devices/+/events",
        "pm/v1/devices/+/checkins",
        "pm/v1/devices/+/status",
        "pm/v1/devices/+/acks",
    ]
    assert subscription_topics("x/y/")[0] == "x/y/devices/+/fixes"
    assert command_topic("D-1") == "pm/v1/devices/D-1/commands"
    assert command_topic("D_1", prefix="acme") == "acme/devices/D_1/commands"
    for bad in ["", "a/b", "+", "#", "x" * 65, "a b"]:
        with pytest.raises(ValueError):
            command_topic(bad)


# --------------------------------------------------------------------------- whole message


def test_unknown_device() -> None:
    d = dec("fixes", {"fixes": [fix()]}, device_known=lambda s: s == "other")
    whole(d, Reason.UNKNOWN_DEVICE)
    assert d.topic == Topic(SERIAL, Stream.FIXES)
    assert dec("fixes", {"fixes": [fix()]}, device_known=lambda s: s == SERIAL).items


def test_too_large_1mib_checked_before_parsing() -> None:
    whole(dec("fixes", b"\xff" * (1024 * 1024)), Reason.TOO_LARGE)
    whole(dec("status", b"{" * (MAX_PAYLOAD + 1)), Reason.TOO_LARGE)


def test_payload_at_the_size_limit_is_accepted() -> None:
    body = orjson.dumps({"fixes": [fix()]})
    payload = body + b" " * (MAX_PAYLOAD - len(body))
    assert len(payload) == MAX_PAYLOAD
    assert len(dec("fixes", payload).items) == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b'{"fixes": [',
        b"\xff\xfe{}",
        b'{"fixes": "\xc3\x28"}',  # invalid UTF-8 inside a string
        b'{"fixes": [{"seq": 1}],}',
        b"{'fixes': []}",
    ],
)
def test_not_json(payload: bytes) -> None:
    whole(dec("fixes", payload), Reason.NOT_JSON)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
def test_nan_infinity_and_overflow_are_not_finite_per_item(literal: bytes) -> None:
    """NaN/Infinity literals and doubles that overflow (emitted by common JSON writers) reject
    only their item, as not_finite: the valid items of the message are kept."""
    payload = (
        b'{"fixes": [{"seq": 1, "ts": 0, "lat": ' + literal + b', "lon": 0, "acc": 1}, '
        b'{"seq": 2, "ts": 0, "lat": 0, "lon": 0, "acc": 1}]}'
    )
    d = dec("fixes", payload)
    assert [f.seq for f in d.items] == [2]  # type: ignore[union-attr]
    assert [(r.reason, r.index) for r in d.rejected] == [(Reason.NOT_FINITE, 0)]
    d = dec("status", b'{"state": "online", "bat": ' + literal + b"}")
    assert d.items == [] and [r.reason for r in d.rejected] == [Reason.BAD_TYPE]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"fixes": [NaN',
        b'{"fixes": "\\ud800", "x": NaN}',
        b'{"fixes": ' + b"[" * 5000 + b"NaN" + b"]" * 5000 + b"}",
    ],
)
def test_the_non_finite_fallback_parser_refuses_what_orjson_refuses(payload: bytes) -> None:
    whole(dec("fixes", payload), Reason.NOT_JSON)


def test_nested_json_10000_deep_is_not_json() -> None:
    payload = b'{"fixes": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    whole(dec("fixes", payload), Reason.NOT_JSON)
    whole(
        dec(
            "events",
            b'{"events": [{"seq": 1, "detail": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001 + b"]}",
        ),
        Reason.NOT_JSON,
    )


@pytest.mark.parametrize("stream", list(Stream))
@pytest.mark.parametrize("payload", [b"[]", b'"fixes"', b"1", b"null", b"true", b"[{}]"])
def test_not_object(stream: Stream, payload: bytes) -> None:
    whole(dec(stream.value, payload), Reason.NOT_OBJECT)


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"events": [event()]},
        {"Fixes": [fix()]},
        {"fixes": [fix()], "extra": 1},
        {"fix": [fix()]},
    ],
)
def test_wrong_stream_key(obj: dict[str, Any]) -> None:
    whole(dec("fixes", obj), Reason.WRONG_STREAM_KEY)


def test_stream_key_value_not_a_list_is_bad_type() -> None:
    """Documented choice: right key, wrong JSON type -> whole-message bad_type."""
    for value in ["x", {}, 1, None, fix()]:
        whole(dec("fixes", {"fixes": value}), Reason.BAD_TYPE)


def test_empty_list_is_out_of_range() -> None:
    for stream in ("fixes", "events", "checkins"):
        whole(dec(stream, {stream: []}), Reason.OUT_OF_RANGE)


def test_too_many_items_100000() -> None:
    payload = b'{"fixes": [' + b",".join([b"0"] * 100_000) + b"]}"
    assert len(payload) <= MAX_PAYLOAD
    whole(dec("fixes", payload), Reason.TOO_MANY_ITEMS)


def test_item_count_limits_500_ok_501_too_many() -> None:
    fixes = [fix(seq=i) for i in range(MAX_ITEMS + 1)]
    assert len(dec("fixes", {"fixes": fixes[:MAX_ITEMS]}).items) == MAX_ITEMS
    whole(dec("fixes", {"fixes": fixes}), Reason.TOO_MANY_ITEMS)
    whole(dec("events", {"events": [event(seq=i) for i in range(501)]}), Reason.TOO_MANY_ITEMS)


def test_bytearray_and_memoryview_payloads() -> None:
    raw = orjson.dumps({"fixes": [fix()]})
    assert len(decode(topic("fixes"), bytearray(raw), now=NOW).items) == 1
    assert len(decode(topic("fixes"), memoryview(raw), now=NOW).items) == 1
    nan = b'{"fixes": [{"seq": 1, "ts": 0, "lat": NaN, "lon": 0, "acc": 1}]}'
    for buf in (bytearray(nan), memoryview(nan)):
        d = decode(topic("fixes"), buf, now=NOW)
        assert [r.reason for r in d.rejected] == [Reason.NOT_FINITE]


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError):
        decode(topic("fixes"), orjson.dumps({"fixes": [fix()]}), now=datetime(2026, 1, 1))


def test_now_defaults_to_current_utc() -> None:
    now = datetime.now(UTC)
    soon = now + timedelta(minutes=1)
    later = now + timedelta(minutes=10)
    d = decode(
        topic("fixes"),
        orjson.dumps({"fixes": [fix(ts=soon.isoformat()), fix(seq=2, ts=later.isoformat())]}),
    )
    assert len(d.items) == 1
    assert d.rejected[0].reason is Reason.FUTURE_TIMESTAMP and d.rejected[0].index == 1


# --------------------------------------------------------------------------- fixes


def test_valid_fix_full() -> None:
    payload = {
        "fixes": [
            {
                "seq": 1042,
                "ts": "2026-11-25T10:15:00Z",
                "lat": 43.238949,
                "lon": 76.889709,
                "acc": 8.5,
                "src": "gps",
                "spd": 1.2,
                "hdg": 270,
                "bat": 87,
            }
        ]
    }
    d = dec("fixes", payload)
    assert d.topic == Topic(SERIAL, Stream.FIXES)
    assert d.rejected == [] and d.duplicates == 0
    assert d.items == [
        Fix(
            1042,
            datetime(2026, 11, 25, 10, 15, tzinfo=UTC),
            43.238949,
            76.889709,
            8.5,
            "gps",
            1.2,
            270.0,
            87,
        )
    ]
    f = d.items[0]
    assert isinstance(f, Fix)
    assert type(f.hdg) is float and f.ts.tzinfo is UTC


def test_valid_fix_minimal_defaults_and_int_coordinates() -> None:
    d = dec(
        "fixes",
        {"fixes": [fix(lat=43, lon=-76, acc=50000, spd=None, hdg=None, bat=None, src=None)]},
    )
    (f,) = d.items
    assert isinstance(f, Fix)
    assert (f.lat, f.lon, f.acc, f.src, f.spd, f.hdg, f.bat) == (
        43.0,
        -76.0,
        50000.0,
        "gps",
        None,
        None,
        None,
    )
    assert all(type(x) is float for x in (f.lat, f.lon, f.acc))


@pytest.mark.parametrize("src", ["gps", "wifi", "cell", "beacon"])
def test_fix_sources(src: str) -> None:
    d = dec("fixes", {"fixes": [fix(src=src)]})
    assert d.items[0].src == src  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "ok"),
    [(-90, True), (90, True), (90.0000001, False), (-90.5, False), (0, True)],
)
def test_fix_lat_bounds(value: float, ok: bool) -> None:
    d = dec("fixes", {"fixes": [fix(lat=value)]})
    assert (len(d.items) == 1) is ok
    if not ok:
        one_rejected(d, Reason.OUT_OF_RANGE)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("lat", 90.5, Reason.OUT_OF_RANGE),
        ("lat", "43.2", Reason.BAD_TYPE),
        ("lat", True, Reason.BAD_TYPE),
        ("lat", None, Reason.BAD_TYPE),
        ("lat", [1], Reason.BAD_TYPE),
        ("lon", 180.01, Reason.OUT_OF_RANGE),
        ("lon", -181, Reason.OUT_OF_RANGE),
        ("lon", {"a": 1}, Reason.BAD_TYPE),
        ("acc", 0, Reason.OUT_OF_RANGE),
        ("acc", -1.0, Reason.OUT_OF_RANGE),
        ("acc", 50000.1, Reason.OUT_OF_RANGE),
        ("acc", "8", Reason.BAD_TYPE),
        ("src", "glonass", Reason.OUT_OF_RANGE),
        ("src", "GPS", Reason.OUT_OF_RANGE),
        ("src", 1, Reason.BAD_TYPE),
        ("src", ["gps"], Reason.BAD_TYPE),
        ("spd", -0.1, Reason.OUT_OF_RANGE),
        ("spd", "fast", Reason.BAD_TYPE),
        ("hdg", 360, Reason.OUT_OF_RANGE),
        ("hdg", -1, Reason.OUT_OF_RANGE),
        ("hdg", False, Reason.BAD_TYPE),
        ("bat", 101, Reason.OUT_OF_RANGE),
        ("bat", -1, Reason.OUT_OF_RANGE),
        ("bat", 87.0, Reason.BAD_TYPE),
        ("bat", "87", Reason.BAD_TYPE),
        ("bat", True, Reason.BAD_TYPE),
        ("seq", -1, Reason.OUT_OF_RANGE),
        ("seq", 2**63, Reason.OUT_OF_RANGE),
        ("seq", 2**64 - 1, Reason.OUT_OF_RANGE),
        ("seq", True, Reason.BAD_TYPE),
        ("seq", 1.0, Reason.BAD_TYPE),
        ("seq", 1.5, Reason.BAD_TYPE),
        ("seq", "1", Reason.BAD_TYPE),
        ("seq", None, Reason.BAD_TYPE),
        ("ts", None, Reason.BAD_TYPE),
        ("ts", 1764065700000.0, Reason.BAD_TYPE),
        ("ts", True, Reason.BAD_TYPE),
        ("ts", [2026], Reason.BAD_TYPE),
    ],
)
def test_fix_field_rules(field: str, value: Any, reason: Reason) -> None:
    detail = one_rejected(dec("fixes", {"fixes": [fix(**{field: value})]}), reason)
    assert detail.startswith(field)


def test_fix_spd_and_hdg_bounds_accepted() -> None:
    d = dec("fixes", {"fixes": [fix(spd=0, hdg=0), fix(seq=2, spd=300.5, hdg=359.999)]})
    assert [(f.spd, f.hdg) for f in d.items] == [(0.0, 0.0), (300.5, 359.999)]  # type: ignore[union-attr]


@pytest.mark.parametrize("field", ["seq", "ts", "lat", "lon", "acc"])
def test_fix_missing_field(field: str) -> None:
    detail = one_rejected(dec("fixes", {"fixes": [fix(**{field: DROP})]}), Reason.MISSING_FIELD)
    assert field in detail


@pytest.mark.parametrize("item", [1, "fix", None, [1, 2], True])
def test_item_not_an_object_is_bad_type(item: Any) -> None:
    for stream in ("fixes", "events", "checkins"):
        assert one_rejected(dec(stream, {stream: [item]}), Reason.BAD_TYPE)


def test_seq_boundaries() -> None:
    d = dec("fixes", {"fixes": [fix(seq=0), fix(seq=2**63 - 1), fix(seq=2**63)]})
    assert [f.seq for f in d.items] == [0, 2**63 - 1]  # type: ignore[union-attr]
    assert [(r.reason, r.index) for r in d.rejected] == [(Reason.OUT_OF_RANGE, 2)]


def test_seq_beyond_64_bits_decoded_as_float_is_out_of_range() -> None:
    """orjson decodes integers > 2^64-1 as floats; such a seq is still out_of_range."""
    payload = b'{"fixes": [{"seq": 18446744073709551616, "ts": 0, "lat": 0, "lon": 0, "acc": 1}]}'
    one_rejected(dec("fixes", payload), Reason.OUT_OF_RANGE)
    payload = b'{"fixes": [{"seq": -9223372036854775809, "ts": 0, "lat": 0, "lon": 0, "acc": 1}]}'
    one_rejected(dec("fixes", payload), Reason.OUT_OF_RANGE)


def test_unknown_item_fields_are_ignored() -> None:
    assert len(dec("fixes", {"fixes": [fix(alt=812.0, sats=9)]}).items) == 1


def test_not_finite_values() -> None:
    """orjson never yields NaN/inf, but the validators still classify them (another decoder)."""
    limit = NOW + timedelta(minutes=5)
    for field in ("lat", "lon", "acc", "spd", "hdg"):
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(P._Invalid) as ei:
                P._fix(fix(**{field: bad}), limit, None)
            assert ei.value.reason is Reason.NOT_FINITE, (field, bad)
    with pytest.raises(P._Invalid) as ei:
        P._checkin(checkin(liveness=math.nan), limit, None)
    assert ei.value.reason is Reason.NOT_FINITE
    emb = [*EMB]
    emb[7] = math.inf
    with pytest.raises(P._Invalid) as ei:
        P._checkin(checkin(embedding=emb), limit, None)
    assert ei.value.reason is Reason.NOT_FINITE and "embedding[7]" in ei.value.detail


def test_embedding_huge_but_finite_values_are_accepted() -> None:
    """The sum of finite values may overflow; only a real non-finite element is rejected."""
    limit = NOW + timedelta(minutes=5)
    c = P._checkin(checkin(embedding=[1e308] * 128), limit, None)
    assert c.embedding[0] == 1e308


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-11-25T10:15:00Z", datetime(2026, 11, 25, 10, 15, tzinfo=UTC)),
        ("2026-11-25T10:15:00.123Z", datetime(2026, 11, 25, 10, 15, 0, 123000, tzinfo=UTC)),
        ("2026-11-25T10:15:00.123456789Z", datetime(2026, 11, 25, 10, 15, 0, 123456, tzinfo=UTC)),
        ("2026-11-25T10:20:31+05:00", datetime(2026, 11, 25, 5, 20, 31, tzinfo=UTC)),
        ("2026-11-25T10:20:31.5+05:30", datetime(2026, 11, 25, 4, 50, 31, 500000, tzinfo=UTC)),
        ("2026-11-25T01:00:00-08:00", datetime(2026, 11, 25, 9, 0, tzinfo=UTC)),
        ("2026-11-25T00:30:00+01:00", datetime(2026, 11, 24, 23, 30, tzinfo=UTC)),
        ("2026-11-25T10:15:00+00:00", datetime(2026, 11, 25, 10, 15, tzinfo=UTC)),
        ("2026-11-25T10:15:00-00:00", datetime(2026, 11, 25, 10, 15, tzinfo=UTC)),
        ("2026-11-25t10:15:00z", datetime(2026, 11, 25, 10, 15, tzinfo=UTC)),
        ("2026-11-25 10:15:00Z", datetime(2026, 11, 25, 10, 15, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("1999-01-01T00:00:00Z", datetime(1999, 1, 1, tzinfo=UTC)),
        (1764065700000, datetime(2025, 11, 25, 10, 15, tzinfo=UTC)),
        (1764065700123, datetime(2025, 11, 25, 10, 15, 0, 123000, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (-1, datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
    ],
)
def test_timestamps_stored_as_utc(ts: Any, expected: datetime) -> None:
    (f,) = dec("fixes", {"fixes": [fix(ts=ts)]}).items
    assert f.ts == expected  # type: ignore[union-attr]
    assert f.ts.tzinfo is UTC  # type: ignore[union-attr]
    assert f.ts.utcoffset() == timedelta(0)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-25",  # date without time
        "2026-11-25T10:15:00",  # naive
        "2026-11-25T10:15Z",  # no seconds
        "2026-11-25T10Z",
        "20261125T101500Z",  # ISO basic format
        "2026-W48-3T10:15:00Z",  # ISO week date
        "2026-329T10:15:00Z",  # ordinal date
        "2026-11-25T10:15:00+0500",
        "2026-11-25T10:15:00+05",
        "2026-11-25T10:15:00+05:00:00",
        "2026-11-25T10:15:00.Z",
        "2026-11-25T10:15:00,5Z",
        "2026-11-25T10:15:00 Z",
        "2026-02-30T10:15:00Z",
        "2026-13-01T10:15:00Z",
        "2026-11-25T24:00:00Z",
        "2026-11-25T10:61:00Z",
        "2026-11-25T10:15:00+24:00",
        "\uff12\uff10\uff12\uff16-11-25T10:15:00Z",  # fullwidth digits
        "2026-11-25T10:15:00.\uff11Z",
        " 2026-11-25T10:15:00Z",
        "2026-11-25T10:15:00Z ",
        "2026-11-25T10:15:00Z\n",
        "0001-01-01T00:00:00+01:00",  # out of range once converted to UTC
        "",
        "yesterday",
        "1764065700000",
    ],
)
def test_bad_timestamp_strings(ts: str) -> None:
    one_rejected(dec("fixes", {"fixes": [fix(ts=ts)]}), Reason.BAD_TIMESTAMP)


@pytest.mark.parametrize("ms", [2**63 - 1, -(2**63), 10**17, -(10**17)])
def test_epoch_ms_out_of_datetime_range(ms: int) -> None:
    one_rejected(dec("fixes", {"fixes": [fix(ts=ms)]}), Reason.BAD_TIMESTAMP)


def test_future_timestamp() -> None:
    edge = NOW + timedelta(minutes=5)
    ok = [fix(seq=1, ts=edge.isoformat()), fix(seq=2, ts=int(edge.timestamp() * 1000))]
    bad = [
        fix(seq=3, ts=(edge + timedelta(milliseconds=1)).isoformat()),
        fix(seq=4, ts=int(edge.timestamp() * 1000) + 1),
        fix(seq=5, ts="2026-11-25T17:06:00+05:00"),  # 12:06 UTC
    ]
    d = dec("fixes", {"fixes": ok + bad})
    assert [f.seq for f in d.items] == [1, 2]  # type: ignore[union-attr]
    assert [(r.reason, r.index) for r in d.rejected] == [
        (Reason.FUTURE_TIMESTAMP, i) for i in (2, 3, 4)
    ]


def test_old_timestamps_are_accepted() -> None:
    assert dec("fixes", {"fixes": [fix(ts="2020-01-01T00:00:00Z")]}).items


# --------------------------------------------------------------------------- mixed items and duplicates


def test_mixed_good_and_bad_items() -> None:
    items = [
        fix(seq=1),
        fix(seq=2, lat=91),
        "not an object",
        fix(seq=4, ts="2026-11-25"),
        fix(seq=5),
        fix(seq=6, acc=DROP),
        fix(seq=7, ts="2026-11-26T00:00:00Z"),
        fix(seq=8, src="radar"),
        fix(seq=9, bat=1.5),
        fix(seq=10),
    ]
    d = dec("fixes", {"fixes": items})
    assert [f.seq for f in d.items] == [1, 5, 10]  # type: ignore[union-attr]
    assert [(r.index, r.reason) for r in d.rejected] == [
        (1, Reason.OUT_OF_RANGE),
        (2, Reason.BAD_TYPE),
        (3, Reason.BAD_TIMESTAMP),
        (5, Reason.MISSING_FIELD),
        (6, Reason.FUTURE_TIMESTAMP),
        (7, Reason.OUT_OF_RANGE),
        (8, Reason.BAD_TYPE),
    ]
    for r in d.rejected:
        assert r.item == items[r.index]  # type: ignore[index]
        assert r.detail


def test_duplicate_seq_in_one_message_keeps_first() -> None:
    d = dec(
        "fixes", {"fixes": [fix(seq=1, lat=1), fix(seq=2), fix(seq=1, lat=2), fix(seq=1, lat=3)]}
    )
    assert [(f.seq, f.lat) for f in d.items] == [(1, 1.0), (2, 43.238949)]  # type: ignore[union-attr]
    assert d.duplicates == 2
    assert d.rejected == []


def test_invalid_item_does_not_claim_its_seq() -> None:
    d = dec("fixes", {"fixes": [fix(seq=1, lat=100), fix(seq=1, lat=1)]})
    assert [f.lat for f in d.items] == [1.0]  # type: ignore[union-attr]
    assert d.duplicates == 0 and len(d.rejected) == 1


def test_duplicates_in_events_and_checkins() -> None:
    assert dec("events", {"events": [event(), event()]}).duplicates == 1
    assert dec("checkins", {"checkins": [checkin(), checkin()]}).duplicates == 1


# --------------------------------------------------------------------------- events


@pytest.mark.parametrize("etype", sorted(P.EVENT_TYPES))
def test_valid_event_types(etype: str) -> None:
    (e,) = dec("events", {"events": [event(type=etype)]}).items
    assert e == DeviceEvent(77, datetime(2025, 11, 25, 10, 15, tzinfo=UTC), etype, None)


def test_event_types_match_contract() -> None:
    assert len(P.EVENT_TYPES) == 13


def test_unknown_event_type() -> None:
    for t in ("strap_cut", "STRAP_OPEN", ""):
        one_rejected(dec("events", {"events": [event(type=t)]}), Reason.UNKNOWN_EVENT_TYPE)
    one_rejected(dec("events", {"events": [event(type=3)]}), Reason.BAD_TYPE)
    one_rejected(dec("events", {"events": [event(type=DROP)]}), Reason.MISSING_FIELD)


def test_event_detail() -> None:
    detail = {"voltage": 3.1, "nested": {"a": [1, 2, None]}, "s": "x"}
    (e,) = dec("events", {"events": [event(detail=detail)]}).items
    assert isinstance(e, DeviceEvent) and e.detail == detail
    (e,) = dec("events", {"events": [event(detail=None)]}).items
    assert isinstance(e, DeviceEvent) and e.detail is None
    for bad in ("text", [1], 5, True):
        one_rejected(dec("events", {"events": [event(detail=bad)]}), Reason.BAD_TYPE)


def test_event_detail_size_limit() -> None:
    pad = "x" * (4096 - len(b'{"p":""}'))
    assert len(orjson.dumps({"p": pad})) == 4096
    assert dec("events", {"events": [event(detail={"p": pad})]}).items
    one_rejected(dec("events", {"events": [event(detail={"p": pad + "y"})]}), Reason.TOO_LARGE)


def test_event_missing_seq_and_ts() -> None:
    one_rejected(dec("events", {"events": [event(seq=DROP)]}), Reason.MISSING_FIELD)
    one_rejected(dec("events", {"events": [event(ts=DROP)]}), Reason.MISSING_FIELD)
    one_rejected(
        dec("events", {"events": [event(ts="2026-11-25T13:00:00Z")]}), Reason.FUTURE_TIMESTAMP
    )


# --------------------------------------------------------------------------- check-ins


def test_valid_checkin() -> None:
    item = checkin(request_id="c0a8012e-77", lat=43.2389, lon=76.8897, acc=12)
    (c,) = dec("checkins", {"checkins": [item]}).items
    assert c == Checkin(
        5,
        datetime(2026, 11, 25, 5, 20, 31, tzinfo=UTC),
        "face",
        EMB,
        0.97,
        "c0a8012e-77",
        43.2389,
        76.8897,
        12.0,
    )


def test_checkin_minimal_and_int_embedding_values() -> None:
    emb = [0] * 64 + [1.5] * 64
    (c,) = dec("checkins", {"checkins": [checkin(embedding=emb, liveness=1)]}).items
    assert isinstance(c, Checkin)
    assert c.embedding == [float(x) for x in emb] and all(type(x) is float for x in c.embedding)
    assert (c.request_id, c.lat, c.lon, c.acc, c.liveness) == (None, None, None, None, 1.0)


@pytest.mark.parametrize(
    ("n", "ok"), [(127, False), (128, True), (512, True), (1024, True), (1025, False), (0, False)]
)
def test_embedding_length_bounds(n: int, ok: bool) -> None:
    d = dec("checkins", {"checkins": [checkin(embedding=[0.5] * n)]})
    if ok:
        assert len(d.items) == 1
    else:
        one_rejected(d, Reason.EMBEDDING_LENGTH)


def test_embedding_length_against_enrolled_template() -> None:
    calls: list[str] = []

    def enrolled(serial: str) -> int | None:
        calls.append(serial)
        return 512

    items = [
        checkin(seq=1, embedding=[0.1] * 512),
        checkin(seq=2),
        checkin(seq=3, embedding=[0.1] * 512),
    ]
    d = dec("checkins", {"checkins": items}, embedding_length=enrolled)
    assert [c.seq for c in d.items] == [1, 3]  # type: ignore[union-attr]
    assert [(r.reason, r.index) for r in d.rejected] == [(Reason.EMBEDDING_LENGTH, 1)]
    assert calls == [SERIAL]  # looked up once per message
    assert (
        len(dec("checkins", {"checkins": [checkin()]}, embedding_length=lambda s: None).items) == 1
    )


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("method", "pin", Reason.OUT_OF_RANGE),
        ("method", 1, Reason.BAD_TYPE),
        ("method", DROP, Reason.MISSING_FIELD),
        ("embedding", DROP, Reason.MISSING_FIELD),
        ("embedding", "0.1,0.2", Reason.BAD_TYPE),
        ("embedding", {"0": 1}, Reason.BAD_TYPE),
        ("embedding", [*EMB[:-1], "0.1"], Reason.BAD_TYPE),
        ("embedding", [*EMB[:-1], True], Reason.BAD_TYPE),
        ("embedding", [*EMB[:-1], None], Reason.BAD_TYPE),
        ("liveness", DROP, Reason.MISSING_FIELD),
        ("liveness", 1.01, Reason.OUT_OF_RANGE),
        ("liveness", -0.01, Reason.OUT_OF_RANGE),
        ("liveness", "high", Reason.BAD_TYPE),
        ("request_id", 42, Reason.BAD_TYPE),
        ("lat", 95, Reason.OUT_OF_RANGE),
        ("acc", 0, Reason.OUT_OF_RANGE),
        ("acc", "12", Reason.BAD_TYPE),
        ("seq", 2**63, Reason.OUT_OF_RANGE),
        ("ts", "2026-11-25T10:20:31", Reason.BAD_TIMESTAMP),
    ],
)
def test_checkin_field_rules(field: str, value: Any, reason: Reason) -> None:
    item = checkin(**{field: value})
    if field in ("lat", "acc") and "lon" not in item:
        item.update(lat=item.get("lat", 43.0), lon=76.0)
    one_rejected(dec("checkins", {"checkins": [item]}), reason)


def test_checkin_position_needs_lat_and_lon() -> None:
    assert "lon" in one_rejected(
        dec("checkins", {"checkins": [checkin(lat=43.0)]}), Reason.MISSING_FIELD
    )
    assert "lat" in one_rejected(
        dec("checkins", {"checkins": [checkin(lon=76.0)]}), Reason.MISSING_FIELD
    )
    (c,) = dec("checkins", {"checkins": [checkin(lat=43, lon=76)]}).items
    assert isinstance(c, Checkin) and (c.lat, c.lon, c.acc) == (43.0, 76.0, None)


# --------------------------------------------------------------------------- status and acks


def test_valid_status_online_and_offline() -> None:
    d = dec("status", {"state": "online", "ts": "2026-11-25T10:21:00Z", "fw": "2.4.1", "bat": 80})
    assert d.items == [Status("online", datetime(2026, 11, 25, 10, 21, tzinfo=UTC), "2.4.1", 80)]
    assert d.rejected == [] and d.topic == Topic(SERIAL, Stream.STATUS)
    assert dec("status", {"state": "offline"}).items == [Status("offline", None, None, None)]
    assert dec("status", {"state": "online", "ts": 1764065700000}).items[0].ts is not None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({}, Reason.MISSING_FIELD),
        ({"fw": "1"}, Reason.MISSING_FIELD),
        ({"state": "sleeping"}, Reason.OUT_OF_RANGE),
        ({"state": True}, Reason.BAD_TYPE),
        ({"state": None}, Reason.BAD_TYPE),
        ({"state": "online", "bat": 101}, Reason.OUT_OF_RANGE),
        ({"state": "online", "bat": "80"}, Reason.BAD_TYPE),
        ({"state": "online", "fw": 2.4}, Reason.BAD_TYPE),
        ({"state": "online", "ts": "now"}, Reason.BAD_TIMESTAMP),
        ({"state": "online", "ts": 1.5}, Reason.BAD_TYPE),
        ({"state": "online", "ts": "2027-01-01T00:00:00Z"}, Reason.FUTURE_TIMESTAMP),
    ],
)
def test_invalid_status(obj: dict[str, Any], reason: Reason) -> None:
    d = dec("status", obj)
    assert d.items == []
    (r,) = d.rejected
    assert r.reason is reason and r.item == obj and r.index is None


def test_valid_acks() -> None:
    d = dec("acks", {"id": "8d1f", "ts": "2026-11-25T10:21:05Z", "result": "ok"})
    assert d.items == [Ack("8d1f", datetime(2026, 11, 25, 10, 21, 5, tzinfo=UTC), "ok", None)]
    d = dec("acks", {"id": "8d1f", "result": "error", "detail": "unsupported"})
    assert d.items == [Ack("8d1f", None, "error", "unsupported")]


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"result": "ok"}, Reason.MISSING_FIELD),
        ({"id": "a"}, Reason.MISSING_FIELD),
        ({"id": 5, "result": "ok"}, Reason.BAD_TYPE),
        ({"id": "", "result": "ok"}, Reason.OUT_OF_RANGE),
        ({"id": "a", "result": "maybe"}, Reason.OUT_OF_RANGE),
        ({"id": "a", "result": "ok", "detail": 3}, Reason.BAD_TYPE),
        ({"id": "a", "result": "ok", "ts": "2026-11-25"}, Reason.BAD_TIMESTAMP),
    ],
)
def test_invalid_acks(obj: dict[str, Any], reason: Reason) -> None:
    (r,) = dec("acks", obj).rejected
    assert r.reason is reason and r.item == obj


def test_reason_codes_match_contract() -> None:
    assert {r.value for r in Reason} == {
        "not_json", "not_object", "wrong_stream_key", "too_large", "too_many_items", "missing_field",
        "bad_type", "out_of_range", "not_finite", "future_timestamp", "bad_timestamp",
        "unknown_event_type", "embedding_length", "unknown_device", "bad_topic",
        "bad_image",  # v1.1: check-in frames (device-mqtt-v1.md 3a)
    }  # fmt: skip


# --------------------------------------------------------------------------- downlink

CID = UUID("8d1f2c3e-0000-4000-8000-000000000001")


def test_encode_commands() -> None:
    ts = datetime(2026, 11, 25, 15, 21, tzinfo=timezone(timedelta(hours=5)))
    raw = encode_command(
        command_id=CID, ts=ts, type=CommandType.SET_INTERVAL, params={"fix_interval_s": 15}
    )
    assert orjson.loads(raw) == {
        "id": str(CID),
        "ts": "2026-11-25T10:21:00.000Z",
        "type": "set_interval",
        "params": {"fix_interval_s": 15},
    }
    cases: list[tuple[CommandType, dict[str, Any]]] = [
        (CommandType.SET_INTERVAL, {"fix_interval_s": 5, "upload_interval_s": 3600}),
        (CommandType.SET_INTERVAL, {"upload_interval_s": 60}),
        (CommandType.REQUEST_CHECKIN, {"deadline_s": 60}),
        (CommandType.REQUEST_CHECKIN, {"deadline_s": 3600}),
        (CommandType.NOTIFY, {"text": "Report to your officer", "vibrate": True}),
        (CommandType.NOTIFY, {"text": "é" * 500}),
    ]
    for ctype, params in cases:
        msg = orjson.loads(encode_command(command_id=CID, ts=NOW, type=ctype, params=params))
        assert msg["type"] == ctype.value and msg["params"] == params and msg["ts"].endswith("Z")
    raw = encode_command(command_id=CID, ts=NOW, type="notify", params={"text": "x"})  # type: ignore[arg-type]
    assert orjson.loads(raw)["type"] == "notify"


@pytest.mark.parametrize(
    ("ctype", "params"),
    [
        (CommandType.SET_INTERVAL, {}),
        (CommandType.SET_INTERVAL, {"fix_interval_s": 4}),
        (CommandType.SET_INTERVAL, {"fix_interval_s": 3601}),
        (CommandType.SET_INTERVAL, {"fix_interval_s": 15.0}),
        (CommandType.SET_INTERVAL, {"fix_interval_s": True}),
        (CommandType.SET_INTERVAL, {"upload_interval_s": "60"}),
        (CommandType.SET_INTERVAL, {"fix_interval_s": 15, "rate": 1}),
        (CommandType.REQUEST_CHECKIN, {}),
        (CommandType.REQUEST_CHECKIN, {"deadline_s": 59}),
        (CommandType.REQUEST_CHECKIN, {"deadline_s": 3601}),
        (CommandType.REQUEST_CHECKIN, {"deadline_s": 120, "text": "x"}),
        (CommandType.NOTIFY, {}),
        (CommandType.NOTIFY, {"vibrate": True}),
        (CommandType.NOTIFY, {"text": "x" * 501}),
        (CommandType.NOTIFY, {"text": 5}),
        (CommandType.NOTIFY, {"text": "x", "vibrate": 1}),
    ],
)
def test_encode_command_rejects_bad_params(ctype: CommandType, params: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        encode_command(command_id=CID, ts=NOW, type=ctype, params=params)


def test_encode_command_rejects_bad_envelope() -> None:
    with pytest.raises(ValueError):
        encode_command(
            command_id=CID, ts=datetime(2026, 1, 1), type=CommandType.NOTIFY, params={"text": "x"}
        )
    with pytest.raises(ValueError):
        encode_command(command_id=CID, ts=NOW, type="reboot", params={})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_command(command_id="8d1f", ts=NOW, type=CommandType.NOTIFY, params={"text": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_command(command_id=CID, ts=NOW, type=CommandType.NOTIFY, params=[("text", "x")])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


def field_value(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return valid | json_values


fix_like = st.fixed_dictionaries(
    {},
    optional={
        "seq": field_value(st.integers(min_value=-5, max_value=2**64 - 1)),
        "ts": field_value(
            st.integers(min_value=-(2**63), max_value=2**63 - 1)
            | st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
        ),
        "lat": field_value(st.floats(-100, 100)),
        "lon": field_value(st.floats(-200, 200)),
        "acc": field_value(st.floats(-1, 60000)),
        "src": field_value(st.sampled_from(["gps", "wifi", "cell", "beacon", "x"])),
        "spd": field_value(st.floats(-1, 100)),
        "hdg": field_value(st.floats(-1, 400)),
        "bat": field_value(st.integers(-1, 101)),
        "type": field_value(st.sampled_from(sorted(P.EVENT_TYPES))),
        "detail": json_values,
        "method": field_value(st.just("face")),
        "embedding": field_value(st.lists(st.floats(-1, 1), min_size=120, max_size=140)),
        "liveness": field_value(st.floats(-0.5, 1.5)),
    },
)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300), stream=st.sampled_from([*list(Stream), "commands"]))
def test_decode_never_raises_on_arbitrary_bytes(payload: bytes, stream: str) -> None:
    d = dec(stream, payload)
    assert isinstance(d, Decoded)
    assert d.items or d.rejected


@settings(max_examples=300, deadline=None)
@given(value=json_values, stream=st.sampled_from(list(Stream)))
def test_decode_never_raises_on_arbitrary_json(value: Any, stream: Stream) -> None:
    for obj in (value, {stream.value: value}, {stream.value: [value]}):
        d = dec(stream.value, obj)
        assert isinstance(d, Decoded)
        assert d.items or d.rejected


@settings(max_examples=200, deadline=None)
@given(items=st.lists(fix_like, min_size=1, max_size=20), stream=st.sampled_from(list(Stream)))
def test_every_item_is_accounted_for(items: list[dict[str, Any]], stream: Stream) -> None:
    if stream in (Stream.STATUS, Stream.ACKS):
        d = dec(stream.value, items[0])
        assert len(d.items) + len(d.rejected) == 1
        return
    d = dec(stream.value, {stream.value: items})
    assert len(d.items) + len(d.rejected) + d.duplicates == len(items)
    assert sorted(r.index for r in d.rejected) == [r.index for r in d.rejected]  # type: ignore[type-var]
    as_decoded = orjson.loads(json.dumps(items))  # big integers come back as floats
    for r in d.rejected:
        assert r.item == as_decoded[r.index]  # type: ignore[index]
        assert isinstance(r.reason, Reason) and r.detail
    for it in d.items:
        assert it.ts.tzinfo is UTC and it.ts <= NOW + timedelta(minutes=5)  # type: ignore[union-attr, operator]


@settings(max_examples=300, deadline=None)
@given(
    when=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2026, 11, 24)),
    offset_min=st.integers(-23 * 60 - 59, 23 * 60 + 59),
    frac=st.sampled_from(["", ".1", ".123", ".123456", ".123456789"]),
)
def test_rfc3339_roundtrip(when: datetime, offset_min: int, frac: str) -> None:
    when = when.replace(microsecond=0)
    sign = "+" if offset_min >= 0 else "-"
    h, m = divmod(abs(offset_min), 60)
    text = f"{when:%Y-%m-%dT%H:%M:%S}{frac}{sign}{h:02d}:{m:02d}"
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    expected = (when.replace(microsecond=micro) - timedelta(minutes=offset_min)).replace(tzinfo=UTC)
    assert P._ts(text, NOW) == expected
    if offset_min == 0:
        assert P._ts(text[:-6] + "Z", NOW) == expected


@settings(max_examples=500, deadline=None)
@given(ms=st.integers(min_value=-62_135_596_800_000, max_value=2**43))
def test_epoch_ms_exact(ms: int) -> None:
    limit = datetime.max.replace(tzinfo=UTC)
    assert P._ts(ms, limit) == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


_STRICT = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


@settings(max_examples=1000, deadline=None)
@given(
    base=st.sampled_from(
        ["2026-11-25T10:15:00Z", "2026-11-25T10:15:00.123+05:30", "2026-11-25T10:15:00-00:00"]
    ),
    edits=st.lists(
        st.tuples(
            st.integers(0, 30),
            st.sampled_from(["del", "ins", "sub"]),
            st.sampled_from(list("0123456789-:.,+TZtzW ¹٣")),
        ),
        max_size=3,
    ),
)
def test_timestamp_parser_accepts_only_rfc3339(
    base: str, edits: list[tuple[int, str, str]]
) -> None:
    s = base
    for pos, op, ch in edits:
        pos = min(pos, len(s))
        if op == "del":
            s = s[:pos] + s[pos + 1 :]
        elif op == "ins":
            s = s[:pos] + ch + s[pos:]
        else:
            s = s[:pos] + ch + s[pos + 1 :]
    try:
        dt = P._ts(s, datetime.max.replace(tzinfo=UTC))
    except P._Invalid as e:
        assert e.reason is Reason.BAD_TIMESTAMP
        return
    assert _STRICT.fullmatch(s), s
    assert dt.tzinfo is UTC


def test_bench_decode_runs() -> None:
    from bench.protocol import bench_decode

    assert bench_decode(n_messages=20, fixes_per_message=10) > 0


# ----------------------------------------------------------------- check-ins with frames (v1.1)

_PNG = None


def _png() -> str:
    import base64
    import io

    from PIL import Image

    global _PNG
    if _PNG is None:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (120, 80, 40)).save(buf, format="PNG")
        _PNG = base64.b64encode(buf.getvalue()).decode()
    return _PNG


def frames_item(**kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": 6, "ts": "2026-11-25T10:20:31Z", "method": "face",
                           "challenge": "turn_left", "frames": [_png()] * 3}
    out.update(kw)
    return {k: v for k, v in out.items() if v is not None}


def test_checkin_with_frames_decodes() -> None:
    import base64

    d = dec("checkins", {"checkins": [frames_item(request_id="r-1")]})
    (c,) = d.items
    assert c.frames == [base64.b64decode(_png())] * 3 and c.challenge == "turn_left"
    assert c.embedding == [] and c.liveness is None and c.request_id == "r-1"
    (c,) = dec("checkins", {"checkins": [frames_item(challenge=None)]}).items
    assert c.challenge is None  # no request named: the challenge is optional


@pytest.mark.parametrize(("kw", "reason"), [
    ({"frames": ["aGVsbG8="] * 3}, Reason.BAD_IMAGE),  # base64 of "hello"
    ({"frames": ["not base64!"] * 3}, Reason.BAD_IMAGE),
    ({"frames": ["A" * 90_000] * 3}, Reason.TOO_LARGE),
    ({"frames": [1, 2, 3]}, Reason.BAD_IMAGE),
    ({"frames": "x"}, Reason.BAD_TYPE),
    ({"frames": None, "embedding": None}, Reason.MISSING_FIELD),
    ({"challenge": "wave"}, Reason.OUT_OF_RANGE),
    ({"challenge": None, "request_id": "r-1"}, Reason.MISSING_FIELD),
])
def test_invalid_frames(kw: dict[str, Any], reason: Reason) -> None:
    it = frames_item(**kw)
    if "frames" in kw and kw["frames"] is None:
        it.pop("frames", None)
    (r,) = dec("checkins", {"checkins": [it]}).rejected
    assert r.reason is reason


def test_frame_count_is_3_to_5() -> None:
    for n, ok in ((2, False), (3, True), (5, True), (6, False)):
        d = dec("checkins", {"checkins": [frames_item(frames=[_png()] * n)]})
        assert (len(d.items) == 1) is ok
        if not ok:
            assert d.rejected[0].reason is Reason.OUT_OF_RANGE


def test_request_checkin_carries_a_challenge() -> None:
    raw = encode_command(command_id=CID, ts=NOW, type=CommandType.REQUEST_CHECKIN,
                         params={"deadline_s": 900, "challenge": "blink"})
    assert orjson.loads(raw)["params"] == {"deadline_s": 900, "challenge": "blink"}
    with pytest.raises(ValueError):
        encode_command(command_id=CID, ts=NOW, type=CommandType.REQUEST_CHECKIN,
                       params={"deadline_s": 900, "challenge": "wave"})
