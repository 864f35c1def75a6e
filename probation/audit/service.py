"""The tamper-evident audit log: who did or read what, when, on which case.

Services call `record(session, ...)`; entries are appended when the session
commits (so a change and its audit entry commit or roll back together), under
a transaction-scoped advisory lock so that appends are serialised and the
chain never forks. Each entry stores the hash of the one before it and its own
hash: HMAC-SHA256, under a key that is not in the database (`Settings.audit_key`, by
default a file in the data dir, mode 0600), over the canonical JSON (sorted keys, no
spaces, UTF-8) of its id, time, user, action, resource, case, detail and previous hash.
Whoever can write the database but not read that key cannot produce a valid entry, so an
edit, a deletion or a chain recomputed without the key is found by `verify`.

The head of the chain is anchored outside the database (`anchor`: a line in
`<data_dir>/audit-anchors.jsonl`, the log, optionally the webhook) by the scheduler; an
anchored entry that is missing (a dropped tail, a truncation) or has changed (a chain
recomputed even with the key) is found by `verify` too. The database refuses UPDATE,
DELETE and TRUNCATE on the table (triggers); these only stop mistakes: the key and the
anchors are what an administrator of the database cannot get around.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, event, or_, text
from sqlmodel import Session, col, select

from db.types import utcnow
from probation.audit.models import AuditEntry, AuditEntryPublic
from probation.cases.models import Case
from probation.cases.scope import CaseScope
from probation.errors import NotFound
from probation.pagination import decode_cursor, page_of, parse_bigint
from probation.users.models import User

if TYPE_CHECKING:
    from starlette.requests import Request

    from probation.settings import Settings

log = logging.getLogger(__name__)
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
    key: bytes | None,
) -> str:
    """HMAC-SHA256 of the entry under `key` (None: the plain SHA-256 of chains from before
    revision 0021, read only to check them before they are re-chained)."""
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
    if key is None:
        return hashlib.sha256(canonical(doc)).hexdigest()
    return hmac.new(key, canonical(doc), hashlib.sha256).hexdigest()


# ---- the key ------------------------------------------------------------------------------

_KEYS: weakref.WeakKeyDictionary[Engine, bytes] = weakref.WeakKeyDictionary()


def key_id(key: bytes) -> str:
    """A public name of a key (never the key): the first 16 hex digits of an HMAC."""
    return hmac.new(key, b"probation audit key id", hashlib.sha256).hexdigest()[:16]


def register_key(database_url: str, key: bytes) -> None:
    """Sessions on this database's engine chain entries under `key`."""
    from db.engine import get_engine

    _KEYS[get_engine(database_url)] = key


def _engine_of(session: Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def key_for(session: Session) -> bytes:
    """The key registered for the session's database, else the process settings' one."""
    engine = _engine_of(session)
    key = _KEYS.get(engine)
    if key is None:
        from probation.settings import Settings

        key = _KEYS[engine] = Settings().resolved_audit_key()
    return key


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


def record_now(
    session: Session, *, user_id: uuid.UUID | None, action: str, resource: str,
    resource_id: str | uuid.UUID | None = None, case_id: uuid.UUID | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an entry in its own transaction now: it survives the request's rollback (a
    refusal is recorded although the request fails)."""
    with Session(session.get_bind()) as s:
        record(s, user_id=user_id, action=action, resource=resource, resource_id=resource_id,
               case_id=case_id, detail=detail)
        s.commit()


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
    key = key_for(session)
    ids = [int(r.id) for r in head]
    rows: list[dict[str, Any]] = []
    for entry_id, e in zip(sorted(ids), entries, strict=True):
        at = utcnow()
        h = entry_hash(
            id=entry_id, at=at, user_id=e.user_id, action=e.action, resource=e.resource,
            resource_id=e.resource_id, case_id=e.case_id, detail=e.detail, prev_hash=prev,
            key=key,
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
    head_id: int | None = None
    anchors_checked: int = 0


_SELECT = ("SELECT id, at, user_id, action, resource, resource_id, case_id, detail, "
           "prev_hash, hash FROM audit_log WHERE id > :after ORDER BY id LIMIT :n")


def _rows(session: Session, batch: int) -> Any:
    last_id = 0
    while True:
        rows = session.execute(text(_SELECT), {"after": last_id, "n": batch}).all()
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id


def _expected(r: Any, key: bytes | None) -> str:
    return entry_hash(
        id=r.id, at=r.at, user_id=r.user_id, action=r.action, resource=r.resource,
        resource_id=r.resource_id, case_id=r.case_id, detail=r.detail, prev_hash=r.prev_hash,
        key=key,
    )


def chain_key_id(session: Session) -> str | None:
    try:
        with session.begin_nested():
            return session.execute(text("SELECT key_id FROM audit_chain")).scalar()
    except Exception:  # a database from before revision 0021
        return None


def verify(
    session: Session, *, key: bytes | None = None, anchors: list[Anchor] | None = None,
    batch: int = 5000,
) -> Verification:
    """Recompute the chain under the key from the first entry, stop at the first entry
    that does not fit, then check the anchors: each anchored entry must still be there
    with the hash it had.

    Reasons: `key_mismatch` (the chain is keyed under another key), `hash_mismatch` (an
    entry was altered, or the chain recomputed without the key), `prev_hash_mismatch`
    (an entry was removed or reordered), `tail_missing` (entries anchored earlier are
    gone: a dropped tail or a truncation), `anchor_mismatch` (an anchored entry changed:
    the chain was rewritten from there on).
    """
    key = key if key is not None else key_for(session)
    stored = chain_key_id(session)
    if stored is not None and stored != key_id(key):
        return Verification(False, 0, None, "key_mismatch")
    wanted = {a.id: a.hash for a in anchors or []}
    seen: dict[int, str] = {}
    prev, count, last_id = GENESIS, 0, None
    for r in _rows(session, batch):
        if r.prev_hash != prev:
            return Verification(False, count, r.id, "prev_hash_mismatch", last_id)
        if _expected(r, key) != r.hash:
            return Verification(False, count, r.id, "hash_mismatch", last_id)
        if r.id in wanted:
            seen[r.id] = r.hash
        prev, count, last_id = r.hash, count + 1, r.id
    for a in sorted(anchors or [], key=lambda a: a.id):
        if last_id is None or a.id > last_id:
            return Verification(False, count, a.id, "tail_missing", last_id, len(wanted))
        if seen.get(a.id) != a.hash:
            return Verification(False, count, a.id, "anchor_mismatch", last_id, len(wanted))
    return Verification(True, count, None, None, last_id, len(wanted))


# ---- anchors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    id: int
    hash: str


def read_anchors(path: Path) -> list[Anchor]:
    """The anchors written since the chain was last re-keyed (a `rechain` line)."""
    if not path.exists():
        return []
    out: list[Anchor] = []
    for line in path.read_text().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            log.warning("audit anchors: a line that is not JSON in %s", path)
            continue
        if doc.get("rechain"):
            out = []
        if isinstance(doc.get("id"), int) and isinstance(doc.get("hash"), str):
            out.append(Anchor(doc["id"], doc["hash"]))
    return out


def _append_line(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(doc, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def head(session: Session) -> tuple[int, str] | None:
    row = session.execute(text("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")).first()
    return (int(row.id), str(row.hash)) if row else None


def anchor(database_url: str, settings: Settings, *, rechain: bool = False) -> dict[str, Any]:
    """Write the chain head outside the database: the anchor file, the log, and the
    webhook if configured. Skipped when the head has not moved since the last anchor."""
    from db.engine import get_engine

    path = settings.anchor_path()
    with Session(get_engine(database_url)) as session:
        top = head(session)
    if top is None:
        return {"anchored": False}
    previous = read_anchors(path)
    if not rechain and previous and previous[-1] == Anchor(*top):
        return {"anchored": False, "id": top[0]}
    doc: dict[str, Any] = {"at": utcnow().isoformat(timespec="seconds"), "id": top[0],
                           "hash": top[1]}
    if rechain:
        doc["rechain"] = True
    _append_line(path, doc)
    log.info("audit anchor: id=%d hash=%s", top[0], top[1])
    if settings.audit_anchor_webhook and settings.webhook_url and settings.webhook_secret:
        _post_anchor(settings.webhook_url, settings.webhook_secret, doc)
    return {"anchored": True, "id": top[0]}


def _post_anchor(url: str, secret: str, doc: dict[str, Any]) -> None:
    import httpx

    body = json.dumps({"type": "audit_anchor", **doc}, sort_keys=True).encode()
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    try:
        httpx.post(url, content=body, timeout=5, headers={
            "Content-Type": "application/json", "X-Signature-SHA256": sig})
    except httpx.HTTPError as e:
        log.warning("audit anchor: the webhook did not take it (%s)", e)


# ---- keying the chain (upgrade, key rotation) ---------------------------------------------


def _rechain(session: Session, *, old_key: bytes | None, new_key: bytes, reason: str) -> None:
    """Recompute every entry's hash under `new_key`, after checking the chain under
    `old_key`; the outcome of that check is in the `audit.rechain` entry appended after."""
    before = verify(session, key=old_key) if old_key is not None else _verify_legacy(session)
    session.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update"))
    prev, n = GENESIS, 0
    for r in list(_rows(session, 5000)):
        doc = dict(r._mapping) | {"prev_hash": prev}
        h = entry_hash(**{k: doc[k] for k in (
            "id", "at", "user_id", "action", "resource", "resource_id", "case_id", "detail",
            "prev_hash")}, key=new_key)
        session.execute(text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE id = :id"),
                        {"p": prev, "h": h, "id": r.id})
        prev, n = h, n + 1
    session.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update"))
    session.execute(text("UPDATE audit_chain SET key_id = :k, keyed_at = now()"),
                    {"k": key_id(new_key)})
    _KEYS[_engine_of(session)] = new_key
    append(session, [Pending(None, "audit.rechain", "audit", None, None, {
        "reason": reason, "entries": n, "key_id": key_id(new_key),
        "previous_chain_ok": before.ok, "previous_broken_at": before.broken_at,
        "previous_reason": before.reason})])


def _verify_legacy(session: Session) -> Verification:
    prev, count = GENESIS, 0
    for r in _rows(session, 5000):
        if r.prev_hash != prev:
            return Verification(False, count, r.id, "prev_hash_mismatch")
        if _expected(r, None) != r.hash:
            return Verification(False, count, r.id, "hash_mismatch")
        prev, count = r.hash, count + 1
    return Verification(True, count)


def ensure_keyed(database_url: str, settings: Settings) -> None:
    """Register the audit key for this database; a chain not keyed yet (a database from
    before revision 0021) is re-chained under it now, and that is recorded and anchored."""
    from db.engine import get_engine

    key = settings.resolved_audit_key()
    register_key(database_url, key)
    with Session(get_engine(database_url)) as session:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        try:
            state = session.execute(text("SELECT key_id FROM audit_chain FOR UPDATE")).first()
        except Exception:
            log.warning("audit: the database is older than revision 0021; not keyed")
            return
        if state is None:
            return
        if state.key_id is None and head(session) is None:
            session.execute(text("UPDATE audit_chain SET key_id = :k, keyed_at = now()"),
                            {"k": key_id(key)})
            session.commit()
        elif state.key_id is None:
            _rechain(session, old_key=None, new_key=key,
                     reason="upgrade: entries re-chained under the HMAC key")
            session.commit()
            anchor(database_url, settings, rechain=True)
        elif state.key_id != key_id(key):
            log.error("audit: the chain is keyed under key %s but the configured audit key is "
                      "%s: verify will fail until the right key is configured",
                      state.key_id, key_id(key))


def rotate_key(database_url: str, settings: Settings, *, new_key: bytes) -> Verification:
    """Re-chain under `new_key` (the chain is checked under the current key first; the
    outcome is recorded in the re-chain entry). The caller stores the new key."""
    from db.engine import get_engine

    old = settings.resolved_audit_key()
    with Session(get_engine(database_url)) as session:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        before = verify(session, key=old, anchors=read_anchors(settings.anchor_path()))
        _rechain(session, old_key=old, new_key=new_key, reason="key rotation")
        session.commit()
    return before


def record_refusal(database_url: str, *, request: Request, status: int) -> None:
    """Audit a refused request (403/404) of a signed-in caller, in its own transaction."""
    from db.engine import get_engine

    user_id = getattr(request.state, "user_id", None)
    if user_id is None:
        return
    params = {k: str(v) for k, v in request.path_params.items()}
    case_id = params.get("case_id")
    with Session(get_engine(database_url)) as s:
        record(s, user_id=user_id, action="access.refused", resource="request",
               case_id=_uuid_or_none(case_id),
               detail={"method": request.method, "path": request.url.path[:300],
                       "status": status, "params": params})
        s.commit()


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


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
