"""Cases: create, read, change, close, and the caseload with live status.

The caseload is one query per page: each case joined LATERAL to its active
device (bracelet first), that device's last fix (an index probe on
`fixes_device_ts_idx`) and its unresolved alerts; compliance is derived in the
same query:

- `violation`: an open episode of a zone or tamper alert;
- `unknown`: the case is closed, has no device, no fix in the last 30 minutes,
  or an open `communication_lost` / `location_lost` episode;
- `compliant`: otherwise.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, select

from alerts.models import AlertType
from db.types import utcnow
from probation.audit import service as audit
from probation.cases.models import (
    Case,
    CaseCreate,
    CaseDevice,
    CaseLive,
    CasePublic,
    CaseStatus,
    CaseUpdate,
    Compliance,
    LastFix,
    RiskLevel,
)
from probation.cases.scope import CaseScope
from probation.errors import Conflict, Forbidden, NotFound, invalid
from probation.pagination import decode_cursor, page_of, parse_ts, parse_uuid
from probation.subjects.models import Subject
from probation.users.models import Role, User
from probation.zones.service import bump_zones_config

VIOLATION_TYPES = [
    AlertType.EXCLUSION_ZONE_ENTERED.value,
    AlertType.INCLUSION_ZONE_LEFT.value,
    AlertType.STRAP_TAMPER.value,
    AlertType.CASE_TAMPER.value,
]
BLIND_TYPES = [AlertType.COMMUNICATION_LOST.value, AlertType.LOCATION_LOST.value]
STALE_FIX_MINUTES = 30

# The page of cases is chosen first (a LIMIT in a subquery: the laterals then run for the
# page only); with a compliance filter every case in scope is evaluated, then filtered.
LIVE_SQL = """
SELECT c.id, c.subject_id, c.officer_id, c.court_order_ref, c.starts_on, c.ends_on,
       c.risk_level, c.timezone, c.checkin_policy, c.confirm_points, c.confirm_seconds,
       c.status, c.closed_at, c.created_at,
       c.updated_at, s.full_name AS subject_name, s.iin AS subject_iin,
       d.id AS device_id, d.serial, d.kind, d.battery, d.online, d.last_seen,
       f.ts AS fix_ts, f.lat, f.lon, f.acc,
       coalesce(al.open_alerts, 0) AS open_alerts, cc.compliance
FROM (
  SELECT * FROM cases c WHERE {where}
  ORDER BY c.created_at DESC, c.id DESC LIMIT :page_limit
) c
JOIN subjects s ON s.id = c.subject_id
LEFT JOIN LATERAL (
  SELECT d.id, d.serial, d.kind, d.battery, d.online, d.last_seen
  FROM device_assignments da JOIN devices d ON d.id = da.device_id
  WHERE da.case_id = c.id AND da.unassigned_at IS NULL
  ORDER BY (d.kind = 'bracelet') DESC, da.assigned_at DESC
  LIMIT 1
) d ON true
LEFT JOIN LATERAL (
  SELECT f.ts, f.lat, f.lon, f.acc FROM fixes f
  WHERE f.device_id = d.id ORDER BY f.ts DESC LIMIT 1
) f ON true
LEFT JOIN LATERAL (
  SELECT count(*) FILTER (WHERE a.status <> 'resolved') AS open_alerts,
         count(*) FILTER (WHERE a.episode_open AND a.type = ANY(:violation_types)) AS violations,
         count(*) FILTER (WHERE a.episode_open AND a.type = ANY(:blind_types)) AS blind
  FROM alerts a
  WHERE a.case_id = c.id AND (a.status <> 'resolved' OR a.episode_open)
) al ON true
CROSS JOIN LATERAL (
  SELECT CASE
    WHEN coalesce(al.violations, 0) > 0 THEN 'violation'
    WHEN c.status <> 'active' OR d.id IS NULL OR f.ts IS NULL
         OR f.ts < now() - make_interval(mins => :stale_min)
         OR coalesce(al.blind, 0) > 0 THEN 'unknown'
    ELSE 'compliant'
  END AS compliance
) cc
{outer_where}
ORDER BY c.created_at DESC, c.id DESC
LIMIT :limit
"""


def _live_rows(
    session: Session, *, scope: CaseScope, conditions: list[str], params: dict[str, Any],
    compliance: Compliance | None, limit: int,
) -> list[CaseLive]:
    where = " AND ".join([scope.sql("c.officer_id"), *conditions])
    outer_where = ""
    page_limit: int | None = limit
    if compliance is not None:
        outer_where, page_limit = "WHERE cc.compliance = :compliance", None
        params = {**params, "compliance": compliance.value}
        # every case in scope is evaluated: its cost estimate can reach the JIT threshold,
        # and compiling would cost more than it saves
        session.execute(text("SET LOCAL jit = off"))
    sql = LIVE_SQL.format(where=where, outer_where=outer_where)
    rows = session.execute(
        text(sql),
        {**scope.params, **params, "limit": limit, "page_limit": page_limit,
         "stale_min": STALE_FIX_MINUTES, "violation_types": VIOLATION_TYPES,
         "blind_types": BLIND_TYPES},
    ).mappings().all()
    return [_to_live(r) for r in rows]


def _to_live(r: Any) -> CaseLive:
    device = None
    if r["device_id"] is not None:
        device = CaseDevice(id=r["device_id"], serial=r["serial"], kind=r["kind"],
                            battery=r["battery"], online=r["online"], last_seen=r["last_seen"])
    last_fix = None
    if r["fix_ts"] is not None:
        last_fix = LastFix(ts=r["fix_ts"], lat=r["lat"], lon=r["lon"], acc=r["acc"])
    return CaseLive(
        id=r["id"], subject_id=r["subject_id"], officer_id=r["officer_id"],
        court_order_ref=r["court_order_ref"], starts_on=r["starts_on"], ends_on=r["ends_on"],
        risk_level=r["risk_level"], timezone=r["timezone"], checkin_policy=r["checkin_policy"],
        confirm_points=r["confirm_points"], confirm_seconds=r["confirm_seconds"],
        status=r["status"], closed_at=r["closed_at"], created_at=r["created_at"],
        updated_at=r["updated_at"], subject_name=r["subject_name"], subject_iin=r["subject_iin"],
        compliance=r["compliance"], last_fix=last_fix, device=device,
        open_alerts=r["open_alerts"],
    )


def list_caseload(
    session: Session, *, scope: CaseScope, status: CaseStatus | None = None,
    risk_level: RiskLevel | None = None, compliance: Compliance | None = None,
    officer_id: uuid.UUID | None = None, limit: int = 50, cursor: str | None = None,
) -> tuple[list[CaseLive], str | None]:
    """The caller's cases with live status, newest first (audited as one read)."""
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if status is not None:
        conditions.append("c.status = :status")
        params["status"] = status.value
    if risk_level is not None:
        conditions.append("c.risk_level = :risk")
        params["risk"] = risk_level.value
    if officer_id is not None:
        conditions.append("c.officer_id = :officer")
        params["officer"] = officer_id
    after = decode_cursor("cases", cursor, parse_ts, parse_uuid)
    if after is not None:
        conditions.append("(c.created_at, c.id) < (:after_ts, :after_id)")
        params.update(after_ts=after[0], after_id=after[1])
    rows = _live_rows(session, scope=scope, conditions=conditions, params=params,
                      compliance=compliance, limit=limit + 1)
    page, next_cursor = page_of("cases", rows, limit,
                                lambda c: [c.created_at.isoformat(), str(c.id)])
    if page:
        audit.record(session, user_id=scope.user_id, action="case.list", resource="case",
                     detail={"case_ids": [str(c.id) for c in page]})
    return page, next_cursor


def get_case_live(session: Session, *, case_id: uuid.UUID, scope: CaseScope) -> CaseLive:
    """One case with its live status (audited)."""
    rows = _live_rows(session, scope=scope, conditions=["c.id = :case_id"],
                      params={"case_id": case_id}, compliance=None, limit=1)
    if not rows:
        raise NotFound()
    audit.record(session, user_id=scope.user_id, action="case.read", resource="case",
                 resource_id=case_id, case_id=case_id)
    return rows[0]


def _officer(session: Session, scope: CaseScope, officer_id: uuid.UUID) -> User:
    officer = session.get(User, officer_id)
    if officer is None or not scope.may_assign_to(officer):
        raise invalid("officer_id", "not_an_officer")
    return officer


def create_case(session: Session, *, data: CaseCreate, scope: CaseScope) -> Case:
    """Open a case on a person the caller may see. While the person has an active case
    outside the caller's scope, only a supervisor of that case or an admin may open
    another (403, audited): an officer cannot take over someone else's person."""
    from probation.subjects.service import foreign_active_cases, visible

    seen = session.exec(
        select(Subject.id).where(Subject.id == data.subject_id, visible(scope))
    ).first()
    if seen is None:
        raise invalid("subject_id", "unknown_subject")
    foreign = foreign_active_cases(session, subject_id=data.subject_id, scope=scope)
    if foreign:
        audit.record_now(session, user_id=scope.user_id, action="case.create_refused",
                         resource="subject", resource_id=data.subject_id, case_id=foreign[0],
                         detail={"reason": "active case outside the caller's scope",
                                 "case_ids": [str(c) for c in foreign]})
        raise Forbidden("subject_other_case")
    _officer(session, scope, data.officer_id)
    if data.confirm_points is not None or data.confirm_seconds is not None:
        _may_set_confirmation(scope)
    case = Case(
        subject_id=data.subject_id, officer_id=data.officer_id,
        court_order_ref=data.court_order_ref, starts_on=data.starts_on, ends_on=data.ends_on,
        risk_level=data.risk_level, timezone=data.timezone,
        checkin_policy=data.checkin_policy.model_dump() if data.checkin_policy else None,
        confirm_points=data.confirm_points, confirm_seconds=data.confirm_seconds,
    )
    session.add(case)
    session.flush()
    audit.record(session, user_id=scope.user_id, action="case.create", resource="case",
                 resource_id=case.id, case_id=case.id,
                 detail={"subject_id": str(case.subject_id), "officer_id": str(case.officer_id)})
    return case


CONFIRMATION = frozenset({"confirm_points", "confirm_seconds"})


def _may_set_confirmation(scope: CaseScope) -> None:
    """A case's confirmation decides how soon a violation alerts (and whether a short one
    does at all): a supervisor's or an admin's decision, not the officer's alone."""
    if scope.role not in (Role.SUPERVISOR, Role.ADMIN):
        raise Forbidden("confirmation_needs_supervisor")


def update_case(session: Session, *, case: Case, data: CaseUpdate, scope: CaseScope) -> Case:
    if case.status != CaseStatus.ACTIVE:
        raise Conflict("case_closed")
    changes = data.model_dump(exclude_unset=True)
    for required in ("court_order_ref", "starts_on", "ends_on", "risk_level", "timezone",
                     "officer_id"):
        if required in changes and changes[required] is None:
            raise invalid(required, "missing")
    starts: date = changes.get("starts_on", case.starts_on)
    ends: date = changes.get("ends_on", case.ends_on)
    if ends < starts:
        raise invalid("ends_on", "date_order", other="starts_on")
    if "officer_id" in changes:
        _officer(session, scope, changes["officer_id"])
    confirmation = CONFIRMATION.intersection(changes)
    if confirmation:
        _may_set_confirmation(scope)
    for k, v in changes.items():
        setattr(case, k, v)
    if "checkin_policy" in changes:
        case.checkin_policy = data.checkin_policy.model_dump() if data.checkin_policy else None
    case.updated_at = utcnow()
    session.add(case)
    session.flush()
    if "timezone" in changes or confirmation:  # the engine reloads the cases' settings
        bump_zones_config(session)
    audit.record(session, user_id=scope.user_id, action="case.update", resource="case",
                 resource_id=case.id, case_id=case.id,
                 detail=_jsonable(changes))
    return case


def close_case(session: Session, *, case: Case, reason: str | None, scope: CaseScope) -> Case:
    """Close a case: its devices are unassigned (history kept) and its zones stop applying."""
    if case.status != CaseStatus.ACTIVE:
        raise Conflict("case_closed")
    now = utcnow()
    case.status = CaseStatus.CLOSED
    case.closed_at = now
    case.updated_at = now
    session.add(case)
    session.execute(
        text("UPDATE device_assignments SET unassigned_at = :now, unassigned_by = :uid "
             "WHERE case_id = :cid AND unassigned_at IS NULL"),
        {"now": now, "uid": scope.user_id, "cid": case.id},
    )
    session.flush()
    bump_zones_config(session)
    audit.record(session, user_id=scope.user_id, action="case.close", resource="case",
                 resource_id=case.id, case_id=case.id, detail={"reason": reason})
    return case


def case_public(case: Case) -> CasePublic:
    return CasePublic.model_validate(case)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, date | datetime | uuid.UUID):
            out[k] = str(v)
        else:
            out[k] = v
    return out

