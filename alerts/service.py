"""Where an alert is born: `open_episode` is the only product code that inserts an alert.

Open, update and close the alert of a violation episode (one alert per episode). The
callers: ingest's after-store stages (`probation.runtime.workers.build_ingestion` lists them:
zone episodes in `devices.geofencing`, device events in `devices.event_alerts`, failed
check-ins in `devices.checkins`, short silences in `devices.scheduled.SilenceGaps`) and
the scheduler's rules (`devices.scheduled`, `alerts.scheduled`).

Used inside the caller's transaction (the ingest batch, a scheduler run) on a psycopg
connection; nothing here commits. Dedup happens before an alert is created: an open
episode for the same (case, type, zone, device) is updated instead of a second alert,
and the episode key (its subject and start time) makes re-evaluation idempotent.
`pg_notify('alerts', id)` tells listeners (the SSE stream, notifiers) after commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from alerts.models import DEFAULT_SEVERITY, AlertType, Severity

NIL = uuid.UUID(int=0)


def episode_key(*, subject: uuid.UUID | str | None, started_at: datetime) -> str:
    """The stable name of an episode: what it is about and when it started."""
    return f"{subject or '-'}@{started_at.isoformat()}"


def _dumps(value: Any) -> Jsonb:
    return Jsonb(value, dumps=lambda v: orjson.dumps(v, default=str).decode())


@dataclass(slots=True, frozen=True)
class EpisodeResult:
    alert_id: uuid.UUID
    created: bool


def open_episode(
    conn: psycopg.Connection[Any],
    *,
    case_id: uuid.UUID,
    type: AlertType,
    started_at: datetime,
    evidence: dict[str, Any],
    device_id: uuid.UUID | None = None,
    zone_id: uuid.UUID | None = None,
    severity: Severity | None = None,
    late: bool = False,
    delay_s: float | None = None,
    inferred: bool = False,
    ended_at: datetime | None = None,
) -> EpisodeResult:
    """Open the episode's alert, or update the one already open for the same subject.

    With `ended_at` the episode is recorded closed at once (inferred crossings, late
    episodes that already ended).
    """
    sev = severity or DEFAULT_SEVERITY[type]
    if inferred:
        sev = Severity.HIGH
    key = episode_key(subject=zone_id or device_id, started_at=started_at)
    existing = conn.execute(
        "SELECT id FROM alerts WHERE case_id = %s AND type = %s AND episode_key = %s",
        (case_id, type.value, key),
    ).fetchone()
    if existing is not None:
        return EpisodeResult(existing[0], False)
    if ended_at is None:
        row = conn.execute(
            "SELECT id FROM alerts WHERE case_id = %s AND type = %s AND episode_open"
            " AND coalesce(zone_id, %s) = %s AND coalesce(device_id, %s) = %s FOR UPDATE",
            (case_id, type.value, NIL, zone_id or NIL, NIL, device_id or NIL),
        ).fetchone()
        if row is not None:
            update_episode(conn, alert_id=row[0], evidence=evidence)
            return EpisodeResult(row[0], False)
    if zone_id is not None:
        again = _reopen(conn, case_id=case_id, type=type, zone_id=zone_id, device_id=device_id,
                        started_at=started_at, evidence=evidence, ended_at=ended_at)
        if again is not None:
            return EpisodeResult(again, False)
    alert_id = uuid.uuid4()
    inserted = conn.execute(
        "INSERT INTO alerts (id, case_id, device_id, zone_id, type, severity, episode_key,"
        " episode_open, started_at, ended_at, evidence, late, delay_s, inferred)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING id",
        (alert_id, case_id, device_id, zone_id, type.value, sev.value, key, ended_at is None,
         started_at, ended_at, _dumps(evidence), late, delay_s, inferred),
    ).fetchone()
    if inserted is None:  # a concurrent writer opened it first
        again = conn.execute(
            "SELECT id FROM alerts WHERE case_id = %s AND type = %s AND episode_key = %s",
            (case_id, type.value, key),
        ).fetchone()
        if again is None:
            raise RuntimeError("alert insert conflicted but no alert found")
        return EpisodeResult(again[0], False)
    data: dict[str, Any] = {"type": type.value, "severity": sev.value, "started_at": started_at}
    if late:
        data["late"] = True
        data["delay_s"] = delay_s
    if inferred:
        data["inferred"] = True
    _timeline(conn, alert_id, "opened", data)
    if ended_at is not None:
        _timeline(conn, alert_id, "episode_closed", {"ended_at": ended_at})
    conn.execute("SELECT pg_notify('alerts', %s)", (str(alert_id),))
    return EpisodeResult(alert_id, True)


#: A re-violation of the same zone this soon after the close reopens the alert.
REOPEN_WITHIN = timedelta(minutes=10)


def _reopen(
    conn: psycopg.Connection[Any], *, case_id: uuid.UUID, type: AlertType, zone_id: uuid.UUID,
    device_id: uuid.UUID | None, started_at: datetime, evidence: dict[str, Any],
    ended_at: datetime | None,
) -> uuid.UUID | None:
    """One visit = one alert: the same zone violated again within `REOPEN_WITHIN` of the
    close of its last (unresolved) alert reopens that alert with a timeline entry."""
    row = conn.execute(
        "SELECT id, ended_at FROM alerts WHERE case_id = %s AND type = %s AND zone_id = %s"
        " AND coalesce(device_id, %s) = %s AND NOT episode_open AND status <> 'resolved'"
        " AND ended_at >= %s AND started_at <= %s ORDER BY ended_at DESC LIMIT 1 FOR UPDATE",
        (case_id, type.value, zone_id, NIL, device_id or NIL, started_at - REOPEN_WITHIN,
         started_at),
    ).fetchone()
    if row is None:
        return None
    alert_id, prev_end = row
    kept = {k: v for k, v in evidence.items() if k != "raised_by"}
    conn.execute(
        "UPDATE alerts SET episode_open = %s, ended_at = %s, evidence = evidence || %s"
        " WHERE id = %s",
        (ended_at is None, ended_at, _dumps(kept), alert_id),
    )
    data: dict[str, Any] = {"started_at": started_at, "previous_ended_at": prev_end}
    if "raised_by" in evidence:
        data["raised_by"] = evidence["raised_by"]
    _timeline(conn, alert_id, "reopened", data)
    if ended_at is not None:
        _timeline(conn, alert_id, "episode_closed", {"ended_at": ended_at})
    conn.execute("SELECT pg_notify('alerts', %s)", (str(alert_id),))
    return alert_id  # type: ignore[no-any-return]


def update_episode(
    conn: psycopg.Connection[Any], *, alert_id: uuid.UUID, evidence: dict[str, Any]
) -> None:
    """Merge the latest evidence into an open episode's alert (no new alert, no timeline row)."""
    conn.execute(
        "UPDATE alerts SET evidence = evidence || %s WHERE id = %s",
        (_dumps(evidence), alert_id),
    )
    conn.execute("SELECT pg_notify('alerts', %s)", (str(alert_id),))


@dataclass(slots=True, frozen=True)
class EpisodeUpdate:
    """New evidence for the open episode of (case, type, zone, device)."""

    case_id: uuid.UUID
    type: AlertType
    zone_id: uuid.UUID | None
    device_id: uuid.UUID | None
    evidence: dict[str, Any]


def update_episodes(conn: psycopg.Connection[Any], updates: list[EpisodeUpdate]) -> int:
    """`update_episode` for many open episodes in one statement (an ingest batch carries
    an update for every open episode whose device sent fixes: one round trip, not three
    per episode). Updates of an episode that is not open are ignored; for the same
    episode the last update wins. Returns how many alerts changed."""
    last: dict[tuple[Any, ...], EpisodeUpdate] = {}
    for u in updates:
        last[(u.case_id, u.type, u.zone_id or NIL, u.device_id or NIL)] = u
    if not last:
        return 0
    doc = orjson.dumps(
        [[str(k[0]), k[1].value, str(k[2]), str(k[3]), u.evidence] for k, u in last.items()],
        default=str,
    ).decode()
    rows = conn.execute(
        """
        WITH u AS (
            SELECT (r->>0)::uuid AS case_id, r->>1 AS type, (r->>2)::uuid AS zone_id,
                   (r->>3)::uuid AS device_id, r->4 AS evidence
            FROM jsonb_array_elements(%(doc)s::jsonb) r)
        UPDATE alerts a SET evidence = a.evidence || u.evidence
        FROM u
        WHERE a.case_id = u.case_id AND a.type = u.type AND a.episode_open
          AND coalesce(a.zone_id, %(nil)s) = u.zone_id
          AND coalesce(a.device_id, %(nil)s) = u.device_id
        RETURNING a.id
        """,
        {"doc": doc, "nil": NIL},
    ).fetchall()
    if rows:
        conn.execute("SELECT pg_notify('alerts', id::text) FROM unnest(%s::uuid[]) id",
                     ([r[0] for r in rows],))
    return len(rows)


def find_open_episode(
    conn: psycopg.Connection[Any], *, case_id: uuid.UUID, type: AlertType,
    zone_id: uuid.UUID | None = None, device_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    row = conn.execute(
        "SELECT id FROM alerts WHERE case_id = %s AND type = %s AND episode_open"
        " AND coalesce(zone_id, %s) = %s AND coalesce(device_id, %s) = %s",
        (case_id, type.value, NIL, zone_id or NIL, NIL, device_id or NIL),
    ).fetchone()
    return row[0] if row else None


ZONE_ALERT_TYPES = (
    AlertType.EXCLUSION_ZONE_ENTERED, AlertType.EXCLUSION_ZONE_APPROACH,
    AlertType.INCLUSION_ZONE_LEFT,
)


def zone_episode_open(
    conn: psycopg.Connection[Any], *, case_id: uuid.UUID, device_id: uuid.UUID
) -> bool:
    """Whether any zone episode of the case's device is still open (rapid mode stays on)."""
    row = conn.execute(
        "SELECT 1 FROM alerts WHERE case_id = %s AND device_id = %s AND episode_open"
        " AND type = ANY(%s) LIMIT 1",
        (case_id, device_id, [t.value for t in ZONE_ALERT_TYPES]),
    ).fetchone()
    return row is not None


def close_episode(
    conn: psycopg.Connection[Any],
    *,
    case_id: uuid.UUID,
    type: AlertType,
    ended_at: datetime,
    zone_id: uuid.UUID | None = None,
    device_id: uuid.UUID | None = None,
    evidence: dict[str, Any] | None = None,
    reason: str = "condition_cleared",
) -> uuid.UUID | None:
    """Close the open episode of that subject, if any. The alert stays for the officer."""
    alert_id = find_open_episode(
        conn, case_id=case_id, type=type, zone_id=zone_id, device_id=device_id
    )
    if alert_id is None:
        return None
    conn.execute(
        "UPDATE alerts SET episode_open = false, ended_at = %s,"
        " evidence = evidence || %s WHERE id = %s",
        (ended_at, _dumps(evidence or {}), alert_id),
    )
    _timeline(conn, alert_id, "episode_closed", {"reason": reason, "ended_at": ended_at})
    conn.execute("SELECT pg_notify('alerts', %s)", (str(alert_id),))
    return alert_id


def resolve_by_system(
    conn: psycopg.Connection[Any], *, alert_id: uuid.UUID, at: datetime, resolution: str,
    data: dict[str, Any],
) -> bool:
    """The system resolves an alert it raised on incomplete evidence (no actor): open or
    acknowledged → resolved with `resolution`, and a `resolved` timeline entry carrying
    `data` (why). An alert already resolved keeps its officer's resolution and only gets
    a `note` entry with `data`. Returns whether the alert moved to resolved."""
    moved = conn.execute(
        "UPDATE alerts SET status = 'resolved', resolved_at = %s, resolution = %s"
        " WHERE id = %s AND status IN ('open', 'acknowledged') RETURNING id",
        (at, resolution, alert_id),
    ).fetchone()
    if moved is not None:
        _timeline(conn, alert_id, "resolved", {"resolution": resolution, **data}, at=at)
    else:
        _timeline(conn, alert_id, "note", data, at=at)
    conn.execute("SELECT pg_notify('alerts', %s)", (str(alert_id),))
    return moved is not None


def _timeline(
    conn: psycopg.Connection[Any], alert_id: uuid.UUID, kind: str, data: dict[str, Any],
    *, at: datetime | None = None, actor_id: uuid.UUID | None = None,
) -> None:
    conn.execute(
        "INSERT INTO alert_events (alert_id, at, actor_id, kind, data)"
        " VALUES (%s, coalesce(%s, now()), %s, %s, %s)",
        (alert_id, at, actor_id, kind, _dumps(data)),
    )
