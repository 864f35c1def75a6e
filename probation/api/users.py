"""Users: created and changed by admins, listed by admins and supervisors."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from probation.deps import AdminUser, Idempotent, SessionDep, SupervisorOrAdmin
from probation.errors import problem_responses
from probation.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from probation.users import service
from probation.users.models import Role, UserCreate, UserPublic, UserUpdate

router = APIRouter(prefix="/users", tags=["users"])


@router.post("", response_model=UserPublic, status_code=201, summary="Create a user (admin)",
             responses=problem_responses(401, 403, 409, 422), dependencies=[Idempotent])
def create_user(session: SessionDep, actor: AdminUser, body: UserCreate) -> UserPublic:
    return UserPublic.model_validate(service.create_user(session, data=body, actor=actor))


@router.get("", response_model=Page[UserPublic],
            summary="List users (admin: all; supervisor: themselves and their officers)",
            responses=problem_responses(401, 403, 422))
def list_users(
    session: SessionDep, actor: SupervisorOrAdmin,
    role: Annotated[Role | None, Query()] = None,
    limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None,
) -> Page[UserPublic]:
    items, nxt = service.list_users(session, actor=actor, role=role, limit=limit, cursor=cursor)
    return Page[UserPublic](items=[UserPublic.model_validate(u) for u in items], next_cursor=nxt)


@router.get("/{user_id}", response_model=UserPublic, summary="A user (admin, supervisor)",
            responses=problem_responses(401, 403, 404, 422))
def get_user(session: SessionDep, actor: SupervisorOrAdmin, user_id: uuid.UUID) -> UserPublic:
    return UserPublic.model_validate(service.get_user(session, user_id=user_id, actor=actor))


@router.patch("/{user_id}", response_model=UserPublic, summary="Change a user (admin)",
              responses=problem_responses(401, 403, 404, 409, 422), dependencies=[Idempotent])
def update_user(
    session: SessionDep, actor: AdminUser, user_id: uuid.UUID, body: UserUpdate
) -> UserPublic:
    return UserPublic.model_validate(
        service.update_user(session, user_id=user_id, data=body, actor=actor)
    )
