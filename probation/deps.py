"""Typed dependencies: the request's session, the caller, role checks and the case scope.

Visibility lives here and only here: `CaseScope` says which cases the caller may
see (officer: their own; supervisor: their own and their officers'; admin: all)
as a SQLAlchemy clause or a SQL fragment, and every case-scoped route and
service filters through it. A case outside the scope is a 404, exactly like a
case that does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import ColumnElement, or_, true
from sqlmodel import Session, col, select

from db.engine import get_engine
from probation.app import AppContext
from probation.auth import user_id_from_token
from probation.errors import Forbidden, NotFound, Unauthorized
from probation.models import Case, Role, User

TOKEN_URL = "/api/v1/auth/token"
oauth2_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_session(ctx: ContextDep) -> Iterator[Session]:
    """One session per request, committed when the route returns (before the response is
    sent) and rolled back if it raises."""
    with Session(get_engine(ctx.database_url), expire_on_commit=False) as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        session.commit()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def jwt_secret(request: Request) -> str:
    """The token secret, resolved once per app."""
    secret: str | None = getattr(request.app.state, "jwt_secret", None)
    if secret is None:
        ctx: AppContext = request.app.state.ctx
        secret = ctx.settings.resolved_jwt_secret()
        request.app.state.jwt_secret = secret
    return secret


def _user_for_token(request: Request, session: Session, token: str | None) -> User:
    if not token:
        raise Unauthorized()
    user = session.get(User, user_id_from_token(token, jwt_secret(request)))
    if user is None or not user.is_active:
        raise Unauthorized("invalid_token")
    request.state.user_id = user.id
    return user


def get_current_user(
    request: Request, session: SessionDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> User:
    """The active user the bearer token names (401 otherwise)."""
    return _user_for_token(request, session, token)


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_stream_token(
    token: Annotated[str | None, Depends(oauth2_scheme)],
    access_token: Annotated[
        str | None,
        Query(max_length=4096, description="The bearer token, for clients that cannot set "
              "headers (a browser's EventSource). The Authorization header is preferred."),
    ] = None,
) -> str | None:
    """The bearer token of an event stream: the header, else the `access_token` parameter."""
    return token or access_token


StreamToken = Annotated[str | None, Depends(get_stream_token)]


def get_stream_user(request: Request, session: SessionDep, token: StreamToken) -> User:
    """`get_current_user` for event streams (token from the header or the query)."""
    return _user_for_token(request, session, token)


async def get_stream_scope(user: Annotated[User, Depends(get_stream_user)]) -> CaseScope:
    return CaseScope.of(user)


def require_role(*roles: Role) -> Callable[[User], Awaitable[User]]:
    """A dependency that lets only `roles` through (403 otherwise)."""

    async def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise Forbidden()
        return user

    check.__name__ = "require_" + "_or_".join(r.value for r in roles)
    return check


AdminUser = Annotated[User, Depends(require_role(Role.ADMIN))]
SupervisorOrAdmin = Annotated[User, Depends(require_role(Role.SUPERVISOR, Role.ADMIN))]


@dataclass(frozen=True)
class CaseScope:
    """The cases a user may see."""

    user_id: uuid.UUID
    role: Role

    @classmethod
    def of(cls, user: User) -> CaseScope:
        return cls(user.id, Role(user.role))

    @property
    def everything(self) -> bool:
        return self.role == Role.ADMIN

    def officers(self) -> Any:
        """The officers whose cases are in scope (not meaningful for admins)."""
        return select(User.id).where(
            or_(col(User.id) == self.user_id, col(User.supervisor_id) == self.user_id)
        )

    def where(self, officer_col: Any = None) -> ColumnElement[bool]:
        """A clause on a case's officer column (default `Case.officer_id`)."""
        column = col(Case.officer_id) if officer_col is None else officer_col
        if self.role == Role.ADMIN:
            return true()
        if self.role == Role.SUPERVISOR:
            return column.in_(self.officers())  # type: ignore[no-any-return]
        return column == self.user_id  # type: ignore[no-any-return]

    def case_ids(self) -> Any:
        """`SELECT id FROM cases` within scope."""
        return select(Case.id).where(self.where())

    def sql(self, officer_expr: str = "c.officer_id") -> str:
        """The same rule as raw SQL over `officer_expr`, with the parameter `:scope_uid`."""
        if self.role == Role.ADMIN:
            return "TRUE"
        if self.role == Role.SUPERVISOR:
            return (f"({officer_expr} = :scope_uid OR {officer_expr} IN "
                    "(SELECT id FROM users WHERE supervisor_id = :scope_uid))")
        return f"{officer_expr} = :scope_uid"

    @property
    def params(self) -> dict[str, Any]:
        return {"scope_uid": self.user_id}

    def may_assign_to(self, officer: User) -> bool:
        """Whether a case may be given to `officer` by this user."""
        if officer.role not in (Role.OFFICER, Role.SUPERVISOR) or not officer.is_active:
            return False
        if self.role == Role.ADMIN:
            return True
        if self.role == Role.SUPERVISOR:
            return officer.id == self.user_id or officer.supervisor_id == self.user_id
        return officer.id == self.user_id


async def get_scope(user: CurrentUser) -> CaseScope:
    return CaseScope.of(user)


ScopeDep = Annotated[CaseScope, Depends(get_scope)]
StreamScopeDep = Annotated[CaseScope, Depends(get_stream_scope)]


def get_visible_case(
    session: SessionDep, scope: ScopeDep,
    case_id: Annotated[uuid.UUID, Path(description="Case id.")],
) -> Case:
    """The case of the path, if the caller may see it (404 otherwise, as if missing)."""
    case = session.exec(select(Case).where(Case.id == case_id, scope.where())).first()
    if case is None:
        raise NotFound()
    return case


VisibleCase = Annotated[Case, Depends(get_visible_case)]


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
            description="Repeat a request safely: the same key (per user) replays the first "
            "successful response for 24 hours.",
        ),
    ] = None,
) -> str | None:
    """Documents `Idempotency-Key`; the replay itself is `probation.idempotency`'s middleware."""
    return key


Idempotent = Depends(idempotency_key)
