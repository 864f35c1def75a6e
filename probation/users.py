"""User creation shared by the CLI and the API."""

from __future__ import annotations

import uuid

from sqlmodel import Session, select

from db.engine import get_engine
from probation.models import Role, User
from probation.security import hash_password


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
    if len(password) < 8:
        raise UserError("password must have at least 8 characters")
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
