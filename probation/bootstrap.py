"""Start-up tasks: the first admin user."""

from __future__ import annotations

import logging

from sqlmodel import Session, func, select

from db.engine import get_engine
from probation.models import Role, User
from probation.security import hash_password
from probation.settings import Settings

log = logging.getLogger(__name__)


def bootstrap_admin(database_url: str, settings: Settings) -> bool:
    """Create `admin` from PROBATION_ADMIN_PASSWORD if no user exists yet."""
    if not settings.admin_password:
        return False
    with Session(get_engine(database_url)) as s:
        if s.exec(select(func.count()).select_from(User)).one() > 0:
            return False
        s.add(
            User(
                username="admin",
                password_hash=hash_password(settings.admin_password),
                role=Role.ADMIN,
                full_name="Administrator",
            )
        )
        s.commit()
    log.info("created the bootstrap admin user 'admin'")
    return True
