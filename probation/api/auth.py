"""Sign-in, refresh, sign-out, the caller, their password and second factor.

Sign-in is the OAuth2 password form at `POST /api/v1/auth/token`. With a TOTP second
factor enabled, the first attempt (username and password only) answers 401
`totp_required`; the client asks for the code and posts the form again with `totp`.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from sqlmodel import Session

from probation.deps import ContextDep, CurrentUser, SessionDep, SetupUser, client_address
from probation.errors import TooManyRequests, Unauthorized, invalid, problem_responses
from probation.settings import Settings
from probation.users import auth, service
from probation.users.models import (
    MeUpdate,
    PasswordChange,
    RefreshRequest,
    Token,
    TotpAction,
    TotpStatus,
    User,
    UserPublic,
)
from probation.users.throttle import LoginThrottle

router = APIRouter(tags=["auth"])


def throttle_of(request: Request, settings: Settings) -> LoginThrottle:
    t: LoginThrottle | None = getattr(request.app.state, "login_throttle", None)
    if t is None:
        t = LoginThrottle(free=settings.login_free_attempts,
                          max_wait_s=settings.login_backoff_max_s)
        request.app.state.login_throttle = t
    return t


def _tokens(session: Session, user: User, settings: Settings) -> Token:
    if auth.totp_required(user, settings) and not user.totp_enabled:
        token, ttl = auth.create_access_token(user, settings, scope=auth.SETUP_SCOPE)
        return Token(access_token=token, expires_in=ttl, scope=auth.SETUP_SCOPE)
    token, ttl = auth.create_access_token(user, settings)
    refresh, rttl = auth.issue_refresh_token(session, user=user, settings=settings)
    return Token(access_token=token, expires_in=ttl, refresh_token=refresh,
                 refresh_expires_in=rttl)


@router.post(
    "/auth/token", response_model=Token, summary="Sign in (OAuth2 password flow)",
    responses=problem_responses(401, 422, 429),
    description="Exchange a username and password for a short-lived bearer token and a "
    "refresh token. Users with a TOTP second factor send its current 6-digit code as "
    "`totp`; without it the answer is 401 with code `totp_required` (post the form again "
    "with `totp`). Failed attempts slow down further attempts from the same address and for "
    "the same username (429 with `Retry-After`); there is no lock-out. A user whose role "
    "requires a second factor that is not set up gets a token with `scope: totp_setup` "
    "that reaches only `/api/v1/me` and `/api/v1/me/totp`.",
)
def login(
    request: Request, session: SessionDep, ctx: ContextDep,
    username: Annotated[str, Form(min_length=1, max_length=64)],
    password: Annotated[str, Form(min_length=1, max_length=256)],
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
    scope: Annotated[str, Form(max_length=1000)] = "",
    totp: Annotated[str | None, Form(pattern=r"^[0-9]{6}$",
                                     description="The current TOTP code, if enabled.")] = None,
) -> Token:
    for name, value in (("username", username), ("password", password)):
        if "\x00" in value:
            raise invalid(name, "nul_character")
    settings = ctx.settings
    throttle, address = throttle_of(request, settings), client_address(request, settings)
    wait = throttle.wait(username, address, time.monotonic())
    if wait > 0:
        raise TooManyRequests("too_many_attempts", headers={"Retry-After": str(max(1, int(wait)))},
                              retry_after=max(1, int(wait)))
    try:
        user = auth.authenticate(session, username=username, password=password, totp_code=totp,
                                 totp_key=settings.resolved_totp_key())
    except Unauthorized as e:
        if e.code != "totp_required":
            throttle.failed(username, address, time.monotonic())
        raise
    throttle.succeeded(username, address, time.monotonic())
    return _tokens(session, user, settings)


@router.post("/auth/refresh", response_model=Token, summary="A new token pair for a refresh token",
             responses=problem_responses(401, 422))
def refresh(session: SessionDep, ctx: ContextDep, body: RefreshRequest) -> Token:
    user, new, rttl = auth.use_refresh_token(session, token=body.refresh_token,
                                             settings=ctx.settings)
    token, ttl = auth.create_access_token(user, ctx.settings)
    return Token(access_token=token, expires_in=ttl, refresh_token=new, refresh_expires_in=rttl)


@router.post("/auth/logout", status_code=204, summary="Sign out: revoke a refresh token",
             responses=problem_responses(422))
def logout(session: SessionDep, body: RefreshRequest) -> Response:
    auth.revoke_refresh_token(session, token=body.refresh_token)
    return Response(status_code=204)


@router.get("/me", response_model=UserPublic, summary="The caller",
            responses=problem_responses(401))
def me(user: SetupUser) -> UserPublic:
    return UserPublic.model_validate(user)


@router.patch("/me", response_model=UserPublic, summary="Change the caller's preferences",
              responses=problem_responses(401, 422),
              description="`language` (`kk`, `ru`, `en`): the console's language for this user, "
              "read at sign-in so it follows them to any browser.")
def update_me(session: SessionDep, user: CurrentUser, body: MeUpdate) -> UserPublic:
    return UserPublic.model_validate(service.set_own_preferences(session, user=user, data=body))


@router.post("/me/password", status_code=204, summary="Change the caller's password",
             responses=problem_responses(401, 403, 422),
             description="Every token the caller holds (access and refresh) stops working; "
             "sign in again with the new password.")
def change_password(session: SessionDep, user: CurrentUser, body: PasswordChange) -> Response:
    service.change_own_password(session, user=user, current=body.current_password,
                                new=body.new_password)
    return Response(status_code=204)


@router.post(
    "/me/totp", response_model=TotpStatus, summary="Set up or remove the TOTP second factor",
    responses=problem_responses(401, 409, 422),
    description="`enable` returns a new secret (and an otpauth URI for a QR code); `confirm` "
    "with a current code turns the factor on and ends the caller's other sessions; "
    "`disable` with a current code turns it off (409 where the role requires it).",
)
def set_totp(session: SessionDep, ctx: ContextDep, user: SetupUser, body: TotpAction) -> TotpStatus:
    return service.totp_action(session, user=user, action=body.action, code=body.code,
                               settings=ctx.settings)
