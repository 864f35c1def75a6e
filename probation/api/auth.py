"""Sign-in and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form

from probation.deps import ContextDep, CurrentUser, SessionDep
from probation.errors import invalid, problem_responses
from probation.users.auth import authenticate, create_access_token
from probation.users.models import Token, UserPublic

router = APIRouter(tags=["auth"])


@router.post(
    "/auth/token", response_model=Token, summary="Sign in (OAuth2 password flow)",
    responses=problem_responses(401, 422),
    description="Exchange a username and password for a short-lived bearer token. Ten failed "
    "attempts lock the account for 15 minutes.",
)
def login(
    session: SessionDep, ctx: ContextDep,
    username: Annotated[str, Form(min_length=1, max_length=64)],
    password: Annotated[str, Form(min_length=1, max_length=256)],
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
    scope: Annotated[str, Form(max_length=1000)] = "",
) -> Token:
    for name, value in (("username", username), ("password", password)):
        if "\x00" in value:
            raise invalid(name, "nul_character")
    user = authenticate(session, username=username, password=password)
    token, ttl = create_access_token(user, ctx.settings)
    return Token(access_token=token, expires_in=ttl)


@router.get("/me", response_model=UserPublic, summary="The caller",
            responses=problem_responses(401))
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)
