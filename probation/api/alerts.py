"""Alerts: list, detail with timeline, acknowledge, resolve, notes, and the SSE stream."""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
import jwt
from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlmodel import Session

from alerts.models import AlertStatus, AlertType, Severity
from db.engine import get_engine
from probation.audit import service as audit
from probation.deps import ContextDep, Idempotent, ScopeDep, SessionDep, StreamScopeDep, StreamToken
from probation.desk import lifecycle as service
from probation.desk.models import (
    AcknowledgeRequest,
    AlertDetail,
    AlertEventPublic,
    AlertPublic,
    NoteCreate,
    ResolveRequest,
)
from probation.errors import problem_responses
from probation.fields import Instant
from probation.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page

router = APIRouter(prefix="/alerts", tags=["alerts"])

POLL_S = 0.5
#: A change committed this long after a later-numbered one is still delivered.
LOOKBACK_S = 5.0
KEEPALIVE_S = 15.0


@router.get("", response_model=Page[AlertPublic], summary="Alerts, newest first",
            responses=problem_responses(401, 404, 422))
def list_alerts(
    session: SessionDep, scope: ScopeDep,
    status: Annotated[AlertStatus | None, Query()] = None,
    severity: Annotated[Severity | None, Query()] = None,
    type: Annotated[AlertType | None, Query()] = None,
    case_id: Annotated[uuid.UUID | None, Query()] = None,
    since: Annotated[Instant | None, Query(description="Created at or after (RFC 3339).")] = None,
    limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None,
) -> Page[AlertPublic]:
    items, nxt = service.list_alerts(
        session, scope=scope, status=status, severity=severity, type=type, case_id=case_id,
        since=since, limit=limit, cursor=cursor,
    )
    return Page[AlertPublic](items=items, next_cursor=nxt)


@router.get(
    "/stream", response_class=EventSourceResponse, response_model=AlertPublic,
    summary="Server-Sent Events: new and changed alerts the caller may see",
    responses=problem_responses(401, 422),
    description="Each event is `event: alert`, `id: <change sequence>`, `data: <alert JSON>`. "
    "Reconnect with `Last-Event-ID` to resume after the last event seen; without it the "
    "stream starts with the changes made after connecting. The stream ends when the access "
    "token expires. A browser's EventSource cannot set headers: it may pass the token as "
    "`access_token` instead (keep such URLs out of logs; the service does not log them).",
)
async def stream(
    request: Request, ctx: ContextDep, scope: StreamScopeDep, token: StreamToken,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20,
                                                pattern=r"^[0-9]+$")] = None,
) -> AsyncIterator[ServerSentEvent]:
    engine = get_engine(ctx.database_url)
    # the stream ends when the (already verified) token expires: the client reconnects
    # with a fresh one and resumes with Last-Event-ID
    expires = float(jwt.decode(token or "", options={"verify_signature": False})["exp"])

    def start() -> int:
        with Session(engine) as s:
            audit.record(s, user_id=scope.user_id, action="alert.stream", resource="alert")
            seq = int(last_event_id) if last_event_id else service.current_seq(s)
            s.commit()
            return seq

    def poll(after: int) -> list[AlertPublic]:
        with Session(engine) as s:
            return service.changes_since(s, scope=scope, after=after)

    low = await anyio.to_thread.run_sync(start)
    seen: set[int] = set()
    window: deque[tuple[float, int]] = deque()
    last_sent = time.monotonic()
    yield ServerSentEvent(comment="connected", retry=2000)
    while not await request.is_disconnected() and time.time() < expires:
        for alert in await anyio.to_thread.run_sync(poll, low):
            if alert.change_seq in seen:
                continue
            seen.add(alert.change_seq)
            window.append((time.monotonic(), alert.change_seq))
            last_sent = time.monotonic()
            yield ServerSentEvent(data=alert, event="alert", id=str(alert.change_seq))
        now = time.monotonic()
        while window and now - window[0][0] > LOOKBACK_S:
            _, seq = window.popleft()
            low = max(low, seq)
        seen = {s for s in seen if s > low}
        if now - last_sent > KEEPALIVE_S:
            last_sent = now
            yield ServerSentEvent(comment="keep-alive")
        await anyio.sleep(POLL_S)


@router.get("/{alert_id}", response_model=AlertDetail,
            summary="An alert with its evidence, zone and timeline",
            responses=problem_responses(401, 404, 422))
def get_alert(session: SessionDep, scope: ScopeDep, alert_id: uuid.UUID) -> AlertDetail:
    return service.get_alert(session, alert_id=alert_id, scope=scope)


@router.post("/{alert_id}/acknowledge", response_model=AlertDetail,
             summary="Acknowledge an open alert",
             responses=problem_responses(401, 404, 409, 422), dependencies=[Idempotent])
def acknowledge(
    session: SessionDep, scope: ScopeDep, alert_id: uuid.UUID,
    body: Annotated[AcknowledgeRequest | None, Body()] = None,
) -> AlertDetail:
    return service.acknowledge(session, alert_id=alert_id, scope=scope,
                               note=body.note if body else None)


@router.post("/{alert_id}/resolve", response_model=AlertDetail,
             summary="Resolve an alert with a resolution code",
             responses=problem_responses(401, 404, 409, 422), dependencies=[Idempotent])
def resolve(
    session: SessionDep, scope: ScopeDep, alert_id: uuid.UUID, body: ResolveRequest
) -> AlertDetail:
    return service.resolve(session, alert_id=alert_id, scope=scope, resolution=body.resolution,
                           note=body.note)


@router.post("/{alert_id}/notes", response_model=AlertEventPublic, status_code=201,
             summary="Add a note to an alert's timeline",
             responses=problem_responses(401, 404, 422), dependencies=[Idempotent])
def add_note(
    session: SessionDep, scope: ScopeDep, alert_id: uuid.UUID, body: NoteCreate
) -> AlertEventPublic:
    return service.add_note(session, alert_id=alert_id, scope=scope, text_=body.text)
