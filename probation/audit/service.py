"""The tamper-evident audit log: who did or read what, when, on which case.

Services call `record(session, ...)`; entries are appended when the session
commits (so a change and its audit entry commit or roll back together), under
a transaction-scoped advisory lock so that appends are serialised and the
chain never forks. Each entry stores the hash of the one before it and its own
hash: SHA-256 over the canonical JSON (sorted keys, no spaces, UTF-8) of its id,
time, user, action, resource, case, detail and previous hash. `verify` walks
the chain and names the first entry that does not fit.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, event, or_, text
from sqlmodel import Session, col, select

from db.types import utcnow
from probation.audit.models import AuditEntry, AuditEntryPublic
from probation.cases.models import Case
from probation.cases.scope import CaseScope
from probation.errors import NotFound
from probation.pagination import decode_cursor, page_of, parse_bigint
from probation.users.models import User

GENESIS = "0" * 64
LOCK_KEY = 0x61756469745F6C67 & 0x7FFFFFFFFFFFFFFF  # "audit_lg"
_PENDING = "audit_pending"


@dataclass
class Pending:
    user_id: uuid.UUID | None
    action: str
    resource: str
    resource_id: str | None
    case_id: uuid.UUID | None
    detail: dict[str, Any] = field(default_factory=dict)


def canonical(entry: dict[str, Any]) -> bytes:
    """The canonical encoding that is hashed."""
    return json.dumps(
        entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode("utf-8")


def entry_hash(
    *, id: int, at: datetime, user_id: uuid.UUID | None, action: str, resource: str,
    resource_id: str | None, case_id: uuid.UUID | None, detail: dict[str, Any], prev_hash: str,
) -> str:
    doc = {
        "id": id,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "user_id": str(user_id) if user_id else None,
        "action": action,
        "resource": resource,
        "resource_id": resource_id,
        "case_id": str(case_id) if case_id else None,
        "detail": detail,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical(doc)).hexdigest()


def record(
    session: Session, *, user_id: uuid.UUID | None, action: str, resource: str,
    resource_id: str | uuid.UUID | None = None, case_id: uuid.UUID | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Queue an entry; it is appended when `session` commits."""
    pending: list[Pending] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        if not event.contains(session, "before_commit", _flush):
            event.listen(session, "before_commit", _flush)
            event.listen(session, "after_rollback", _discard)
    # JSON round trip: what is hashed is exactly what jsonb gives back
    clean = json.loads(json.dumps(detail or {}, default=str))
    pending.append(
        Pending(user_id, action, resource, str(resource_id) if resource_id else None, case_id, clean)
    )


def _discard(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _flush(session: Session) -> None:
    pending: list[Pending] | None = session.info.pop(_PENDING, None)
    if pending:
        append(session, pending)


def append(session: Session, entries: list[Pending]) -> list[int]:
    """Append `entries` to the chain now (inside `session`'s transaction)."""
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
    # a new statement, so a new snapshot: it sees the previous lock holder's commit
    head = session.execute(
        text("SELECT (SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1) AS prev, "
             "nextval(pg_get_serial_sequence('audit_log', 'id')) AS id "
             "FROM generate_series(1, :n)"),
        {"n": len(entries)},
    ).all()
    prev = head[0].prev or GENESIS
    ids = [int(r.id) for r in head]
    rows: list[dict[str, Any]] = []
    for entry_id, e in zip(sorted(ids), entries, strict=True):
        at = utcnow()
        h = entry_hash(
            id=entry_id, at=at, user_id=e.user_id, action=e.action, resource=e.resource,
            resource_id=e.resource_id, case_id=e.case_id, detail=e.detail, prev_hash=prev,
        )
        rows.append({
            "id": entry_id, "at": at, "user_id": e.user_id, "action": e.action,
            "resource": e.resource, "resource_id": e.resource_id, "case_id": e.case_id,
            "detail": json.dumps(e.detail), "prev_hash": prev, "hash": h,
        })
        prev = h
    session.execute(
        text(
            "INSERT INTO audit_log (id, at, user_id, action, resource, resource_id, case_id, "
            "detail, prev_hash, hash) VALUES (:id, :at, :user_id, :action, :resource, "
            ":resource_id, :case_id, CAST(:detail AS jsonb), :prev_hash, :hash)"
        ),
        rows,
    )
    return [r["id"] for r in rows]


@dataclass
class Verification:
    ok: bool
    entries: int
    broken_at: int | None = None
    reason: str | None = None


def verify(session: Session, *, batch: int = 5000) -> Verification:
    """Recompute the chain from the first entry; stop at the first entry that does not fit."""
    prev = GENESIS
    count = 0
    last_id = 0
    while True:
        rows = session.execute(
            text(
                "SELECT id, at, user_id, action, resource, resource_id, case_id, detail, "
                "prev_hash, hash FROM audit_log WHERE id > :after ORDER BY id LIMIT :n"
            ),
            {"after": last_id, "n": batch},
        ).all()
        if not rows:
            return Verification(ok=True, entries=count)
        for r in rows:
            if r.prev_hash != prev:
                return Verification(False, count, r.id, "prev_hash_mismatch")
            expected = entry_hash(
                id=r.id, at=r.at, user_id=r.user_id, action=r.action, resource=r.resource,
                resource_id=r.resource_id, case_id=r.case_id, detail=r.detail,
                prev_hash=r.prev_hash,
            )
            if expected != r.hash:
                return Verification(False, count, r.id, "hash_mismatch")
            prev = r.hash
            count += 1
            last_id = r.id


def list_entries(
    session: Session, *, actor: User, case_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None, since: datetime | None = None, action: str | None = None,
    limit: int = 50, cursor: str | None = None,
) -> tuple[list[Any], str | None]:
    """Entries `actor` may see, newest first: admins all; supervisors those about the cases
    they may see plus their team's actions outside any case."""
    scope = CaseScope.of(actor)
    q = select(AuditEntry)
    if not scope.everything:
        if case_id is not None and session.exec(
            select(Case.id).where(Case.id == case_id, scope.where())
        ).first() is None:
            raise NotFound()
        q = q.where(or_(
            col(AuditEntry.case_id).in_(scope.case_ids()),
            and_(col(AuditEntry.case_id).is_(None), col(AuditEntry.user_id).in_(scope.officers())),
        ))
    if case_id is not None:
        q = q.where(AuditEntry.case_id == case_id)
    if user_id is not None:
        q = q.where(AuditEntry.user_id == user_id)
    if since is not None:
        q = q.where(col(AuditEntry.at) >= since)
    if action is not None:
        q = q.where(AuditEntry.action == action)
    after = decode_cursor("audit", cursor, parse_bigint)
    if after is not None:
        q = q.where(col(AuditEntry.id) < after[0])
    rows = session.exec(q.order_by(col(AuditEntry.id).desc()).limit(limit + 1)).all()
    items = [AuditEntryPublic.model_validate(r) for r in rows]
    return page_of("audit", items, limit, lambda e: [e.id])
