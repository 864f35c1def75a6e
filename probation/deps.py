"""Typed dependencies: the request's session, the caller, role checks and the case scope.

The rule of which cases a caller may see is `probation.cases.scope.CaseScope`; here it
is only resolved per request (`ScopeDep`) and applied to a path's case (`VisibleCase`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Header, Path, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlmodel import Session, select

from db.engine import get_engine
from probation.cases.models import Case
from probation.cases.scope import CaseScope
from probation.context import AppContext
from probation.errors import Forbidden, NotFound, Unauthorized
from probation.settings import Settings
from probation.users.auth import SETUP_SCOPE, decode_token, generation
from probation.users.models import Role, User

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


def client_address(request: Request, settings: Settings) -> str:
    """The client's address: the TCP peer, or the last address a trusted proxy added."""
    peer = request.client.host if request.client else "unknown"
    if peer in settings.trusted_proxies:
        forwarded = request.headers.get("x-forwarded-for", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        while hops and hops[-1] in settings.trusted_proxies:
            hops.pop()
        if hops:
            return hops[-1][:64]
    return peer


def _user_for_token(
    request: Request, session: Session, token: str | None, *, setup: bool = False
) -> User:
    """The user of a valid token of the current generation. A `totp_setup` token passes
    only where `setup` is true (the caller and their second factor)."""
    if not token:
        raise Unauthorized()
    claims = decode_token(token, jwt_secret(request))
    user = session.get(User, claims.user_id)
    if user is None or not user.is_active or claims.gen != generation(user):
        raise Unauthorized("invalid_token")
    if claims.scope == SETUP_SCOPE and not setup:
        raise Unauthorized("totp_setup_required")
    if claims.scope not in (None, SETUP_SCOPE):
        raise Unauthorized("invalid_token")
    request.state.user_id = user.id
    return user


def get_current_user(
    request: Request, session: SessionDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> User:
    """The active user the bearer token names (401 otherwise)."""
    return _user_for_token(request, session, token)


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_setup_user(
    request: Request, session: SessionDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> User:
    """`get_current_user`, also for a token limited to setting up the second factor."""
    return _user_for_token(request, session, token, setup=True)


SetupUser = Annotated[User, Depends(get_setup_user)]


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
