"""Cases: the caseload with live status, one case, changes, closing, check-in requests."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Body, Query, Request

from probation.cases import service
from probation.cases.models import (
    CaseClose,
    CaseCreate,
    CaseLive,
    CasePublic,
    CaseStatus,
    CaseUpdate,
    Compliance,
    RiskLevel,
)
from probation.deps import ContextDep, Idempotent, ScopeDep, SessionDep, VisibleCase
from probation.desk import telemetry
from probation.desk.models import CheckinRequestCreate, CheckinRequestPublic
from probation.errors import problem_responses
from probation.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page

log = logging.getLogger(__name__)
router = APIRouter(prefix="/cases", tags=["cases"])


@router.post("", response_model=CasePublic, status_code=201, summary="Open a case",
             responses=problem_responses(401, 403, 422), dependencies=[Idempotent],
             description="The person must be visible to the caller (422 `unknown_subject` "
             "otherwise). While the person has an active case outside the caller's caseload, "
             "only a supervisor of that case or an admin may open another (403, audited).")
def create_case(session: SessionDep, scope: ScopeDep, body: CaseCreate) -> CasePublic:
    return service.case_public(service.create_case(session, data=body, scope=scope))


@router.get(
    "", response_model=Page[CaseLive], summary="The caller's caseload with live status",
    responses=problem_responses(401, 422),
    description="Officers see their cases, supervisors their own and their officers', admins "
    "all. Each case carries its compliance, last fix, device and open alert count.",
)
def list_cases(
    session: SessionDep, scope: ScopeDep,
    status: Annotated[CaseStatus | None, Query()] = None,
    risk_level: Annotated[RiskLevel | None, Query()] = None,
    compliance: Annotated[Compliance | None, Query()] = None,
    officer_id: Annotated[uuid.UUID | None, Query()] = None,
    limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None,
) -> Page[CaseLive]:
    items, nxt = service.list_caseload(
        session, scope=scope, status=status, risk_level=risk_level, compliance=compliance,
        officer_id=officer_id, limit=limit, cursor=cursor,
    )
    return Page[CaseLive](items=items, next_cursor=nxt)


@router.get("/{case_id}", response_model=CaseLive, summary="A case with its live status",
            responses=problem_responses(401, 404, 422))
def get_case(session: SessionDep, scope: ScopeDep, case: VisibleCase) -> CaseLive:
    return service.get_case_live(session, case_id=case.id, scope=scope)


@router.patch("/{case_id}", response_model=CasePublic, summary="Change a case",
              description="Any field of the case but `subject_id`. `confirm_points` and "
              "`confirm_seconds` need a supervisor or an admin (403 "
              "`confirmation_needs_supervisor`).",
              responses=problem_responses(401, 403, 404, 409, 422), dependencies=[Idempotent])
def update_case(
    session: SessionDep, scope: ScopeDep, case: VisibleCase, body: CaseUpdate
) -> CasePublic:
    return service.case_public(service.update_case(session, case=case, data=body, scope=scope))


@router.post("/{case_id}/close", response_model=CasePublic, summary="Close a case",
             responses=problem_responses(401, 404, 409, 422), dependencies=[Idempotent])
def close_case(
    session: SessionDep, scope: ScopeDep, case: VisibleCase,
    body: Annotated[CaseClose | None, Body()] = None,
) -> CasePublic:
    reason = body.reason if body else None
    return service.case_public(service.close_case(session, case=case, reason=reason, scope=scope))


def publish_command(request: Request, ctx: ContextDep, command_id: uuid.UUID) -> None:
    """Publish a recorded command (after the response; the resend job covers failures)."""
    from devices.downlink import CommandPublisher

    try:
        publisher = getattr(request.app.state, "command_publisher", None)
        if publisher is None:
            publisher = CommandPublisher(
                database_url=ctx.database_url, mqtt_url=ctx.mqtt_url,
                prefix=ctx.settings.mqtt_prefix,
            ).start(timeout=3)
            request.app.state.command_publisher = publisher
        publisher.publish_recorded(command_id, timeout=5)
    except Exception:
        log.exception("command %s not published now; left for the resend job", command_id)


@router.post(
    "/{case_id}/checkin-requests", response_model=CheckinRequestPublic, status_code=201,
    summary="Ask the person for a biometric check-in now",
    responses=problem_responses(401, 404, 409, 422), dependencies=[Idempotent],
    description="Sends the `request_checkin` command to the case's phone (or bracelet); the "
    "app answers with a check-in whose `request_id` is this request's id.",
)
def request_checkin(
    request: Request, ctx: ContextDep, tasks: BackgroundTasks, session: SessionDep,
    scope: ScopeDep, case: VisibleCase,
    body: Annotated[CheckinRequestCreate | None, Body()] = None,
) -> CheckinRequestPublic:
    req = telemetry.request_checkin(session, case=case, user_id=scope.user_id,
                                    deadline_s=(body or CheckinRequestCreate()).deadline_s,
                                    challenges=ctx.settings.checkin_challenges)
    assert req.command_id is not None
    tasks.add_task(publish_command, request, ctx, req.command_id)
    return req
