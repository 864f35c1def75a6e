"""The audit log: read it (supervisor, admin) and verify its hash chain (admin)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from probation.audit import service
from probation.audit.models import AuditEntryPublic, AuditVerification
from probation.deps import AdminUser, ContextDep, SessionDep, SupervisorOrAdmin
from probation.errors import problem_responses
from probation.fields import Instant
from probation.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get(
    "", response_model=Page[AuditEntryPublic], summary="Audit entries, newest first",
    responses=problem_responses(401, 403, 404, 422),
    description="Admins see everything; supervisors the entries about their team's cases and "
    "their team's own actions. A `case_id` the caller may not see is a 404.",
)
def list_audit(
    session: SessionDep, actor: SupervisorOrAdmin,
    case_id: Annotated[uuid.UUID | None, Query()] = None,
    user_id: Annotated[uuid.UUID | None, Query()] = None,
    since: Annotated[Instant | None, Query()] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]+$")] = None,
    limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None,
) -> Page[AuditEntryPublic]:
    items, nxt = service.list_entries(
        session, actor=actor, case_id=case_id, user_id=user_id, since=since, action=action,
        limit=limit, cursor=cursor,
    )
    return Page[AuditEntryPublic](items=items, next_cursor=nxt)


@router.get("/verify", response_model=AuditVerification, summary="Verify the hash chain (admin)",
            responses=problem_responses(401, 403),
            description="Recomputes every entry's HMAC under the audit key (kept outside the "
            "database) and checks the anchors written outside the database.")
def verify(session: SessionDep, ctx: ContextDep, _: AdminUser) -> AuditVerification:
    anchors = service.read_anchors(ctx.settings.anchor_path())
    v = service.verify(session, anchors=anchors)
    return AuditVerification(ok=v.ok, entries=v.entries, broken_at=v.broken_at, reason=v.reason,
                             head_id=v.head_id, anchors_checked=v.anchors_checked)
