"""What a report says, as plain data, and the hash that identifies it.

Two SHA-256 figures identify a report (see docs/api.md, "Reports"):

- the **content hash**, printed in every page's footer: SHA-256 of the canonical JSON
  (sorted keys, no spaces, UTF-8) of the `Report` below: everything the report states,
  including its id, language and generation time, but not the PDF bytes (a document
  cannot contain the hash of its own bytes);
- the **file hash**: SHA-256 of the PDF bytes exactly as served.

Both are written to the audit log when the report is made; `GET /api/v1/reports/verify`
finds a report by either: the footer's hash for a printed copy, the file's for an
electronic one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Fix:
    ts: str  # RFC 3339 UTC
    lat: float
    lon: float
    acc: float
    src: str = "gps"
    evidence: bool = False


@dataclass(frozen=True)
class Event:
    ts: str
    what: str  # a message key of the timeline (see strings.py) or free text
    detail: str = ""


@dataclass(frozen=True)
class Place:
    """A zone as drawn: a GeoJSON Polygon/MultiPolygon or a circle."""

    name: str
    kind: str  # inclusion | exclusion
    geometry: dict[str, Any] | None = None
    circle: dict[str, Any] | None = None


@dataclass(frozen=True)
class Report:
    report_id: str
    kind: str  # alert | case
    lang: str
    generated_at: str
    generated_by: str
    subject: dict[str, str]  # full_name, iin, birth_date
    case: dict[str, str]  # id, court_order_ref, starts_on, ends_on, risk_level, officer, timezone
    period: dict[str, str]  # from, to
    summary: dict[str, str] = field(default_factory=dict)  # the alert: type, severity, ...
    timeline: list[Event] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)  # the track (time order)
    zones: list[Place] = field(default_factory=list)
    devices: list[dict[str, str]] = field(default_factory=list)  # serial, kind, battery, ...

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")

    def content_sha256(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


def file_sha256(pdf: bytes) -> str:
    return hashlib.sha256(pdf).hexdigest()
