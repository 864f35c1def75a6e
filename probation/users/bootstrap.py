"""Start-up tasks: the first admin user."""

from __future__ import annotations

import logging

from sqlmodel import Session, func, select

from db.engine import get_engine
from probation.settings import Settings
from probation.users.models import Role, User
from probation.users.security import hash_password

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


def ensure_embedded_admin(database_url: str, settings: Settings) -> str | None:
    """For the no-configuration `serve`: with no user and no admin password configured,
    create `admin` with a generated password kept (0600) in the data dir.

    Returns a line telling where the login is, or None when users exist already.
    """
    import secrets

    with Session(get_engine(database_url)) as s:
        if s.exec(select(func.count()).select_from(User)).one() > 0:
            return None
    password = secrets.token_urlsafe(12)
    path = settings.secret_file("admin_password")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(password + "\n")
    path.chmod(0o600)
    bootstrap_admin(database_url, settings.model_copy(update={"admin_password": password}))
    return f"Login:    admin, password generated into {path}"
