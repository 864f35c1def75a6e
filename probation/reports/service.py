"""Court reports of an alert's episode or of a case's period: gather, render, hash, audit.

What is hashed is defined in `probation.reports.document`: the footer carries the SHA-256
of the report's content (canonical JSON); the audit entry `report.generated` records it
and the SHA-256 of the PDF bytes as served. `verify` finds a report by either.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlmodel import Session

from db.types import utcnow
from probation.audit import service as audit
from probation.cases.models import Case
from probation.cases.scope import CaseScope
from probation.errors import NotFound, invalid
from probation.reports.document import Event, Fix, Place, Report, file_sha256
from probation.tracks.service import thin
from probation.users.models import User

MAX_PERIOD = timedelta(days=92)
DEFAULT_PERIOD = timedelta(days=7)
EPISODE_MARGIN = timedelta(minutes=30)
MAP_POINTS = 3000
MAX_TIMELINE = 400


def _iso(dt: datetime | None) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds") if dt else ""


def _rows(session: Session, sql: str, **params: Any) -> list[Any]:
    return list(session.execute(text(sql), params).all())


def _visible_case(session: Session, case_id: uuid.UUID, scope: CaseScope) -> Case:
    from sqlmodel import select

    case = session.exec(select(Case).where(Case.id == case_id, scope.where())).first()
    if case is None:
        raise NotFound()
    return case


def _fixes(session: Session, case_id: uuid.UUID, start: datetime, end: datetime,
           evidence: list[tuple[datetime, datetime]]) -> list[Fix]:
    rows = _rows(session, """
        SELECT f.ts, f.lat, f.lon, f.acc, f.src FROM device_assignments da
        JOIN fixes f ON f.device_id = da.device_id AND f.ts >= :s AND f.ts < :e
         AND f.ts >= da.assigned_at AND (da.unassigned_at IS NULL OR f.ts < da.unassigned_at)
        WHERE da.case_id = :c ORDER BY f.ts""", c=case_id, s=start, e=end)
    if not rows:
        return []
    ts = [r[0] for r in rows]
    is_ev = np.array([any(a <= t <= b for a, b in evidence) for t in ts], dtype=bool)
    lat = np.array([r[1] for r in rows])
    lon = np.array([r[2] for r in rows])
    kx = 111_195.0 * math.cos(math.radians(float(lat.mean())))
    kept = thin(lon * kx, lat * 111_195.0, is_ev, MAP_POINTS)
    return [Fix(ts=_iso(rows[i][0]), lat=float(rows[i][1]), lon=float(rows[i][2]),
                acc=float(rows[i][3]), src=str(rows[i][4]), evidence=bool(is_ev[i]))
            for i in kept.tolist()]


def _zones(session: Session, case_id: uuid.UUID) -> list[Place]:
    rows = _rows(session, """
        SELECT z.name, z.kind, z.geometry, z.circle FROM case_zones cz
        JOIN zones z ON z.id = cz.zone_id WHERE cz.case_id = :c AND z.deleted_at IS NULL
        ORDER BY z.name""", c=case_id)
    return [Place(name=r[0], kind=r[1], geometry=r[2], circle=r[3]) for r in rows]


def _devices(session: Session, case_id: uuid.UUID, start: datetime, end: datetime
             ) -> list[dict[str, str]]:
    rows = _rows(session, """
        SELECT d.serial, d.kind, d.battery, d.online, d.last_seen FROM device_assignments da
        JOIN devices d ON d.id = da.device_id
        WHERE da.case_id = :c AND da.assigned_at < :e
          AND (da.unassigned_at IS NULL OR da.unassigned_at > :s) ORDER BY d.serial""",
                 c=case_id, s=start, e=end)
    return [{"serial": r[0], "kind": r[1], "battery": "" if r[2] is None else str(r[2]),
             "online": "yes" if r[3] else "no", "last_seen": _iso(r[4])} for r in rows]


_ALERT_KIND = {"opened": "ev_alert_opened", "acknowledged": "ev_acknowledged",
               "resolved": "ev_resolved", "note": "ev_note", "escalated": "ev_escalated"}


def _timeline(session: Session, case_id: uuid.UUID, start: datetime, end: datetime,
              alert_id: uuid.UUID | None) -> list[Event]:
    alert_filter = "a.id = :a" if alert_id else "a.case_id = :c AND e.at >= :s AND e.at < :e"
    events = [Event(ts=_iso(r[0]), what=_ALERT_KIND.get(r[1], r[1]),
                    detail=_alert_detail(r[1], r[2], r[3], r[4]))
              for r in _rows(session, f"""
        SELECT e.at, e.kind, e.data, u.username, a.type FROM alert_events e
        JOIN alerts a ON a.id = e.alert_id LEFT JOIN users u ON u.id = e.actor_id
        WHERE {alert_filter} ORDER BY e.at, e.id""", a=alert_id, c=case_id, s=start, e=end)]
    events += [Event(ts=_iso(r[0]), what="ev_device", detail=r[1]) for r in _rows(session, """
        SELECT ev.ts, ev.type FROM device_assignments da JOIN device_events ev
          ON ev.device_id = da.device_id AND ev.ts >= :s AND ev.ts < :e
         AND ev.ts >= da.assigned_at AND (da.unassigned_at IS NULL OR ev.ts < da.unassigned_at)
        WHERE da.case_id = :c""", c=case_id, s=start, e=end)]
    events += [Event(ts=_iso(r[0]), what="ev_checkin",
                     detail=f"{r[1]}: {'passed' if r[2] else 'failed'}")
               for r in _rows(session, """
        SELECT ts, method, passed FROM checkins WHERE case_id = :c AND ts >= :s AND ts < :e""",
                              c=case_id, s=start, e=end)]
    events.sort(key=lambda e: e.ts)
    return events[:MAX_TIMELINE]


def _alert_detail(kind: str, data: dict[str, Any] | None, who: str | None, atype: str) -> str:
    d = data or {}
    parts = [atype] if kind == "opened" else []
    parts += [str(d[k]) for k in ("resolution", "note", "text", "level") if d.get(k) not in (None, "")]
    if who:
        parts.append(who)
    return "; ".join(parts)


def _base(session: Session, case: Case, user: User) -> dict[str, Any]:
    subj = _rows(session, "SELECT full_name, iin, birth_date FROM subjects WHERE id = :s",
                 s=case.subject_id)[0]
    officer = _rows(session, "SELECT coalesce(nullif(full_name, ''), username) FROM users "
                    "WHERE id = :u", u=case.officer_id)[0][0]
    return {
        "subject": {"full_name": subj[0], "iin": subj[1], "birth_date": subj[2].isoformat()},
        "case": {"id": str(case.id), "court_order_ref": case.court_order_ref,
                 "starts_on": case.starts_on.isoformat(), "ends_on": case.ends_on.isoformat(),
                 "risk_level": str(case.risk_level), "officer": officer,
                 "timezone": case.timezone},
        "generated_by": user.full_name or user.username,
    }


def _finish(session: Session, report: Report, *, user: User, case_id: uuid.UUID,
            alert_id: uuid.UUID | None) -> bytes:
    from probation.reports.pdf import render  # fpdf2 loads only when a report is made

    pdf = render(report)
    audit.record(session, user_id=user.id, action="report.generated", resource="report",
                 resource_id=report.report_id, case_id=case_id, detail={
                     "kind": report.kind, "alert_id": str(alert_id) if alert_id else None,
                     "lang": report.lang, "from": report.period["from"],
                     "to": report.period["to"], "content_sha256": report.content_sha256(),
                     "file_sha256": file_sha256(pdf), "generated_at": report.generated_at,
                     "evidence_fixes": sum(f.evidence for f in report.fixes)})
    return pdf


def alert_report(session: Session, *, alert_id: uuid.UUID, user: User, lang: str) -> bytes:
    """The report of an alert's episode (30 minutes either side), audited."""
    scope = CaseScope.of(user)
    row = _rows(session, "SELECT case_id, type, severity, status, started_at, ended_at, "
                "zone_id FROM alerts WHERE id = :a", a=alert_id)
    if not row:
        raise NotFound()
    case_id, atype, severity, status, started, ended, zone_id = row[0]
    case = _visible_case(session, case_id, scope)
    now = utcnow()
    start, end = started - EPISODE_MARGIN, min((ended or now) + EPISODE_MARGIN, now)
    end = max(end, start + timedelta(minutes=1))
    zone = _rows(session, "SELECT name FROM zones WHERE id = :z", z=zone_id) if zone_id else []
    report = Report(
        report_id=str(uuid.uuid4()), kind="alert", lang=lang, generated_at=_iso(now),
        period={"from": _iso(start), "to": _iso(end)},
        summary={"type": atype, "severity": severity, "status": status,
                 "started": _iso(started), "ended": _iso(ended),
                 "zone": zone[0][0] if zone else ""},
        timeline=_timeline(session, case.id, start, end, alert_id),
        fixes=_fixes(session, case.id, start, end, [(started, ended or now)]),
        zones=_zones(session, case.id), devices=_devices(session, case.id, start, end),
        **_base(session, case, user))
    return _finish(session, report, user=user, case_id=case.id, alert_id=alert_id)


def case_report(session: Session, *, case_id: uuid.UUID, user: User, lang: str,
                start: datetime | None, end: datetime | None) -> bytes:
    """The report of a case over [start, end) (default: the last 7 days), audited."""
    case = _visible_case(session, case_id, CaseScope.of(user))
    now = utcnow()
    end = end or now
    start = start or end - DEFAULT_PERIOD
    if end <= start:
        raise invalid("to", "time_order", location="query", other="from")
    if end - start > MAX_PERIOD:
        raise invalid("from", "greater_than_equal", location="query",
                      ge=(end - MAX_PERIOD).isoformat())
    episodes = [(r[0], r[1] or now) for r in _rows(session, """
        SELECT started_at, ended_at FROM alerts WHERE case_id = :c AND started_at < :e
          AND coalesce(ended_at, now()) >= :s AND zone_id IS NOT NULL""", c=case.id, s=start,
                                                   e=end)]
    report = Report(
        report_id=str(uuid.uuid4()), kind="case", lang=lang, generated_at=_iso(now),
        period={"from": _iso(start), "to": _iso(end)},
        timeline=_timeline(session, case.id, start, end, None),
        fixes=_fixes(session, case.id, start, end, episodes),
        zones=_zones(session, case.id), devices=_devices(session, case.id, start, end),
        **_base(session, case, user))
    return _finish(session, report, user=user, case_id=case.id, alert_id=None)


def verify(session: Session, *, sha256: str, user: User) -> dict[str, Any]:
    """Which report (if any) has this content hash (printed footer) or file hash."""
    h = sha256.lower()
    rows = _rows(session, """
        SELECT a.resource_id, a.case_id, a.at, a.detail, u.username FROM audit_log a
        LEFT JOIN users u ON u.id = a.user_id
        WHERE a.action = 'report.generated'
          AND (a.detail->>'content_sha256' = :h OR a.detail->>'file_sha256' = :h)
        ORDER BY a.id LIMIT 1""", h=h)
    audit.record(session, user_id=user.id, action="report.verify", resource="report",
                 resource_id=rows[0][0] if rows else None,
                 case_id=rows[0][1] if rows else None, detail={"sha256": h, "found": bool(rows)})
    if not rows:
        return {"valid": False, "sha256": h}
    rid, case_id, at, detail, who = rows[0]
    return {"valid": True, "sha256": h,
            "matched": "content" if detail.get("content_sha256") == h else "file",
            "report_id": rid, "kind": detail.get("kind"), "case_id": str(case_id),
            "alert_id": detail.get("alert_id"), "lang": detail.get("lang"),
            "from": detail.get("from"), "to": detail.get("to"),
            "generated_at": detail.get("generated_at") or _iso(at), "generated_by": who,
            "content_sha256": detail.get("content_sha256"),
            "file_sha256": detail.get("file_sha256")}
