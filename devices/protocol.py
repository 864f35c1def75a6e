"""Device gateway protocol v1 (MQTT): topic parsing, payload decoding, command encoding.

The pure decode-and-validate stage of ingestion (no I/O). The contract is
`docs/device-protocol.md`; this module implements it exactly.

Decoding rules worth knowing (beyond the contract's tables):

- Whole-message rejections (`items == []`, one `Rejected` with `item=None`):
  `bad_topic`, `unknown_device` (only if a `device_known` hook is given),
  `too_large` (checked on the raw length, before parsing), `not_json`,
  `not_object`, `wrong_stream_key` (item streams: the object must have exactly
  the one stream key), `bad_type` (the stream key's value is not a list),
  `out_of_range` (empty list), `too_many_items` (more than `MAX_ITEMS`).
- `NaN`/`Infinity` literals and numbers that overflow a double (`1e999`) are
  not JSON, but common writers emit them (Python's `json.dumps`): orjson
  refuses them, so such a payload is parsed again with the stdlib parser and
  the value becomes a per-item `not_finite` (the message's valid items are
  kept). Nesting deeper than 1024 is `not_json`. Integers outside the 64-bit
  range are decoded as floats: a `seq` like that is `out_of_range`, a `ts`
  like that is `bad_type`.
- Items are validated one by one: valid items are kept, each invalid one is a
  `Rejected` with its index and the raw item. Unknown fields are ignored
  (forward compatibility). An optional field set to JSON `null` counts as
  absent; a required field set to `null` is `bad_type`.
- Within one message a repeated `seq` keeps the first valid item; the rest are
  counted in `Decoded.duplicates` (not rejected: the contract drops duplicates).
- `status` and `acks` carry one object (no list, no `seq`); an invalid one is a
  `Rejected` with the raw object as `item` and `index=None`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NoReturn
from uuid import UUID

import orjson

__all__ = [
    "EVENT_TYPES",
    "FIX_SOURCES",
    "FUTURE_TOLERANCE",
    "MAX_DETAIL_BYTES",
    "MAX_ITEMS",
    "MAX_PAYLOAD",
    "Ack",
    "Checkin",
    "CommandType",
    "Decoded",
    "DeviceEvent",
    "Fix",
    "Reason",
    "Rejected",
    "Status",
    "Stream",
    "Topic",
    "command_topic",
    "decode",
    "encode_command",
    "parse_topic",
    "subscription_topics",
]

MAX_PAYLOAD = 256 * 1024
MAX_ITEMS = 500
MAX_DETAIL_BYTES = 4 * 1024
FUTURE_TOLERANCE = timedelta(minutes=5)
SEQ_LIMIT = 2**63
_INF = math.inf
EMBEDDING_MIN = 128
EMBEDDING_MAX = 1024
NOTIFY_TEXT_MAX = 500


class Stream(StrEnum):
    """Uplink streams (the last topic level)."""

    FIXES = "fixes"
    EVENTS = "events"
    CHECKINS = "checkins"
    STATUS = "status"
    ACKS = "acks"


class Reason(StrEnum):
    """Machine-readable rejection codes of the contract."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    WRONG_STREAM_KEY = "wrong_stream_key"
    TOO_LARGE = "too_large"
    TOO_MANY_ITEMS = "too_many_items"
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    OUT_OF_RANGE = "out_of_range"
    NOT_FINITE = "not_finite"
    FUTURE_TIMESTAMP = "future_timestamp"
    BAD_TIMESTAMP = "bad_timestamp"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    EMBEDDING_LENGTH = "embedding_length"
    BAD_IMAGE = "bad_image"
    UNKNOWN_DEVICE = "unknown_device"
    BAD_TOPIC = "bad_topic"


class CommandType(StrEnum):
    """Downlink command types."""

    SET_INTERVAL = "set_interval"
    REQUEST_CHECKIN = "request_checkin"
    NOTIFY = "notify"


FIX_SOURCES = frozenset({"gps", "wifi", "cell", "beacon"})
EVENT_TYPES = frozenset(
    {
        "strap_open",
        "strap_closed",
        "case_open",
        "case_closed",
        "battery_low",
        "battery_critical",
        "charging_started",
        "charging_stopped",
        "power_off",
        "power_on",
        "gps_jamming",
        "beacon_lost",
        "beacon_found",
    }
)
CHECKIN_METHODS = frozenset({"face"})
CHALLENGES = frozenset({"turn_left", "turn_right", "blink", "smile"})
FRAMES_MIN = 3
FRAMES_MAX = 5
STATUS_STATES = frozenset({"online", "offline"})
ACK_RESULTS = frozenset({"ok", "error"})


# --------------------------------------------------------------------------- records


@dataclass(slots=True, frozen=True)
class Topic:
    """A parsed uplink topic."""

    serial: str
    stream: Stream


@dataclass(slots=True)
class Fix:
    """A validated location fix; `ts` is UTC-aware, numbers are floats."""

    seq: int
    ts: datetime
    lat: float
    lon: float
    acc: float
    src: str
    spd: float | None
    hdg: float | None
    bat: int | None


@dataclass(slots=True)
class DeviceEvent:
    """A validated device event."""

    seq: int
    ts: datetime
    type: str
    detail: dict[str, Any] | None


@dataclass(slots=True)
class Checkin:
    """A validated biometric check-in: camera `frames` (decoded JPEG/PNG bytes, the backend
    verifies them) or, from devices trusted for biometrics, an app-computed `embedding`
    (floats only) and `liveness` (the v1.0 form; then `frames` is None)."""

    seq: int
    ts: datetime
    method: str
    embedding: list[float]
    liveness: float | None
    request_id: str | None
    lat: float | None
    lon: float | None
    acc: float | None
    frames: list[bytes] | None = None
    challenge: str | None = None


@dataclass(slots=True)
class Status:
    """A validated connection status (retained, no seq)."""

    state: str
    ts: datetime | None
    fw: str | None
    bat: int | None


@dataclass(slots=True)
class Ack:
    """A validated command acknowledgement."""

    id: str
    ts: datetime | None
    result: str
    detail: str | None


@dataclass(slots=True)
class Rejected:
    """One rejection: the reason code, a human-readable detail, the raw item and its index.

    `item` and `index` are None for whole-message rejections; `index` is also
    None for the single object of a status or ack message.
    """

    reason: Reason
    detail: str
    item: object | None
    index: int | None


@dataclass(slots=True)
class Decoded:
    """The result of `decode`: valid items, rejections, in-message duplicate count."""

    topic: Topic | None
    items: list[Fix] | list[DeviceEvent] | list[Checkin] | list[Status] | list[Ack]
    rejected: list[Rejected]
    duplicates: int = 0


# --------------------------------------------------------------------------- topics

_SERIAL_RE = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
_is_serial = _SERIAL_RE.fullmatch
_UPLINK = {s.value: s for s in Stream}


def _norm_prefix(prefix: str) -> str:
    return prefix.rstrip("/")


def _parse_topic(topic: str, prefix: str) -> Topic | None:
    head = _norm_prefix(prefix) + "/devices/"
    if not topic.startswith(head):
        return None
    serial, sep, stream = topic[len(head) :].partition("/")
    if not sep or _is_serial(serial) is None:
        return None
    s = _UPLINK.get(stream)  # "commands" is downlink; extra levels never match
    return None if s is None else Topic(serial, s)


_TOPIC_CACHE: dict[tuple[str, str], Topic | None] = {}
_TOPIC_CACHE_MAX = 200_000


def parse_topic(topic: str, prefix: str = "pm/v1") -> Topic | None:
    """Parse `{prefix}/devices/{serial}/{stream}`; None if it is not a valid uplink topic.

    Results are memoised (bounded) since the set of device topics is small.
    """
    key = (topic, prefix)
    try:
        return _TOPIC_CACHE[key]
    except KeyError:
        pass
    t = _parse_topic(topic, prefix)
    if len(_TOPIC_CACHE) >= _TOPIC_CACHE_MAX:
        _TOPIC_CACHE.clear()
    _TOPIC_CACHE[key] = t
    return t


def command_topic(serial: str, prefix: str = "pm/v1") -> str:
    """The downlink topic of a device; ValueError for a serial outside the contract."""
    if _is_serial(serial) is None:
        raise ValueError(f"invalid device serial {serial!r}: must match [A-Za-z0-9_-]{{1,64}}")
    return f"{_norm_prefix(prefix)}/devices/{serial}/commands"


def subscription_topics(prefix: str) -> list[str]:
    """The uplink topic filters the backend subscribes to, one per stream."""
    p = _norm_prefix(prefix)
    return [f"{p}/devices/+/{s.value}" for s in Stream]


# --------------------------------------------------------------------------- validation helpers


class _Invalid(Exception):
    """Raised by validators; carries the reason and a human-readable detail."""

    __slots__ = ("detail", "reason")

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def _r(v: object) -> str:
    """A short repr for error details."""
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _tname(v: object) -> str:
    return "null" if v is None else type(v).__name__


_RFC3339_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_rfc3339 = _RFC3339_RE.fullmatch
_fromiso = datetime.fromisoformat
_fromts = datetime.fromtimestamp
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAST_MS = 2**42
_DIGITS_TO_9 = bytes.maketrans(b"0123456789", b"9999999999")
_FAST_SHAPES = frozenset(
    f"9999-99-99T99:99:99{frac}{tz}".encode()
    for frac in ["", *("." + "9" * k for k in range(1, 10))]
    for tz in ("Z", "+99:99", "-99:99")
)


def _bad_ts(
    name: str, v: object, why: str = "not an RFC 3339 date-time with Z or offset"
) -> NoReturn:
    raise _Invalid(Reason.BAD_TIMESTAMP, f"{name}: {_r(v)} {why}")


def _ts_str_slow(v: str, name: str) -> datetime:
    """The strict RFC 3339 path: lowercase t/z, space separator, leap second, errors."""
    m = _rfc3339(v)
    if m is None:
        _bad_ts(name, v)
    s = v.upper()
    leap = m.group(3) == "60"  # the leap second is read as :59.999999
    if leap:
        s = s[:17] + "59" + s[19:]
    try:
        dt = _fromiso(s)
    except ValueError as e:
        _bad_ts(name, v, f"is invalid ({e})")
    return dt.replace(microsecond=999999) if leap else dt


def _ts(v: object, limit: datetime, name: str = "ts") -> datetime:
    """Validate a timestamp (RFC 3339 string or int epoch ms) into a UTC-aware datetime."""
    if type(v) is str:
        # Fast path: the common shapes (digits mapped to 9) go straight to fromisoformat,
        # which checks the values; everything else takes the strict regex path.
        if v.isascii() and v.encode().translate(_DIGITS_TO_9) in _FAST_SHAPES:
            try:
                dt = _fromiso(v)
            except ValueError:
                dt = _ts_str_slow(v, name)
        else:
            dt = _ts_str_slow(v, name)
        if dt.tzinfo is not UTC:
            try:
                dt = dt.astimezone(UTC)
            except OverflowError:
                _bad_ts(name, v, "is outside the supported date range")
    elif type(v) is int:
        try:
            # Below 2^42 ms, float seconds still round to the exact millisecond.
            dt = _fromts(v / 1000, UTC) if 0 <= v < _FAST_MS else _EPOCH + timedelta(milliseconds=v)
        except (OverflowError, ValueError, OSError):
            _bad_ts(name, v, "epoch milliseconds outside the supported date range")
    else:
        raise _Invalid(
            Reason.BAD_TYPE,
            f"{name}: expected RFC 3339 string or integer epoch ms, got {_tname(v)}",
        )
    if dt > limit:
        raise _Invalid(
            Reason.FUTURE_TIMESTAMP,
            f"{name}: {dt.isoformat()} is more than 5 minutes ahead of the server clock",
        )
    return dt


def _bad_seq(v: object) -> NoReturn:
    # orjson decodes integers beyond 64 bits as floats: report those as out of range too.
    if type(v) is int or (type(v) is float and v.is_integer() and abs(v) >= SEQ_LIMIT):
        raise _Invalid(Reason.OUT_OF_RANGE, f"seq: {_r(v)} not in [0, 2^63)")
    raise _Invalid(Reason.BAD_TYPE, f"seq: expected integer, got {_tname(v)} {_r(v)}")


def _bad_num(name: str, v: object, rule: str) -> NoReturn:
    """Classify a number that failed its fast check (raises)."""
    t = type(v)
    if t is not float and t is not int:
        raise _Invalid(Reason.BAD_TYPE, f"{name}: expected number, got {_tname(v)} {_r(v)}")
    if t is float and not math.isfinite(v):  # type: ignore[arg-type]
        raise _Invalid(Reason.NOT_FINITE, f"{name}: {v!r} is not finite")
    raise _Invalid(Reason.OUT_OF_RANGE, f"{name}: {_r(v)} violates {rule}")


def _bad_int(name: str, v: object, rule: str) -> NoReturn:
    if type(v) is not int:
        raise _Invalid(Reason.BAD_TYPE, f"{name}: expected integer, got {_tname(v)} {_r(v)}")
    raise _Invalid(Reason.OUT_OF_RANGE, f"{name}: {_r(v)} violates {rule}")


def _bad_str(name: str, v: object, allowed: frozenset[str], reason: Reason) -> NoReturn:
    if type(v) is not str:
        raise _Invalid(Reason.BAD_TYPE, f"{name}: expected string, got {_tname(v)} {_r(v)}")
    raise _Invalid(reason, f"{name}: {_r(v)} is not one of {', '.join(sorted(allowed))}")


def _missing(name: str) -> NoReturn:
    raise _Invalid(Reason.MISSING_FIELD, f"{name}: required field is missing")


def _required(obj: dict[str, Any], name: str) -> Any:
    try:
        v = obj[name]
    except KeyError:
        _missing(name)
    if v is None:
        raise _Invalid(Reason.BAD_TYPE, f"{name}: required field is null")
    return v


def _not_object(what: str, v: object) -> _Invalid:
    return _Invalid(Reason.BAD_TYPE, f"{what}: expected JSON object, got {_tname(v)}")


def _position(obj: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """Optional lat/lon/acc of a check-in: lat and lon together, fix rules."""
    lat = obj.get("lat")
    lon = obj.get("lon")
    acc = obj.get("acc")
    if lat is None and lon is None:
        out_lat = out_lon = None
    else:
        if lat is None:
            _missing("lat")
        if lon is None:
            _missing("lon")
        if (type(lat) is not float and type(lat) is not int) or not -90.0 <= lat <= 90.0:
            _bad_num("lat", lat, "-90 <= lat <= 90")
        if (type(lon) is not float and type(lon) is not int) or not -180.0 <= lon <= 180.0:
            _bad_num("lon", lon, "-180 <= lon <= 180")
        out_lat, out_lon = float(lat), float(lon)
    if acc is None:
        return out_lat, out_lon, None
    if (type(acc) is not float and type(acc) is not int) or not 0.0 < acc <= 50000.0:
        _bad_num("acc", acc, "0 < acc <= 50000")
    return out_lat, out_lon, float(acc)


# --------------------------------------------------------------------------- item validators


class _Ctx:
    """Per-message check-in context: the enrolled embedding length, looked up lazily."""

    __slots__ = ("_emb_len", "_emb_len_done", "embedding_length", "serial")

    def __init__(self, serial: str, embedding_length: Callable[[str], int | None] | None) -> None:
        self.serial = serial
        self.embedding_length = embedding_length
        self._emb_len: int | None = None
        self._emb_len_done = False

    def expected_embedding_length(self) -> int | None:
        """The enrolled template length, looked up at most once per message."""
        if not self._emb_len_done:
            f = self.embedding_length
            self._emb_len = f(self.serial) if f is not None else None
            self._emb_len_done = True
        return self._emb_len


def _fix(it: Any, limit: datetime, ctx: _Ctx | None) -> Fix:
    """Validate one fix (hot path: checks are inlined)."""
    if type(it) is not dict:
        raise _not_object("item", it)
    try:
        seq = it["seq"]
        ts = it["ts"]
        lat = it["lat"]
        lon = it["lon"]
        acc = it["acc"]
    except KeyError as e:
        _missing(str(e.args[0]))
    if type(seq) is not int or not 0 <= seq < SEQ_LIMIT:
        _bad_seq(seq)
    dt = _ts(ts, limit)
    # Floats are the common case; ints (not bools) are accepted and converted.
    t = type(lat)
    if t is not float:
        if t is not int or not -90 <= lat <= 90:
            _bad_num("lat", lat, "-90 <= lat <= 90")
        lat = float(lat)
    elif not -90.0 <= lat <= 90.0:
        _bad_num("lat", lat, "-90 <= lat <= 90")
    t = type(lon)
    if t is not float:
        if t is not int or not -180 <= lon <= 180:
            _bad_num("lon", lon, "-180 <= lon <= 180")
        lon = float(lon)
    elif not -180.0 <= lon <= 180.0:
        _bad_num("lon", lon, "-180 <= lon <= 180")
    t = type(acc)
    if t is not float:
        if t is not int or not 0 < acc <= 50000:
            _bad_num("acc", acc, "0 < acc <= 50000")
        acc = float(acc)
    elif not 0.0 < acc <= 50000.0:
        _bad_num("acc", acc, "0 < acc <= 50000")
    src = it.get("src")
    if src is None:
        src = "gps"
    elif type(src) is not str or src not in FIX_SOURCES:
        _bad_str("src", src, FIX_SOURCES, Reason.OUT_OF_RANGE)
    spd = it.get("spd")
    if spd is not None:
        t = type(spd)
        if t is not float:
            if t is not int or spd < 0:
                _bad_num("spd", spd, "spd >= 0")
            spd = float(spd)
        elif not 0.0 <= spd < _INF:
            _bad_num("spd", spd, "spd >= 0")
    hdg = it.get("hdg")
    if hdg is not None:
        t = type(hdg)
        if t is not float:
            if t is not int or not 0 <= hdg < 360:
                _bad_num("hdg", hdg, "0 <= hdg < 360")
            hdg = float(hdg)
        elif not 0.0 <= hdg < 360.0:
            _bad_num("hdg", hdg, "0 <= hdg < 360")
    bat = it.get("bat")
    if bat is not None and (type(bat) is not int or not 0 <= bat <= 100):
        _bad_int("bat", bat, "0 <= bat <= 100")
    return Fix(seq, dt, lat, lon, acc, src, spd, hdg, bat)


def _event(it: Any, limit: datetime, ctx: _Ctx | None) -> DeviceEvent:
    """Validate one device event."""
    if type(it) is not dict:
        raise _not_object("item", it)
    seq = _required(it, "seq")
    if type(seq) is not int or not 0 <= seq < SEQ_LIMIT:
        _bad_seq(seq)
    dt = _ts(_required(it, "ts"), limit)
    typ = _required(it, "type")
    if type(typ) is not str or typ not in EVENT_TYPES:
        _bad_str("type", typ, EVENT_TYPES, Reason.UNKNOWN_EVENT_TYPE)
    detail = it.get("detail")
    if detail is not None:
        if type(detail) is not dict:
            raise _not_object("detail", detail)
        size = len(orjson.dumps(detail))
        if size > MAX_DETAIL_BYTES:
            raise _Invalid(
                Reason.TOO_LARGE, f"detail: {size} bytes serialised, at most {MAX_DETAIL_BYTES}"
            )
    return DeviceEvent(seq, dt, typ, detail)


def _embedding(v: Any, ctx: _Ctx | None) -> list[float]:
    """Validate a face embedding: a list of finite numbers of the enrolled length."""
    if type(v) is not list:
        raise _Invalid(Reason.BAD_TYPE, f"embedding: expected list of numbers, got {_tname(v)}")
    n = len(v)
    if not EMBEDDING_MIN <= n <= EMBEDDING_MAX:
        raise _Invalid(
            Reason.EMBEDDING_LENGTH,
            f"embedding: {n} values, expected {EMBEDDING_MIN} to {EMBEDDING_MAX}",
        )
    if not all(type(x) is float for x in v):
        for i, x in enumerate(v):
            if type(x) is not float and type(x) is not int:
                raise _Invalid(
                    Reason.BAD_TYPE, f"embedding[{i}]: expected number, got {_tname(x)} {_r(x)}"
                )
        v = [float(x) for x in v]
    if not math.isfinite(sum(v)):  # a non-finite element makes the sum non-finite
        for i, x in enumerate(v):
            if not math.isfinite(x):
                raise _Invalid(Reason.NOT_FINITE, f"embedding[{i}]: {x!r} is not finite")
    expected = None if ctx is None else ctx.expected_embedding_length()
    if expected is not None and n != expected:
        raise _Invalid(
            Reason.EMBEDDING_LENGTH,
            f"embedding: {n} values, the enrolled template has {expected}",
        )
    return v


def _checkin(it: Any, limit: datetime, ctx: _Ctx | None) -> Checkin:
    """Validate one biometric check-in."""
    if type(it) is not dict:
        raise _not_object("item", it)
    seq = _required(it, "seq")
    if type(seq) is not int or not 0 <= seq < SEQ_LIMIT:
        _bad_seq(seq)
    dt = _ts(_required(it, "ts"), limit)
    method = _required(it, "method")
    if type(method) is not str or method not in CHECKIN_METHODS:
        _bad_str("method", method, CHECKIN_METHODS, Reason.OUT_OF_RANGE)
    request_id = it.get("request_id")
    if request_id is not None and type(request_id) is not str:
        raise _Invalid(Reason.BAD_TYPE, f"request_id: expected string, got {_tname(request_id)}")
    if "frames" in it or "embedding" not in it:
        frames = _frames(_required(it, "frames"))
        challenge = it.get("challenge")
        if challenge is None and request_id is not None:
            raise _Invalid(Reason.MISSING_FIELD, "challenge: required with request_id")
        if challenge is not None and (type(challenge) is not str or challenge not in CHALLENGES):
            _bad_str("challenge", challenge, CHALLENGES, Reason.OUT_OF_RANGE)
        lat, lon, acc = _position(it)
        return Checkin(seq, dt, method, [], None, request_id, lat, lon, acc, frames, challenge)
    emb = _embedding(_required(it, "embedding"), ctx)
    liveness = _required(it, "liveness")
    t = type(liveness)
    if (t is not float and t is not int) or not 0.0 <= liveness <= 1.0:
        _bad_num("liveness", liveness, "0 <= liveness <= 1")
    lat, lon, acc = _position(it)
    return Checkin(seq, dt, method, emb, float(liveness), request_id, lat, lon, acc)


def _frames(v: Any) -> list[bytes]:
    """3 to 5 base64 JPEG or PNG images of at most 64 KiB each (headers parsed, not pixels)."""
    from devices.faces.images import ImageError, frame_bytes, sniff

    if type(v) is not list:
        raise _Invalid(Reason.BAD_TYPE, f"frames: expected list of base64 strings, got {_tname(v)}")
    if not FRAMES_MIN <= len(v) <= FRAMES_MAX:
        raise _Invalid(Reason.OUT_OF_RANGE,
                       f"frames: {len(v)} frames, expected {FRAMES_MIN} to {FRAMES_MAX}")
    out = []
    for i, f in enumerate(v):
        try:
            raw = frame_bytes(f)
            sniff(raw)
        except ImageError as e:
            raise _Invalid(Reason(e.reason), f"frames[{i}]: {e}") from None
        out.append(raw)
    return out


def _status(obj: dict[str, Any], limit: datetime) -> Status:
    """Validate a connection status object."""
    state = _required(obj, "state")
    if type(state) is not str or state not in STATUS_STATES:
        _bad_str("state", state, STATUS_STATES, Reason.OUT_OF_RANGE)
    ts = obj.get("ts")
    dt = None if ts is None else _ts(ts, limit)
    fw = obj.get("fw")
    if fw is not None and type(fw) is not str:
        raise _Invalid(Reason.BAD_TYPE, f"fw: expected string, got {_tname(fw)}")
    bat = obj.get("bat")
    if bat is not None and (type(bat) is not int or not 0 <= bat <= 100):
        _bad_int("bat", bat, "0 <= bat <= 100")
    return Status(state, dt, fw, bat)


def _ack(obj: dict[str, Any], limit: datetime) -> Ack:
    """Validate a command acknowledgement (`ts` and `detail` optional)."""
    cid = _required(obj, "id")
    if type(cid) is not str:
        raise _Invalid(Reason.BAD_TYPE, f"id: expected string, got {_tname(cid)}")
    if not cid:
        raise _Invalid(Reason.OUT_OF_RANGE, "id: must not be empty")
    ts = obj.get("ts")
    dt = None if ts is None else _ts(ts, limit)
    result = _required(obj, "result")
    if type(result) is not str or result not in ACK_RESULTS:
        _bad_str("result", result, ACK_RESULTS, Reason.OUT_OF_RANGE)
    detail = obj.get("detail")
    if detail is not None and type(detail) is not str:
        raise _Invalid(Reason.BAD_TYPE, f"detail: expected string, got {_tname(detail)}")
    return Ack(cid, dt, result, detail)


# Dispatch by identity: hashing a StrEnum member runs Enum.__hash__ in Python.
_FIXES, _EVENTS, _CHECKINS, _STATUS = Stream.FIXES, Stream.EVENTS, Stream.CHECKINS, Stream.STATUS


# --------------------------------------------------------------------------- decode


_NON_FINITE_RE = re.compile(rb"NaN|Infinity|[0-9][eE][+-]?[0-9]{3}")


def _int_as_orjson(s: str) -> int | float:
    """Integers as orjson decodes them: beyond the 64-bit range, a float."""
    v = int(s)
    return v if -(2**63) <= v < 2**64 else float(v)


def _loads(payload: bytes | bytearray | memoryview) -> Any:
    """orjson; for NaN/Infinity/overflowing numbers, the stdlib parser (ValueError if neither)."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        if _NON_FINITE_RE.search(payload) is None:
            raise
        first = e
    try:
        obj = json.loads(str(payload, "utf-8"), parse_int=_int_as_orjson)  # any buffer
        orjson.dumps(obj)  # what orjson refuses besides: lone surrogates
    except (ValueError, TypeError, RecursionError):
        raise first from None
    return obj


def _whole(topic: Topic | None, reason: Reason, detail: str) -> Decoded:
    return Decoded(topic, [], [Rejected(reason, detail, None, None)])


def decode(
    topic: str,
    payload: bytes | bytearray | memoryview,
    *,
    prefix: str = "pm/v1",
    now: datetime | None = None,
    embedding_length: Callable[[str], int | None] | None = None,
    device_known: Callable[[str], bool] | None = None,
) -> Decoded:
    """Decode and validate one uplink MQTT message. Never raises on any topic or payload.

    `now` (aware, default: current UTC) bounds timestamps at `now + 5 min`.
    `embedding_length(serial)` gives the enrolled template length (None: unknown),
    called at most once per message. `device_known(serial)` (optional) turns an
    unregistered serial into a whole-message `unknown_device`. Exceptions raised
    by these callbacks propagate (e.g. a database outage: do not acknowledge).
    """
    t = parse_topic(topic, prefix)
    if t is None:
        return _whole(None, Reason.BAD_TOPIC, f"topic {_r(topic)} is not a valid uplink topic")
    if device_known is not None and not device_known(t.serial):
        return _whole(t, Reason.UNKNOWN_DEVICE, f"device {t.serial!r} is not registered")
    size = len(payload)
    if size > MAX_PAYLOAD:
        return _whole(t, Reason.TOO_LARGE, f"payload is {size} bytes, at most {MAX_PAYLOAD}")
    try:
        obj = _loads(payload)
    except ValueError as e:
        return _whole(t, Reason.NOT_JSON, f"payload is not UTF-8 JSON: {e}")
    if type(obj) is not dict:
        return _whole(t, Reason.NOT_OBJECT, f"payload is a JSON {_tname(obj)}, not an object")

    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    limit = now + FUTURE_TOLERANCE
    stream = t.stream

    validate: Callable[[Any, datetime, _Ctx | None], Any]
    if stream is _FIXES:
        key, validate = "fixes", _fix
    elif stream is _EVENTS:
        key, validate = "events", _event
    elif stream is _CHECKINS:
        key, validate = "checkins", _checkin
    else:
        try:
            if stream is _STATUS:
                return Decoded(t, [_status(obj, limit)], [])
            return Decoded(t, [_ack(obj, limit)], [])
        except _Invalid as e:
            return Decoded(t, [], [Rejected(e.reason, e.detail, obj, None)])
        except Exception as e:  # pragma: no cover - defensive, must never happen
            return Decoded(t, [], [Rejected(Reason.BAD_TYPE, f"unexpected: {e!r}", obj, None)])

    if len(obj) != 1 or key not in obj:
        keys = ", ".join(_r(k) for k in list(obj)[:5])
        return _whole(
            t, Reason.WRONG_STREAM_KEY, f"expected exactly the key {key!r}, got {{{keys}}}"
        )
    raw = obj[key]
    if type(raw) is not list:
        return _whole(t, Reason.BAD_TYPE, f"{key}: expected a list, got {_tname(raw)}")
    n = len(raw)
    if n == 0:
        return _whole(t, Reason.OUT_OF_RANGE, f"{key}: empty list, expected 1 to {MAX_ITEMS} items")
    if n > MAX_ITEMS:
        return _whole(t, Reason.TOO_MANY_ITEMS, f"{key}: {n} items, at most {MAX_ITEMS}")

    ctx = _Ctx(t.serial, embedding_length) if validate is _checkin else None
    items: list[Any] = []
    rejected: list[Rejected] = []
    seen: set[int] = set()
    duplicates = 0
    for i, it in enumerate(raw):
        try:
            v = validate(it, limit, ctx)
        except _Invalid as e:
            rejected.append(Rejected(e.reason, e.detail, it, i))
            continue
        except Exception as e:  # pragma: no cover - defensive, must never happen
            rejected.append(Rejected(Reason.BAD_TYPE, f"unexpected: {e!r}", it, i))
            continue
        s = v.seq
        if s in seen:
            duplicates += 1
        else:
            seen.add(s)
            items.append(v)
    return Decoded(t, items, rejected, duplicates)


# --------------------------------------------------------------------------- downlink


def _rfc3339_utc(ts: datetime) -> str:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("ts must be timezone-aware")
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int_param(params: dict[str, Any], name: str, lo: int, hi: int) -> None:
    v = params[name]
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")


def _check_params(ctype: CommandType, params: dict[str, Any]) -> None:
    if type(params) is not dict:
        raise ValueError(f"params must be a dict, got {type(params).__name__}")
    if ctype is CommandType.SET_INTERVAL:
        allowed, required = {"fix_interval_s", "upload_interval_s"}, set[str]()
        if not params:
            raise ValueError("set_interval needs fix_interval_s and/or upload_interval_s")
    elif ctype is CommandType.REQUEST_CHECKIN:
        allowed, required = {"deadline_s", "challenge"}, {"deadline_s"}
    else:
        allowed, required = {"text", "vibrate"}, {"text"}
    unknown = params.keys() - allowed
    if unknown:
        raise ValueError(f"unknown {ctype.value} params: {', '.join(sorted(unknown))}")
    missing = required - params.keys()
    if missing:
        raise ValueError(f"missing {ctype.value} params: {', '.join(sorted(missing))}")
    if ctype is CommandType.SET_INTERVAL:
        for name in params:
            _int_param(params, name, 5, 3600)
    elif ctype is CommandType.REQUEST_CHECKIN:
        _int_param(params, "deadline_s", 60, 3600)
        if "challenge" in params and params["challenge"] not in CHALLENGES:
            raise ValueError(f"challenge must be one of {sorted(CHALLENGES)}")
    else:
        text = params["text"]
        if type(text) is not str or len(text) > NOTIFY_TEXT_MAX:
            raise ValueError(f"text must be a string of at most {NOTIFY_TEXT_MAX} characters")
        if "vibrate" in params and type(params["vibrate"]) is not bool:
            raise ValueError(f"vibrate must be a bool, got {params['vibrate']!r}")


def encode_command(
    *, command_id: UUID, ts: datetime, type: CommandType, params: dict[str, Any]
) -> bytes:
    """Encode a downlink command as JSON bytes; ValueError if the params break the contract."""
    ctype = CommandType(type)  # also accepts the plain string value
    if not isinstance(command_id, UUID):
        raise ValueError(f"command_id must be a UUID, got {command_id!r}")
    _check_params(ctype, params)
    return orjson.dumps(
        {"id": str(command_id), "ts": _rfc3339_utc(ts), "type": ctype.value, "params": params}
    )
