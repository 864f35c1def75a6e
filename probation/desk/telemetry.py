"""A case's device events and check-ins, and officer-initiated check-in requests.

Telemetry belongs to a case while its device was assigned to it: the lists join
`device_assignments` and read each device's rows through its (device_id, ts) index.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from db.types import utcnow
from devices import service as device_service
from devices.checkins import DEFAULT_CHALLENGES, random_challenge
from devices.models import CheckinRequest
from probation.audit import service as audit
from probation.cases.models import Case, CaseStatus
from probation.desk.inventory import active_device
from probation.desk.models import CheckinPublic, CheckinRequestPublic, DeviceEventPublic
from probation.errors import Conflict
from probation.pagination import decode_cursor, page_of, parse_bigint, parse_ts, parse_uuid

EVENTS_SQL = """
SELECT e.device_id, e.seq, e.ts, e.type, e.detail
FROM device_assignments da
JOIN device_events e ON e.device_id = da.device_id
WHERE da.case_id = :case_id
  AND e.ts >= da.assigned_at AND (da.unassigned_at IS NULL OR e.ts < da.unassigned_at)
  {filters}
ORDER BY e.ts DESC, e.device_id DESC, e.seq DESC
LIMIT :limit
"""

CHECKINS_SQL = """
SELECT ch.device_id, ch.seq, ch.ts, ch.method, ch.similarity, ch.liveness, ch.passed,
       ch.request_id, ch.lat, ch.lon, ch.acc
FROM device_assignments da
JOIN checkins ch ON ch.device_id = da.device_id
WHERE da.case_id = :case_id
  AND ch.ts >= da.assigned_at AND (da.unassigned_at IS NULL OR ch.ts < da.unassigned_at)
  AND (ch.case_id IS NULL OR ch.case_id = :case_id)
  {filters}
ORDER BY ch.ts DESC, ch.device_id DESC, ch.seq DESC
LIMIT :limit
"""


def _page(
    session: Session, *, sql: str, kind: str, case_id: uuid.UUID, since: datetime | None,
    extra: dict[str, Any], limit: int, cursor: str | None, alias: str,
) -> list[Any]:
    extra = dict(extra)
    filters: list[str] = list(extra.pop("_filters", []))
    params: dict[str, Any] = {"case_id": case_id, "limit": limit + 1, **extra}
    if since is not None:
        filters.append(f"AND {alias}.ts >= :since")
        params["since"] = since
    after = decode_cursor(kind, cursor, parse_ts, parse_uuid, parse_bigint)
    if after is not None:
        filters.append(f"AND ({alias}.ts, {alias}.device_id, {alias}.seq) < (:a_ts, :a_dev, :a_seq)")
        params.update(a_ts=after[0], a_dev=after[1], a_seq=after[2])
    return list(session.execute(text(sql.format(filters=" ".join(filters))), params).mappings())


def _key(r: Any) -> list[Any]:
    return [r.ts.isoformat(), str(r.device_id), r.seq]


def list_events(
    session: Session, *, case: Case, user_id: uuid.UUID, type: str | None = None,
    since: datetime | None = None, limit: int = 50, cursor: str | None = None,
) -> tuple[list[DeviceEventPublic], str | None]:
    """The case's device events, newest first (audited)."""
    extra: dict[str, Any] = {}
    if type is not None:
        extra = {"etype": type, "_filters": ["AND e.type = :etype"]}
    rows = _page(session, sql=EVENTS_SQL, kind="events", case_id=case.id, since=since,
                 extra=extra, limit=limit, cursor=cursor, alias="e")
    items = [DeviceEventPublic.model_validate(dict(r)) for r in rows]
    audit.record(session, user_id=user_id, action="event.list", resource="case",
                 resource_id=case.id, case_id=case.id)
    return page_of("events", items, limit, _key)


def list_checkins(
    session: Session, *, case: Case, user_id: uuid.UUID, since: datetime | None = None,
    limit: int = 50, cursor: str | None = None,
) -> tuple[list[CheckinPublic], str | None]:
    """The case's biometric check-ins, newest first (audited)."""
    rows = _page(session, sql=CHECKINS_SQL, kind="checkins", case_id=case.id, since=since,
                 extra={}, limit=limit, cursor=cursor, alias="ch")
    items = [CheckinPublic.model_validate(dict(r)) for r in rows]
    audit.record(session, user_id=user_id, action="checkin.list", resource="case",
                 resource_id=case.id, case_id=case.id)
    return page_of("checkins", items, limit, _key)


def request_checkin(
    session: Session, *, case: Case, user_id: uuid.UUID, deadline_s: int,
    challenges: Sequence[str] = DEFAULT_CHALLENGES,
) -> CheckinRequestPublic:
    """Record an officer's check-in request and its `request_checkin` command (same id, so
    the app's `request_id` names both). The command is published after commit."""
    if case.status != CaseStatus.ACTIVE:
        raise Conflict("case_closed")
    device = active_device(session, case_id=case.id, prefer=("phone", "bracelet"))
    if device is None:
        raise Conflict("no_device")
    request_id = uuid.uuid4()
    now = utcnow()
    conn = session.connection().connection.driver_connection
    challenge = random_challenge(challenges)
    device_service.create_command(
        conn, device_id=device.id, type="request_checkin",  # type: ignore[arg-type]
        params={"deadline_s": deadline_s, "challenge": challenge}, requested_by=user_id,
        command_id=request_id,
    )
    req = CheckinRequest(
        id=request_id, case_id=case.id, device_id=device.id, source="officer",
        requested_by=user_id, due_at=now, deadline=now + timedelta(seconds=deadline_s),
        command_id=request_id, status="sent", created_at=now, challenge=challenge,
    )
    session.add(req)
    session.flush()
    audit.record(session, user_id=user_id, action="checkin.request", resource="case",
                 resource_id=case.id, case_id=case.id,
                 detail={"request_id": str(request_id), "device_id": str(device.id)})
    return CheckinRequestPublic.model_validate(req)
