"""Sign-in: Argon2 password check with lock-out, and short-lived HS256 JWT access tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import text
from sqlmodel import Session, select

from db.types import utcnow
from probation.audit import service as audit
from probation.errors import Unauthorized
from probation.settings import Settings
from probation.users.models import User
from probation.users.security import hash_password, verify_password

ALGORITHM = "HS256"
MAX_FAILED_LOGINS = 10
LOCK_DURATION = timedelta(minutes=15)
_DUMMY_HASH = hash_password("not-a-real-password-but-equal-in-cost")


def create_access_token(user: User, settings: Settings, *, now: datetime | None = None) -> tuple[str, int]:
    """A signed token for `user` and its lifetime in seconds."""
    issued = now or utcnow()
    ttl = settings.jwt_ttl_s
    claims = {
        "sub": str(user.id),
        "role": user.role.value if hasattr(user.role, "value") else str(user.role),
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, settings.resolved_jwt_secret(), algorithm=ALGORITHM), ttl


def user_id_from_token(token: str, secret: str) -> uuid.UUID:
    """The user id a valid, unexpired token names (raises `Unauthorized("invalid_token")`)."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "iat", "sub"]}
        )
        return uuid.UUID(str(claims["sub"]))
    except (jwt.PyJWTError, ValueError, TypeError):
        raise Unauthorized("invalid_token") from None


def _record_failure(
    session: Session, user: User | None, username: str, *, count: bool = True
) -> datetime | None:
    """Audit (and count) a failed sign-in in its own transaction (it must survive the 401);
    returns the lock-out end when this failure locks the account."""
    with Session(session.get_bind(), expire_on_commit=False) as s:
        locked_until: datetime | None = None
        if user is not None and count:
            locked_until = s.execute(
                text(
                    "UPDATE users SET "
                    " failed_logins = CASE WHEN failed_logins + 1 >= :max THEN 0 "
                    "                 ELSE failed_logins + 1 END,"
                    " locked_until = CASE WHEN failed_logins + 1 >= :max THEN :until "
                    "                ELSE locked_until END,"
                    " updated_at = now() "
                    "WHERE id = :id RETURNING CASE WHEN failed_logins = 0 THEN locked_until END"
                ),
                {"max": MAX_FAILED_LOGINS, "until": utcnow() + LOCK_DURATION, "id": user.id},
            ).scalar()
        audit.record(
            s, user_id=user.id if user else None, action="auth.login_failed", resource="user",
            resource_id=user.id if user else None,
            detail={"username": username, "locked": locked_until is not None or not count},
        )
        s.commit()
        return locked_until


def authenticate(session: Session, *, username: str, password: str) -> User:
    """The user these credentials name; counts failures and locks the account for 15 minutes
    after 10 of them (raises `Unauthorized`)."""
    user = session.exec(select(User).where(User.username == username)).first()
    now = utcnow()
    if user is not None and user.locked_until is not None and user.locked_until > now:
        verify_password(_DUMMY_HASH, password)
        _record_failure(session, user, username, count=False)
        raise Unauthorized("account_locked", until=user.locked_until.astimezone(UTC).isoformat(timespec="seconds"))
    if user is None or not user.is_active:
        verify_password(user.password_hash if user else _DUMMY_HASH, password)  # same cost
        _record_failure(session, None, username)
        raise Unauthorized("invalid_credentials")
    if not verify_password(user.password_hash, password):
        until = _record_failure(session, user, username)
        if until is not None:
            raise Unauthorized("account_locked", until=until.astimezone(UTC).isoformat(timespec="seconds"))
        raise Unauthorized("invalid_credentials")
    if user.failed_logins or user.locked_until is not None:
        user.failed_logins = 0
        user.locked_until = None
        user.updated_at = now
        session.add(user)
    audit.record(session, user_id=user.id, action="auth.login", resource="user", resource_id=user.id)
    return user
