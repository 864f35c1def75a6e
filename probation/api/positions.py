"""Live positions of the caller's cases as Server-Sent Events (the console's map)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import anyio
import jwt
from fastapi import APIRouter, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlmodel import Session

from db.engine import get_engine
from probation.audit import service as audit
from probation.deps import ContextDep, StreamScopeDep, StreamToken
from probation.errors import problem_responses
from probation.tracks import live as positions
from probation.tracks.models import LivePosition

router = APIRouter(prefix="/positions", tags=["cases"])

POLL_S = 0.5
#: `received_at` is the storing transaction's start: look back this far so that a fix
#: committed after a later one started is still seen (duplicates are dropped by `ts`).
LOOKBACK = timedelta(seconds=5)
KEEPALIVE_S = 15.0


@router.get(
    "/stream", response_class=EventSourceResponse, response_model=LivePosition,
    summary="Server-Sent Events: the newest fix of each case the caller may see",
    responses=problem_responses(401, 422),
    description="Each event is `event: position`, `data: {case_id, ts, lat, lon, acc}`, sent "
    "when a case's newest fix changes (fixes stored after connecting; a late fix older than "
    "the one already sent is not). Same scope as `GET /cases`. The stream ends when the "
    "access token expires. A browser's EventSource may pass the token as `access_token`.",
)
async def stream(
    request: Request, ctx: ContextDep, scope: StreamScopeDep, token: StreamToken,
) -> AsyncIterator[ServerSentEvent]:
    engine = get_engine(ctx.database_url)
    expires = float(jwt.decode(token or "", options={"verify_signature": False})["exp"])

    def start() -> tuple[datetime, list[LivePosition]]:
        with Session(engine) as s:
            audit.record(s, user_id=scope.user_id, action="position.stream", resource="case")
            now = positions.db_now(s)
            # what the lookback of the first poll would see again: known, not news
            known = positions.positions_since(s, scope=scope, since=now - LOOKBACK)
            s.commit()
            return now, known

    def poll(since: datetime) -> tuple[datetime, list[LivePosition]]:
        with Session(engine) as s:
            return positions.db_now(s), positions.positions_since(s, scope=scope, since=since)

    since, known = await anyio.to_thread.run_sync(start)
    sent: dict[uuid.UUID, datetime] = {p.case_id: p.ts for p in known}
    last_sent = time.monotonic()
    yield ServerSentEvent(comment="connected", retry=2000)
    while not await request.is_disconnected() and time.time() < expires:
        now, found = await anyio.to_thread.run_sync(poll, since - LOOKBACK)
        for p in found:
            if p.case_id in sent and sent[p.case_id] >= p.ts:
                continue
            sent[p.case_id] = p.ts
            last_sent = time.monotonic()
            yield ServerSentEvent(data=p, event="position")
        since = now
        if time.monotonic() - last_sent > KEEPALIVE_S:
            last_sent = time.monotonic()
            yield ServerSentEvent(comment="keep-alive")
        await anyio.sleep(POLL_S)
