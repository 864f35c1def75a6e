"""Biometric fields never reach dead letters or logs."""

from __future__ import annotations

import logging

import orjson

from devices.redact import RedactingFilter, redact_payload


def test_embeddings_and_frames_are_replaced_by_their_size() -> None:
    doc = {"items": [{"method": "face", "embedding": [0.25] * 128, "liveness": 0.9},
                     {"frames": ["QUJD" * 40] * 3, "challenge": "blink"}]}
    out = orjson.loads(redact_payload("pm/v1/devices/P1/checkins", orjson.dumps(doc)))
    assert out["items"][0]["embedding"] == {"redacted": True, "size": 128}
    assert out["items"][0]["liveness"] == 0.9
    assert out["items"][1]["frames"] == {"redacted": True, "size": 3}
    assert out["items"][1]["challenge"] == "blink"
    fixes = orjson.dumps({"items": [{"lat": 1.0}]})
    assert redact_payload("pm/v1/devices/P1/fixes", fixes) == fixes


def test_an_unparsable_checkin_is_not_kept() -> None:
    raw = b'{"items": [{"embedding": [0.1, 0.2,'
    out = orjson.loads(redact_payload("pm/v1/devices/P1/checkins", raw))
    assert out["redacted"] is True and b"0.1" not in orjson.dumps(out)


def test_log_records_lose_embeddings() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "bad item %r",
                               ({"embedding": [0.123456] * 64},), None)
    RedactingFilter().filter(record)
    assert "0.123456" not in record.getMessage()
