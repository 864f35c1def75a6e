"""Notifications: who hears about an alert, and the record of every delivery.

A `Notifier` sends one JSON payload somewhere. `WebhookNotifier` POSTs it with an
HMAC-SHA256 signature and retries transient failures with exponential backoff;
`LogNotifier` writes it to the log. `Route`s (configuration) say which alert types,
severities and events go to which notifier.

`dispatch_notifications` is the scheduler's job: it reads the alert timeline as an
outbox (`opened` and `escalated` rows of the last `lookback`), claims one
`notification_deliveries` row per (alert, notifier, event, level) (a unique index, so
an event is never announced twice to the same notifier), sends outside any
transaction, and records the outcome; failed deliveries are retried in later runs
until `max_total_attempts`.

Webhook request: ``POST url`` with body ``{"event", "alert": {...}, "recipient_id",
"level", "sent_at"}`` and headers ``X-Probation-Event``, ``X-Probation-Timestamp``
(Unix seconds) and ``X-Probation-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<body>" with the shared secret>``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
import orjson
import psycopg

from alerts.models import Severity

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

SEVERITY_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}
EVENTS = ("opened", "escalated")


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one `Notifier.send` (after its own retries)."""

    ok: bool
    attempts: int
    error: str | None = None
    status_code: int | None = None
    permanent: bool = False  # a failure that retrying will not fix (4xx)


class Notifier(Protocol):
    """Sends one alert payload to one target."""

    name: str
    target: str

    def send(self, payload: Mapping[str, Any]) -> Delivery: ...


def _dumps(payload: Mapping[str, Any]) -> bytes:
    return orjson.dumps(payload, default=str)


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The signature header value: ``sha256=`` + hex HMAC-SHA256 of ``"<ts>.<body>"``."""
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str | bytes, timestamp: int | str, body: bytes, signature: str,
    *, max_age_s: float | None = 300.0, now: float | None = None,
) -> bool:
    """Check a webhook signature (receivers and tests); rejects stale timestamps."""
    if max_age_s is not None:
        try:
            age = (time.time() if now is None else now) - int(timestamp)
        except ValueError:
            return False
        if abs(age) > max_age_s:
            return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class LogNotifier:
    """Writes the alert to the application log (always succeeds)."""

    def __init__(self, *, name: str = "log", logger: logging.Logger | None = None) -> None:
        self.name = name
        self.target = "log"
        self._log = logger or log

    def send(self, payload: Mapping[str, Any]) -> Delivery:
        alert = payload.get("alert", {})
        self._log.warning(
            "ALERT %s %s severity=%s case=%s level=%s id=%s",
            payload.get("event"), alert.get("type"), alert.get("severity"),
            alert.get("case_id"), payload.get("level"), alert.get("id"),
        )
        return Delivery(ok=True, attempts=1)


class WebhookNotifier:
    """POSTs the alert JSON, HMAC-signed; retries timeouts, 429 and 5xx with backoff."""

    def __init__(
        self, *, url: str, secret: str, name: str = "webhook", timeout_s: float = 5.0,
        max_attempts: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 10.0,
        client: httpx.Client | None = None, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not secret:
            raise ValueError("a webhook notifier needs a secret to sign with")
        self.name = name
        self.target = url
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._client = client
        self._sleep = sleep

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))

    def send(self, payload: Mapping[str, Any]) -> Delivery:
        body = _dumps(payload)
        client = self._client or httpx.Client(timeout=self.timeout_s)
        error: str | None = None
        status: int | None = None
        try:
            for attempt in range(1, self.max_attempts + 1):
                ts = int(time.time())
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": "probation-monitoring",
                    "X-Probation-Event": str(payload.get("event", "")),
                    "X-Probation-Timestamp": str(ts),
                    "X-Probation-Signature": sign(self.secret, ts, body),
                }
                try:
                    resp = client.post(self.url, content=body, headers=headers)
                    status = resp.status_code
                    if 200 <= status < 300:
                        return Delivery(ok=True, attempts=attempt, status_code=status)
                    error = f"HTTP {status}"
                    if 400 <= status < 500 and status not in (408, 429):
                        return Delivery(False, attempt, error, status, permanent=True)
                except httpx.HTTPError as e:
                    error = f"{type(e).__name__}: {e}"[:500]
                    status = None
                if attempt < self.max_attempts:
                    self._sleep(self.delay(attempt))
            return Delivery(ok=False, attempts=self.max_attempts, error=error, status_code=status)
        finally:
            if self._client is None:
                client.close()


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True, slots=True)
class Route:
    """Alerts matching all given filters go to `notifier` (None = no filter)."""

    notifier: str
    types: frozenset[str] | None = None
    min_severity: Severity | None = None
    events: frozenset[str] | None = None

    def matches(self, *, type: str, severity: str, event: str) -> bool:
        if self.types is not None and type not in self.types:
            return False
        if self.events is not None and event not in self.events:
            return False
        if self.min_severity is not None:
            return SEVERITY_RANK[Severity(severity)] >= SEVERITY_RANK[self.min_severity]
        return True


def parse_routes(raw: Iterable[Mapping[str, Any]]) -> list[Route]:
    """Routes from configuration: ``[{"notifier", "types"?, "min_severity"?, "events"?}]``."""
    out: list[Route] = []
    for i, r in enumerate(raw):
        if not isinstance(r, Mapping) or not isinstance(r.get("notifier"), str):
            raise ValueError(f"notify route {i}: needs a 'notifier' name")
        unknown = set(r) - {"notifier", "types", "min_severity", "events"}
        if unknown:
            raise ValueError(f"notify route {i}: unknown field {sorted(unknown)[0]!r}")
        events = r.get("events")
        if events is not None and not set(events) <= set(EVENTS):
            raise ValueError(f"notify route {i}: events must be among {EVENTS}")
        sev = r.get("min_severity")
        out.append(Route(
            notifier=r["notifier"],
            types=frozenset(r["types"]) if r.get("types") is not None else None,
            min_severity=Severity(sev) if sev is not None else None,
            events=frozenset(events) if events is not None else None,
        ))
    return out


def build_notifiers(
    *, webhook_url: str | None, webhook_secret: str | None, timeout_s: float = 5.0,
    max_attempts: int = 3, backoff_s: float = 0.5,
) -> dict[str, Notifier]:
    """The configured notifiers by name: always `log`, `webhook` when a URL is set."""
    out: dict[str, Notifier] = {"log": LogNotifier()}
    if webhook_url:
        if not webhook_secret:
            raise ValueError("PROBATION_WEBHOOK_SECRET is required with PROBATION_WEBHOOK_URL")
        out["webhook"] = WebhookNotifier(
            url=webhook_url, secret=webhook_secret, timeout_s=timeout_s,
            max_attempts=max_attempts, backoff_s=backoff_s,
        )
    return out


# --------------------------------------------------------------------------- dispatch


@dataclass(slots=True)
class DispatchResult:
    delivered: int = 0
    failed: int = 0
    retrying: int = 0
    by_notifier: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "failed": self.failed, "retrying": self.retrying,
                "by_notifier": self.by_notifier}


# Only the events some active route still has to announce: one that matches the event
# and has no delivery row for its notifier yet. (Fetching every `opened`/`escalated` event
# of the lookback on every run made each run's memory and time grow with the alerts of
# the last 24 h: the scheduler's RSS crept up through the soak.)
_PENDING_SQL = """
WITH routes AS (
    SELECT r->>'notifier' AS notifier, r->'types' AS types, r->'events' AS events,
           (r->>'min_rank')::int AS min_rank
    FROM jsonb_array_elements(%(routes)s::jsonb) AS r
)
SELECT e.alert_id, e.kind, coalesce((e.data->>'level')::int, 0) AS level,
       e.data->>'supervisor_id' AS supervisor_id,
       a.case_id, a.device_id, a.zone_id, a.type, a.severity, a.status, a.started_at,
       a.ended_at, a.escalation_level, a.evidence, a.late, a.inferred, a.created_at,
       c.officer_id
FROM alert_events e
JOIN alerts a ON a.id = e.alert_id
JOIN cases c ON c.id = a.case_id
WHERE e.kind IN ('opened', 'escalated') AND e.at > %(since)s AND e.at <= %(now)s
  AND EXISTS (
    SELECT 1 FROM routes r
    WHERE (r.types IS NULL OR r.types ? a.type)
      AND (r.events IS NULL OR r.events ? e.kind)
      AND (r.min_rank IS NULL
           OR array_position(%(severities)s::text[], a.severity) - 1 >= r.min_rank)
      AND NOT EXISTS (
        SELECT 1 FROM notification_deliveries d
        WHERE d.alert_id = e.alert_id AND d.notifier = r.notifier AND d.event = e.kind
          AND d.level = coalesce((e.data->>'level')::int, 0)))
ORDER BY e.id
"""


def _routes_json(routes: Sequence[Route]) -> str:
    """The routes for `_PENDING_SQL` (absent keys: no filter)."""
    out: list[dict[str, Any]] = []
    for r in routes:
        d: dict[str, Any] = {"notifier": r.notifier}
        if r.types is not None:
            d["types"] = sorted(r.types)
        if r.events is not None:
            d["events"] = sorted(r.events)
        if r.min_severity is not None:
            d["min_rank"] = SEVERITY_RANK[r.min_severity]
        out.append(d)
    return orjson.dumps(out).decode()

_RETRY_SQL = """
SELECT d.id, d.alert_id, d.notifier, d.event, d.level, d.attempts,
       a.case_id, a.device_id, a.zone_id, a.type, a.severity, a.status, a.started_at,
       a.ended_at, a.escalation_level, a.evidence, a.late, a.inferred, a.created_at,
       c.officer_id,
       (SELECT e.data->>'supervisor_id' FROM alert_events e WHERE e.alert_id = a.id
         AND e.kind = 'escalated' AND coalesce((e.data->>'level')::int, 0) = d.level
         ORDER BY e.id DESC LIMIT 1)
FROM notification_deliveries d
JOIN alerts a ON a.id = d.alert_id
JOIN cases c ON c.id = a.case_id
WHERE d.notifier = ANY(%(notifiers)s)
  AND ((d.status = 'retrying' AND d.next_attempt_at <= %(now)s)
       OR (d.status = 'sending' AND d.created_at < %(stale)s))
ORDER BY d.id
LIMIT 1000
"""


def _payload(
    *, event: str, level: int, alert_id: Any, row: Sequence[Any], supervisor_id: Any, now: datetime
) -> dict[str, Any]:
    (case_id, device_id, zone_id, type_, severity, status, started_at, ended_at, esc_level,
     evidence, late, inferred, created_at, officer_id) = row
    recipient = supervisor_id if event == "escalated" and supervisor_id else officer_id
    return {
        "event": event,
        "level": level,
        "recipient_id": str(recipient) if recipient else None,
        "sent_at": now.isoformat(),
        "alert": {
            "id": str(alert_id), "case_id": str(case_id),
            "device_id": str(device_id) if device_id else None,
            "zone_id": str(zone_id) if zone_id else None,
            "type": type_, "severity": severity, "status": status,
            "started_at": started_at.isoformat(),
            "ended_at": ended_at.isoformat() if ended_at else None,
            "escalation_level": esc_level, "evidence": evidence, "late": late,
            "inferred": inferred, "created_at": created_at.isoformat(),
            "officer_id": str(officer_id),
        },
    }


def dispatch_notifications(
    conn: Conn,
    *,
    now: datetime,
    notifiers: Mapping[str, Notifier],
    routes: Sequence[Route],
    lookback: timedelta = timedelta(hours=24),
    max_total_attempts: int = 8,
    retry_base: timedelta = timedelta(seconds=30),
) -> DispatchResult:
    """Announce new `opened`/`escalated` timeline events and retry failed deliveries.

    Commits on `conn` (claims before sending, outcomes after), so that no HTTP call
    runs inside an open transaction.
    """
    result = DispatchResult()
    active = [r for r in routes if r.notifier in notifiers]
    if not active:
        return result
    jobs: list[tuple[int, str, dict[str, Any], int]] = []  # delivery id, notifier, payload, attempts
    severities = [sev.value for sev, _ in sorted(SEVERITY_RANK.items(), key=lambda kv: kv[1])]
    for r in conn.execute(_PENDING_SQL, {
        "since": now - lookback, "now": now, "routes": _routes_json(active),
        "severities": severities,
    }).fetchall():
        alert_id, event, level, supervisor_id = r[0], r[1], int(r[2]), r[3]
        rest = r[4:]
        names = sorted({
            rt.notifier for rt in active if rt.matches(type=rest[3], severity=rest[4], event=event)
        })
        for name in names:
            claimed = conn.execute(
                "INSERT INTO notification_deliveries (alert_id, notifier, target, status, event,"
                " level, created_at) VALUES (%s, %s, %s, 'sending', %s, %s, %s)"
                " ON CONFLICT DO NOTHING RETURNING id",
                (alert_id, name, notifiers[name].target, event, level, now),
            ).fetchone()
            if claimed is not None:
                payload = _payload(event=event, level=level, alert_id=alert_id, row=rest,
                                   supervisor_id=supervisor_id, now=now)
                jobs.append((claimed[0], name, payload, 0))
    for r in conn.execute(_RETRY_SQL, {"notifiers": list(notifiers), "now": now,
                                        "stale": now - timedelta(minutes=10)}).fetchall():
        did, alert_id, name, event, level, attempts = r[:6]
        payload = _payload(event=event, level=level, alert_id=alert_id, row=r[6:20],
                           supervisor_id=r[20], now=now)
        conn.execute("UPDATE notification_deliveries SET status = 'sending' WHERE id = %s", (did,))
        jobs.append((did, name, payload, attempts))
    conn.commit()
    for did, name, payload, before in jobs:
        try:
            out = notifiers[name].send(payload)
        except Exception as e:  # a notifier bug must not stop the others
            log.exception("notifier %s failed", name)
            out = Delivery(ok=False, attempts=1, error=f"{type(e).__name__}: {e}"[:500])
        attempts = before + out.attempts
        if out.ok:
            status, next_at = "delivered", None
            result.delivered += 1
            result.by_notifier[name] = result.by_notifier.get(name, 0) + 1
        elif out.permanent or attempts >= max_total_attempts:
            status, next_at = "failed", None
            result.failed += 1
        else:
            status = "retrying"
            next_at = now + retry_base * 2 ** min(10, max(0, attempts - 1))
            result.retrying += 1
        conn.execute(
            "UPDATE notification_deliveries SET status = %s, attempts = %s, last_error = %s,"
            " delivered_at = %s, next_attempt_at = %s WHERE id = %s",
            (status, attempts, out.error, now if out.ok else None, next_at, did),
        )
        conn.commit()
    return result
