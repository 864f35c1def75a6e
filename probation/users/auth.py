"""Sign-in: Argon2 password check with throttling, an optional TOTP second factor,
short-lived HS256 JWT access tokens and rotating refresh tokens.

An access token carries the user's token generation (`gen`: their `tokens_valid_after`
in microseconds); a password change, a deactivation or a reset of the second factor
moves it, and every token issued before is refused from the next request on. A refresh
token is a random string of which only a SHA-256 is stored; each works once and is
replaced by a new one of the same family; presenting a used one again (a stolen copy)
revokes the whole family.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import text
from sqlmodel import Session, select

from db.types import utcnow
from probation.audit import service as audit
from probation.errors import Unauthorized
from probation.settings import Settings
from probation.users import totp
from probation.users.models import Role, User
from probation.users.security import hash_password, verify_password

ALGORITHM = "HS256"
SETUP_SCOPE = "totp_setup"
_DUMMY_HASH = hash_password("not-a-real-password-but-equal-in-cost")


def generation(user: User) -> int:
    """The user's token generation: `tokens_valid_after` in microseconds."""
    tva = user.tokens_valid_after
    return int(tva.astimezone(UTC).timestamp() * 1_000_000) if tva else 0


def create_access_token(
    user: User, settings: Settings, *, now: datetime | None = None, scope: str | None = None,
) -> tuple[str, int]:
    """A signed token for `user` and its lifetime in seconds."""
    issued = now or utcnow()
    ttl = settings.jwt_ttl_s
    claims: dict[str, object] = {
        "sub": str(user.id),
        "role": user.role.value if hasattr(user.role, "value") else str(user.role),
        "gen": generation(user),
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    if scope:
        claims["scp"] = scope
    return jwt.encode(claims, settings.resolved_jwt_secret(), algorithm=ALGORITHM), ttl


@dataclass(frozen=True)
class Claims:
    user_id: uuid.UUID
    gen: int
    scope: str | None


def decode_token(token: str, secret: str) -> Claims:
    """The claims of a valid, unexpired token (raises `Unauthorized("invalid_token")`)."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM],
            options={"require": ["exp", "iat", "sub", "gen"]},
        )
        scope = claims.get("scp")
        return Claims(uuid.UUID(str(claims["sub"])), int(claims["gen"]),
                      str(scope) if scope is not None else None)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise Unauthorized("invalid_token") from None


def user_id_from_token(token: str, secret: str) -> uuid.UUID:
    """The user id a valid, unexpired token names (its generation is not checked here)."""
    return decode_token(token, secret).user_id


def totp_required(user: User, settings: Settings) -> bool:
    role = user.role.value if isinstance(user.role, Role) else str(user.role)
    return bool(user.totp_required) or role in settings.totp_required_roles


# ---- refresh tokens ----------------------------------------------------------------------


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def issue_refresh_token(
    session: Session, *, user: User, settings: Settings, family_id: uuid.UUID | None = None,
) -> tuple[str, int]:
    token = secrets.token_urlsafe(32)
    ttl = settings.refresh_ttl_s
    session.execute(
        text("INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at) "
             "VALUES (:id, :uid, :fam, :h, now() + make_interval(secs => :ttl))"),
        {"id": uuid.uuid4(), "uid": user.id, "fam": family_id or uuid.uuid4(),
         "h": _digest(token), "ttl": ttl},
    )
    return token, ttl


def use_refresh_token(session: Session, *, token: str, settings: Settings) -> tuple[User, str, int]:
    """Rotate `token`: the user and a new refresh token of the same family. A used or
    revoked token revokes its family (reuse of a stolen token); all raise 401."""
    row = session.execute(
        text("SELECT r.id, r.user_id, r.family_id, r.issued_at, r.expires_at, r.used_at, "
             "r.revoked_at FROM refresh_tokens r WHERE r.token_hash = :h FOR UPDATE"),
        {"h": _digest(token)},
    ).first()
    if row is None:
        raise Unauthorized("invalid_token")
    if row.used_at is not None or row.revoked_at is not None:
        session.rollback()  # release the row lock: the revocation commits on its own
        _revoke_family_now(session, row.family_id, row.user_id)
        raise Unauthorized("invalid_token")
    user = session.get(User, row.user_id)
    if (user is None or not user.is_active or row.expires_at <= utcnow()
            or row.issued_at < user.tokens_valid_after):
        raise Unauthorized("invalid_token")
    session.execute(text("UPDATE refresh_tokens SET used_at = now() WHERE id = :id"),
                    {"id": row.id})
    new, ttl = issue_refresh_token(session, user=user, settings=settings,
                                   family_id=row.family_id)
    return user, new, ttl


def _revoke_family_now(session: Session, family_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Revoke a family in its own transaction (it must survive the 401) and audit it."""
    with Session(session.get_bind()) as s:
        s.execute(text("UPDATE refresh_tokens SET revoked_at = now() "
                       "WHERE family_id = :f AND revoked_at IS NULL"), {"f": family_id})
        audit.record(s, user_id=user_id, action="auth.refresh_reuse", resource="user",
                     resource_id=user_id, detail={"family_id": str(family_id)})
        s.commit()


def revoke_refresh_token(session: Session, *, token: str) -> None:
    """Sign out: the token's family stops working."""
    session.execute(
        text("UPDATE refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND "
             "family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = :h)"),
        {"h": _digest(token)},
    )


def end_sessions(session: Session, *, user: User) -> None:
    """Every token the user holds stops working now (password change, deactivation)."""
    user.tokens_valid_after = utcnow()
    session.add(user)
    session.execute(text("UPDATE refresh_tokens SET revoked_at = now() "
                         "WHERE user_id = :u AND revoked_at IS NULL"), {"u": user.id})


# ---- sign-in -----------------------------------------------------------------------------


def _record_failure(session: Session, user: User | None, username: str, reason: str) -> None:
    """Audit a failed sign-in in its own transaction (it must survive the 401)."""
    with Session(session.get_bind(), expire_on_commit=False) as s:
        audit.record(
            s, user_id=user.id if user else None, action="auth.login_failed", resource="user",
            resource_id=user.id if user else None,
            detail={"username": username[:64], "reason": reason},
        )
        s.commit()


def _check_totp(session: Session, user: User, code: str | None, totp_key: str) -> None:
    if code is None:
        raise Unauthorized("totp_required")
    assert user.totp_secret is not None
    step = totp.matching_step(totp.decrypt(totp_key, user.totp_secret), code,
                              last_step=user.totp_last_step)
    if step is None:
        raise Unauthorized("invalid_totp")
    user.totp_last_step = step
    session.add(user)


def authenticate(
    session: Session, *, username: str, password: str, totp_code: str | None = None,
    totp_key: str = "",
) -> User:
    """The user these credentials name (raises `Unauthorized`). Throttling is the caller's
    (`probation.users.throttle`): it sees the address."""
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None or not user.is_active:
        verify_password(user.password_hash if user else _DUMMY_HASH, password)  # same cost
        _record_failure(session, None, username, "credentials")
        raise Unauthorized("invalid_credentials")
    if not verify_password(user.password_hash, password):
        _record_failure(session, user, username, "credentials")
        raise Unauthorized("invalid_credentials")
    if user.totp_enabled:
        try:
            _check_totp(session, user, totp_code, totp_key)
        except Unauthorized as e:
            if e.code == "invalid_totp":
                _record_failure(session, user, username, "totp")
            raise
    audit.record(session, user_id=user.id, action="auth.login", resource="user",
                 resource_id=user.id, detail={"second_factor": bool(user.totp_enabled)})
    return user
