"""What ingestion refused (admin): topic, reason code, detail and the raw payload (capped)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlmodel import Session

from devices import service
from devices.protocol import Reason
from probation.audit import service as audit
from probation.deps import AdminUser, SessionDep
from probation.errors import NotFound, problem_responses
from probation.fields import Instant
from probation.pagination import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    Page,
    decode_cursor,
    page_of,
)

router = APIRouter(prefix="/dead-letters", tags=["operations"])

LIST_PAYLOAD_CAP = 4096


class DeadLetterPublic(BaseModel):
    """One rejection: a whole message (`item_index` null) or one item of it."""

    id: int
    received_at: datetime
    topic: str
    reason: Reason = Field(description="The contract's reason code.")
    detail: str
    item_index: int | None = Field(description="Index of the rejected item in the message.")
    payload: str = Field(description="The stored payload as UTF-8 text (invalid bytes "
                         "replaced); in a list, its first 4 KiB.")
    payload_base64: str = Field(description="The same bytes, exactly, base64-encoded.")
    payload_size: int = Field(description="Stored size in bytes (payloads are kept up to "
                              "256 KiB).")
    payload_truncated: bool = Field(description="Whether `payload` is shorter than what is "
                                    "stored.")


def _public(row: dict[str, Any]) -> DeadLetterPublic:
    body = bytes(row["payload"])
    return DeadLetterPublic(
        id=row["id"], received_at=row["received_at"], topic=row["topic"], reason=row["reason"],
        detail=row["detail"], item_index=row["item_index"],
        payload=body.decode("utf-8", "replace"), payload_base64=base64.b64encode(body).decode(),
        payload_size=row["payload_size"], payload_truncated=len(body) < row["payload_size"],
    )


def _conn(session: Session) -> Any:
    """The session's psycopg connection, inside its transaction (the devices SQL is psycopg)."""
    return session.connection().connection.driver_connection


@router.get(
    "", response_model=Page[DeadLetterPublic], summary="Dead letters, newest first (admin)",
    responses=problem_responses(401, 403, 422),
)
def list_dead_letters(
    session: SessionDep, actor: AdminUser,
    reason: Annotated[Reason | None, Query(description="Only this reason code.")] = None,
    since: Annotated[Instant | None, Query(description="Only those received since.")] = None,
    limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None,
) -> Page[DeadLetterPublic]:
    after = decode_cursor("dead_letters", cursor, int)
    rows = service.list_dead_letters(
        _conn(session), reason=None if reason is None else reason.value, since=since,
        before_id=None if after is None else after[0], limit=limit + 1,
        payload_cap=LIST_PAYLOAD_CAP,
    )
    page, nxt = page_of("dead_letters", rows, limit, lambda r: [r["id"]])
    audit.record(session, user_id=actor.id, action="dead_letter.list", resource="dead_letter",
                 detail={"reason": reason, "count": len(page)})
    return Page[DeadLetterPublic](items=[_public(r) for r in page], next_cursor=nxt)


@router.get(
    "/{dead_letter_id}", response_model=DeadLetterPublic,
    summary="One dead letter with its whole stored payload (admin)",
    responses=problem_responses(401, 403, 404, 422),
)
def get_dead_letter(
    session: SessionDep, actor: AdminUser,
    dead_letter_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
) -> DeadLetterPublic:
    row = service.get_dead_letter(_conn(session), dead_letter_id=dead_letter_id)
    if row is None:
        raise NotFound()
    audit.record(session, user_id=actor.id, action="dead_letter.read", resource="dead_letter",
                 resource_id=str(dead_letter_id))
    return _public(row)
