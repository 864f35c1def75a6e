"""Biometric data out of dead letters and logs.

A rejected check-in must not keep the person's face embedding or camera frames where
admins (dead letters) or operators (logs) read them. `redact_payload` replaces every
biometric field of a JSON payload by a marker with its size; a payload that is not JSON
on a check-in topic is replaced as a whole. `RedactingFilter` does the same to log
records' text (long float lists and base64 runs after a biometric key).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson

#: Keys whose values are biometric data.
BIOMETRIC_KEYS = frozenset({"embedding", "embeddings", "frames", "frame", "template", "photo",
                            "photos", "image", "images", "face"})


def _redacted(value: Any) -> dict[str, Any]:
    size = len(value) if isinstance(value, list | str | dict) else 1
    return {"redacted": True, "size": size}


def redact_value(value: Any) -> tuple[Any, bool]:
    """`value` with biometric fields replaced, and whether anything was."""
    if isinstance(value, dict):
        out, hit = {}, False
        for k, v in value.items():
            if isinstance(k, str) and k.lower() in BIOMETRIC_KEYS:
                out[k], hit = _redacted(v), True
            else:
                out[k], sub = redact_value(v)
                hit = hit or sub
        return out, hit
    if isinstance(value, list):
        items = [redact_value(v) for v in value]
        return [v for v, _ in items], any(h for _, h in items)
    return value, False


def redact_payload(topic: str, payload: bytes) -> bytes:
    """The payload to keep: biometric fields replaced (JSON), or all of it for a check-in
    payload that does not parse."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        if "checkin" in topic.lower() or b"embedding" in payload or b"frames" in payload:
            return orjson.dumps({"redacted": True, "size": len(payload),
                                 "note": "unparsable check-in payload not kept"})
        return payload
    clean, hit = redact_value(doc)
    return orjson.dumps(clean) if hit else payload


_KEYS_RE = "|".join(sorted(BIOMETRIC_KEYS))
_KEYED = re.compile(
    r"""(['"]?(?:""" + _KEYS_RE + r""")['"]?\s*[:=]\s*)"""
    r"""(\[[^\]]{40,}\]|['"][A-Za-z0-9+/=_-]{40,}['"])""",
    re.IGNORECASE,
)
_FLOATS = re.compile(r"\[(?:\s*-?\d+\.\d+(?:[eE]-?\d+)?\s*,){15,}[^\]]*\]")


def redact_text(text: str) -> str:
    text = _KEYED.sub(lambda m: m.group(1) + "<redacted>", text)
    return _FLOATS.sub("[<redacted floats>]", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with biometric values removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:
            return True
        clean = redact_text(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True
