"""The officer-facing alert lifecycle: list, read, acknowledge, resolve, annotate, stream.

Episodes are opened, updated and closed by the engine (`alerts/service.py`);
this module is what people do with the alerts. Every call takes the caller's
case scope (`probation.cases.scope.CaseScope`): an alert on a case the caller may not
see does not exist for them (404). Transitions follow `alerts.models.TRANSITIONS`
under a row lock; anything else is a 409. Every transition and note is a
timeline row (`alert_events`) with its actor and time, and a `pg_notify('alerts')`.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, text, update
from sqlmodel import Session, col, select

from alerts.models import (
    TRANSITIONS,
    Alert,
    AlertEvent,
    AlertStatus,
    AlertType,
    Resolution,
    Severity,
    can_transition,
)
from db.types import utcnow
from probation.audit import service as audit
from probation.cases.models import Case
from probation.cases.scope import CaseScope
from probation.desk.models import AlertDetail, AlertEventPublic, AlertPublic, ZoneSummary
from probation.errors import Conflict, NotFound
from probation.pagination import decode_cursor, page_of, parse_ts, parse_uuid
from probation.users.models import User
from probation.zones.models import Zone

# ---- reading ----------------------------------------------------------------------------


def _visible(scope: CaseScope) -> ColumnElement[bool]:
    return col(Alert.case_id).in_(scope.case_ids())


def list_alerts(
    session: Session, *, scope: CaseScope, status: AlertStatus | None = None,
    severity: Severity | None = None, type: AlertType | None = None,
    case_id: uuid.UUID | None = None, since: datetime | None = None, limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[AlertPublic], str | None]:
    """Alerts the caller may see, newest first (by creation)."""
    q = select(Alert)
    if not scope.everything:
        q = q.where(_visible(scope))
    if case_id is not None:
        if session.exec(select(Case.id).where(Case.id == case_id, scope.where())).first() is None:
            raise NotFound()
        q = q.where(Alert.case_id == case_id)
    if status is not None:
        q = q.where(Alert.status == status)
    if severity is not None:
        q = q.where(Alert.severity == severity)
    if type is not None:
        q = q.where(Alert.type == type)
    if since is not None:
        q = q.where(col(Alert.created_at) >= since)
    after = decode_cursor("alerts", cursor, parse_ts, parse_uuid)
    if after is not None:
        q = q.where(text("(alerts.created_at, alerts.id) < (:a_ts, :a_id)").bindparams(
            a_ts=after[0], a_id=after[1]))
    rows = session.exec(
        q.order_by(col(Alert.created_at).desc(), col(Alert.id).desc()).limit(limit + 1)
    ).all()
    items = [AlertPublic.model_validate(a) for a in rows]
    page, next_cursor = page_of("alerts", items, limit,
                                lambda a: [a.created_at.isoformat(), str(a.id)])
    if page:
        audit.record(session, user_id=scope.user_id, action="alert.list", resource="alert",
                     case_id=case_id, detail={"alert_ids": [str(a.id) for a in page]})
    return page, next_cursor


def _get(session: Session, alert_id: uuid.UUID, scope: CaseScope, *, lock: bool = False) -> Alert:
    q = select(Alert).where(Alert.id == alert_id)
    if not scope.everything:
        q = q.where(_visible(scope))
    if lock:
        q = q.with_for_update()
    alert = session.exec(q).first()
    if alert is None:
        raise NotFound()
    return alert


def _detail(session: Session, alert: Alert) -> AlertDetail:
    rows = session.exec(
        select(AlertEvent, User.username)
        .join(User, col(User.id) == AlertEvent.actor_id, isouter=True)
        .where(AlertEvent.alert_id == alert.id)
        .order_by(col(AlertEvent.id))
    ).all()
    timeline = [
        AlertEventPublic(id=e.id or 0, at=e.at, actor_id=e.actor_id, actor=name, kind=e.kind,
                         data=e.data)
        for e, name in rows
    ]
    zone = None
    if alert.zone_id is not None:
        z = session.get(Zone, alert.zone_id)
        if z is not None:
            zone = ZoneSummary(id=z.id, name=z.name, kind=z.kind)
    end = alert.ended_at or (utcnow() if alert.episode_open else alert.updated_at)
    duration = max(0.0, (end - alert.started_at).total_seconds())
    return AlertDetail.model_validate(
        alert, update={"zone": zone, "duration_s": duration, "timeline": timeline}
    )


def get_alert(session: Session, *, alert_id: uuid.UUID, scope: CaseScope) -> AlertDetail:
    """An alert with its evidence, zone and timeline (audited)."""
    alert = _get(session, alert_id, scope)
    audit.record(session, user_id=scope.user_id, action="alert.read", resource="alert",
                 resource_id=alert.id, case_id=alert.case_id)
    return _detail(session, alert)


# ---- the lifecycle ------------------------------------------------------------------------


def _event(session: Session, alert_id: uuid.UUID, *, actor_id: uuid.UUID, kind: str,
           data: dict[str, Any]) -> AlertEvent:
    """A timeline row, and the notification that the alert changed (one round trip)."""
    row = session.execute(
        text("WITH ev AS (INSERT INTO alert_events (alert_id, actor_id, kind, data) "
             "VALUES (:a, :u, :k, CAST(:d AS jsonb)) RETURNING id, at) "
             "SELECT ev.id, ev.at, pg_notify('alerts', CAST(:a AS text)) FROM ev"),
        {"a": alert_id, "u": actor_id, "k": kind, "d": json.dumps(data)},
    ).one()
    return AlertEvent(id=row.id, alert_id=alert_id, at=row.at, actor_id=actor_id, kind=kind,
                      data=data)


def _apply(
    session: Session, *, alert_id: uuid.UUID, scope: CaseScope, target: AlertStatus,
    values: dict[str, Any],
) -> Alert:
    """Move an alert to `target` in one UPDATE ... RETURNING (the row lock serialises
    concurrent transitions); when no row moved, say why: 404 or 409."""
    allowed = [s for s, nxt in TRANSITIONS.items() if target in nxt]
    stmt = (
        update(Alert)
        .where(col(Alert.id) == alert_id, col(Alert.status).in_(allowed))
        .values(status=target, **values)
        .returning(Alert)
        .execution_options(synchronize_session=False)
    )
    if not scope.everything:
        stmt = stmt.where(_visible(scope))
    alert = session.scalars(stmt).first()
    if alert is None:
        current = _get(session, alert_id, scope)  # 404 if missing or not visible
        _check_transition(current, target)  # 409
        raise AssertionError("unreachable")  # pragma: no cover
    return alert


def _check_transition(alert: Alert, target: AlertStatus) -> None:
    current = AlertStatus(alert.status)
    if not can_transition(current, target):
        raise Conflict("alert_transition", current=current.value, target=target.value)


def acknowledge(
    session: Session, *, alert_id: uuid.UUID, scope: CaseScope, note: str | None = None
) -> AlertDetail:
    """open → acknowledged."""
    alert = _apply(session, alert_id=alert_id, scope=scope, target=AlertStatus.ACKNOWLEDGED,
                   values={"acknowledged_at": utcnow(), "acknowledged_by": scope.user_id})
    _event(session, alert.id, actor_id=scope.user_id, kind="acknowledged",
           data={"note": note} if note else {})
    audit.record(session, user_id=scope.user_id, action="alert.acknowledge", resource="alert",
                 resource_id=alert.id, case_id=alert.case_id)
    return _detail(session, alert)


def resolve(
    session: Session, *, alert_id: uuid.UUID, scope: CaseScope, resolution: Resolution,
    note: str | None = None,
) -> AlertDetail:
    """open|acknowledged → resolved, with a resolution code."""
    alert = _apply(session, alert_id=alert_id, scope=scope, target=AlertStatus.RESOLVED,
                   values={"resolved_at": utcnow(), "resolved_by": scope.user_id,
                           "resolution": resolution.value})
    data: dict[str, Any] = {"resolution": resolution.value}
    if note:
        data["note"] = note
    _event(session, alert.id, actor_id=scope.user_id, kind="resolved", data=data)
    audit.record(session, user_id=scope.user_id, action="alert.resolve", resource="alert",
                 resource_id=alert.id, case_id=alert.case_id,
                 detail={"resolution": resolution.value})
    return _detail(session, alert)


def add_note(session: Session, *, alert_id: uuid.UUID, scope: CaseScope, text_: str) -> AlertEventPublic:
    """A note on the timeline (any status)."""
    alert = _get(session, alert_id, scope)
    event = _event(session, alert.id, actor_id=scope.user_id, kind="note", data={"text": text_})
    actor = session.get(User, scope.user_id)
    audit.record(session, user_id=scope.user_id, action="alert.note", resource="alert",
                 resource_id=alert.id, case_id=alert.case_id)
    return AlertEventPublic(id=event.id or 0, at=event.at, actor_id=event.actor_id,
                            actor=actor.username if actor else None, kind=event.kind,
                            data=event.data)


# ---- the change stream --------------------------------------------------------------------

CHANGES_SQL = """
SELECT a.* FROM alerts a JOIN cases c ON c.id = a.case_id
WHERE a.change_seq > :after AND {scope}
ORDER BY a.change_seq LIMIT :limit
"""


def current_seq(session: Session) -> int:
    """The newest change sequence number (where a stream without Last-Event-ID starts)."""
    return int(session.execute(text("SELECT coalesce(max(change_seq), 0) FROM alerts")).scalar_one())


def changes_since(session: Session, *, scope: CaseScope, after: int, limit: int = 500) -> list[AlertPublic]:
    """Alerts in scope changed after sequence number `after`, in change order."""
    rows = session.execute(
        text(CHANGES_SQL.format(scope=scope.sql("c.officer_id"))),
        {**scope.params, "after": after, "limit": limit},
    ).mappings().all()
    return [AlertPublic.model_validate(dict(r)) for r in rows]
