"""User creation shared by the CLI and the API."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from db.engine import get_engine
from db.types import utcnow
from probation.audit import service as audit
from probation.errors import Conflict, Forbidden, NotFound, Unauthorized, invalid
from probation.pagination import decode_cursor, page_of, parse_text
from probation.settings import Settings
from probation.users import totp
from probation.users.auth import end_sessions, totp_required
from probation.users.models import MeUpdate, Role, TotpStatus, User, UserCreate, UserUpdate
from probation.users.security import hash_password, password_problem, verify_password


class UserError(ValueError):
    """A user cannot be created as asked."""


def create_user_cli(
    database_url: str, *, username: str, role: str, password: str,
    supervisor: str | None = None, full_name: str = "",
) -> uuid.UUID:
    """Create a user from the command line; `supervisor` is a username."""
    try:
        r = Role(role)
    except ValueError:
        raise UserError(f"role must be one of {', '.join(x.value for x in Role)}") from None
    problem = password_problem(password)
    if problem:
        raise UserError(f"password: {problem}")
    with Session(get_engine(database_url)) as s:
        if s.exec(select(User).where(User.username == username)).first():
            raise UserError(f"user {username!r} exists")
        sup_id = None
        if supervisor:
            sup = s.exec(select(User).where(User.username == supervisor)).first()
            if sup is None or sup.role != Role.SUPERVISOR:
                raise UserError(f"no supervisor named {supervisor!r}")
            sup_id = sup.id
        user = User(
            username=username, password_hash=hash_password(password), role=r,
            full_name=full_name, supervisor_id=sup_id,
        )
        s.add(user)
        s.commit()
        return user.id


# ---- API services (raise domain errors; the caller commits) ------------------------------


def _check_supervisor(session: Session, role: Role, supervisor_id: uuid.UUID | None) -> None:
    if supervisor_id is None:
        return
    if role != Role.OFFICER:
        raise invalid("supervisor_id", "invalid_supervisor")
    sup = session.get(User, supervisor_id)
    if sup is None or sup.role != Role.SUPERVISOR or not sup.is_active:
        raise invalid("supervisor_id", "not_a_supervisor")


def create_user(session: Session, *, data: UserCreate, actor: User) -> User:
    """Create a user (admin)."""
    if session.exec(select(User).where(User.username == data.username)).first():
        raise Conflict("username_taken", username=data.username)
    _check_supervisor(session, data.role, data.supervisor_id)
    user = User(
        username=data.username, password_hash=hash_password(data.password), role=data.role,
        full_name=data.full_name, supervisor_id=data.supervisor_id,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("username_taken", username=data.username) from None
    audit.record(session, user_id=actor.id, action="user.create", resource="user",
                 resource_id=user.id, detail={"username": user.username, "role": user.role})
    return user


def visible_users(actor: User) -> Any:
    """Users `actor` may list: admin all; supervisor themselves and their officers."""
    q = select(User)
    if actor.role != Role.ADMIN:
        q = q.where(or_(col(User.id) == actor.id, col(User.supervisor_id) == actor.id))
    return q


def list_users(
    session: Session, *, actor: User, role: Role | None, limit: int, cursor: str | None
) -> tuple[list[User], str | None]:
    after = decode_cursor("users", cursor, parse_text)
    q = visible_users(actor)
    if role is not None:
        q = q.where(User.role == role)
    if after is not None:
        q = q.where(User.username > after[0])
    rows = list(session.exec(q.order_by(User.username).limit(limit + 1)))
    return page_of("users", rows, limit, lambda u: [u.username])


def get_user(session: Session, *, user_id: uuid.UUID, actor: User) -> User:
    user = session.exec(visible_users(actor).where(User.id == user_id)).first()
    if user is None:
        raise NotFound()
    return user


def update_user(session: Session, *, user_id: uuid.UUID, data: UserUpdate, actor: User) -> User:
    """Change a user (admin): name, role, supervisor, active flag, password, lock-out."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound()
    changes = data.model_dump(exclude_unset=True)
    role = Role(changes.get("role") or user.role)
    supervisor_id = changes.get("supervisor_id", user.supervisor_id)
    if role != Role.OFFICER and "supervisor_id" not in changes:
        supervisor_id = None
    _check_supervisor(session, role, supervisor_id)
    if changes.get("full_name") is not None:
        user.full_name = changes["full_name"]
    ends = (changes.get("is_active") is False or changes.get("password") is not None
            or bool(changes.get("totp_reset")) or ("role" in changes and role != user.role))
    if changes.get("is_active") is not None:
        user.is_active = changes["is_active"]
    if changes.get("totp_required") is not None:
        user.totp_required = changes["totp_required"]
    if changes.get("totp_reset"):
        user.totp_enabled, user.totp_secret, user.totp_pending = False, None, None
    user.role = role
    user.supervisor_id = supervisor_id
    if changes.get("password") is not None:
        user.password_hash = hash_password(changes["password"])
    if changes.get("unlock"):
        user.failed_logins = 0
        user.locked_until = None
    user.updated_at = utcnow()
    if ends:
        end_sessions(session, user=user)
    session.add(user)
    session.flush()
    detail = {k: v for k, v in changes.items() if k != "password"}
    detail["sessions_ended"] = ends
    if "password" in changes:
        detail["password"] = "changed"
    audit.record(session, user_id=actor.id, action="user.update", resource="user",
                 resource_id=user.id, detail=detail)
    return user


def change_own_password(session: Session, *, user: User, current: str, new: str) -> None:
    """The caller changes their password; every token they hold stops working."""
    if not verify_password(user.password_hash, current):
        raise Forbidden("wrong_password")
    user.password_hash = hash_password(new)
    user.updated_at = utcnow()
    end_sessions(session, user=user)
    audit.record(session, user_id=user.id, action="user.password_change", resource="user",
                 resource_id=user.id)


def set_own_preferences(session: Session, *, user: User, data: MeUpdate) -> User:
    """The caller's own preferences (today: the language the console shows them)."""
    user.language = data.language
    user.updated_at = utcnow()
    session.add(user)
    session.flush()
    audit.record(session, user_id=user.id, action="user.preferences", resource="user",
                 resource_id=user.id, detail={"language": data.language})
    return user


def totp_action(
    session: Session, *, user: User, action: str, code: str | None, settings: Settings,
) -> TotpStatus:
    """Enable (a pending secret), confirm (the factor is on) or disable the caller's TOTP."""
    key = settings.resolved_totp_key()
    required = totp_required(user, settings)
    if action == "enable":
        secret = totp.new_secret()
        user.totp_pending = totp.encrypt(key, secret)
        session.add(user)
        audit.record(session, user_id=user.id, action="user.totp_enable", resource="user",
                     resource_id=user.id)
        return TotpStatus(enabled=user.totp_enabled, required=required, secret=secret,
                          otpauth_uri=totp.uri(secret, user.username))
    if code is None:
        raise invalid("code", "missing")
    if action == "confirm":
        if user.totp_pending is None:
            raise Conflict("totp_not_started")
        step = totp.matching_step(totp.decrypt(key, user.totp_pending), code)
        if step is None:
            raise Unauthorized("invalid_totp")
        user.totp_secret, user.totp_pending = user.totp_pending, None
        user.totp_enabled, user.totp_last_step = True, step
        end_sessions(session, user=user)  # the setup-only token and any older ones
        audit.record(session, user_id=user.id, action="user.totp_confirm", resource="user",
                     resource_id=user.id)
        return TotpStatus(enabled=True, required=required)
    # disable
    if required:
        raise Conflict("totp_required_by_role")
    if not user.totp_enabled or user.totp_secret is None:
        return TotpStatus(enabled=False, required=required)
    # a current code (the step used to sign in may be the current one: not refused here)
    if totp.matching_step(totp.decrypt(key, user.totp_secret), code) is None:
        raise Unauthorized("invalid_totp")
    user.totp_enabled, user.totp_secret = False, None
    end_sessions(session, user=user)
    audit.record(session, user_id=user.id, action="user.totp_disable", resource="user",
                 resource_id=user.id)
    return TotpStatus(enabled=False, required=required)
