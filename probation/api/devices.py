"""Device inventory (admin) and a case's device assignments."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from devices.models import DeviceKind
from probation.deps import AdminUser, ContextDep, Idempotent, ScopeDep, SessionDep, VisibleCase
from probation.desk import inventory as service
from probation.desk.models import (
    AssignmentCreate,
    AssignmentPublic,
    DeviceCreate,
    DeviceCreated,
    DeviceCredentials,
    DevicePublic,
    DeviceUpdate,
)
from probation.errors import problem_responses
from probation.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page

log = logging.getLogger(__name__)
router = APIRouter(tags=["devices"])


def _broker_learns(session: SessionDep, ctx: ContextDep, response: Response) -> None:
    """Commit, then give the broker the new credentials (its password file, reloaded).
    The response carries a secret: never cached, never stored for an idempotent replay."""
    session.commit()
    response.headers["Cache-Control"] = "no-store"
    if ctx.broker_accounts is not None:
        try:
            ctx.broker_accounts.sync()
        except Exception:  # committed: the next start or registration syncs it
            log.exception("the broker's accounts were not updated")


@router.post("/devices", response_model=DeviceCreated, status_code=201,
             summary="Register a device (admin); its broker credentials are shown once",
             responses=problem_responses(401, 403, 409, 422), dependencies=[Idempotent])
def create_device(session: SessionDep, ctx: ContextDep, actor: AdminUser, body: DeviceCreate,
                  response: Response) -> DeviceCreated:
    created = service.create_device(session, data=body, actor_id=actor.id)
    _broker_learns(session, ctx, response)
    return created


@router.post("/devices/{device_id}/mqtt-credentials", response_model=DeviceCredentials,
             summary="Issue a new broker password for a device (admin); the old one stops "
             "working", responses=problem_responses(401, 403, 404, 422),
             dependencies=[Idempotent])
def rotate_credentials(session: SessionDep, ctx: ContextDep, actor: AdminUser,
                       device_id: uuid.UUID, response: Response) -> DeviceCredentials:
    credentials = service.rotate_credentials(session, device_id=device_id, actor_id=actor.id)
    _broker_learns(session, ctx, response)
    return credentials


@router.get(
    "/devices", response_model=Page[DevicePublic], summary="Device inventory",
    responses=problem_responses(401, 422),
    description="Admins see every device; others the devices of their cases and the free ones.",
)
def list_devices(
    session: SessionDep, scope: ScopeDep,
    kind: Annotated[DeviceKind | None, Query()] = None,
    serial: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                        description="Serial prefix.")] = None,
    assigned: Annotated[bool | None, Query()] = None,
    limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None,
) -> Page[DevicePublic]:
    items, nxt = service.list_devices(session, scope=scope, kind=kind, serial=serial,
                                      assigned=assigned, limit=limit, cursor=cursor)
    return Page[DevicePublic](items=items, next_cursor=nxt)


@router.patch("/devices/{device_id}", response_model=DevicePublic,
              summary="Change a device (admin): trust for biometrics",
              responses=problem_responses(401, 403, 404, 422))
def update_device(session: SessionDep, actor: AdminUser, device_id: uuid.UUID,
                  body: DeviceUpdate) -> DevicePublic:
    return service.update_device(session, device_id=device_id, data=body, actor_id=actor.id)


@router.get("/devices/{device_id}", response_model=DevicePublic, summary="A device",
            responses=problem_responses(401, 404, 422))
def get_device(session: SessionDep, scope: ScopeDep, device_id: uuid.UUID) -> DevicePublic:
    return service.get_device(session, device_id=device_id, scope=scope)


@router.get("/cases/{case_id}/devices", response_model=Page[AssignmentPublic],
            summary="A case's device assignments, newest first (history included; one page: "
                    "a case has few)",
            responses=problem_responses(401, 404, 422))
def case_devices(session: SessionDep, scope: ScopeDep, case: VisibleCase) -> Page[AssignmentPublic]:
    return Page[AssignmentPublic](
        items=service.case_assignments(session, case=case, actor_id=scope.user_id))


@router.post("/cases/{case_id}/devices", response_model=AssignmentPublic, status_code=201,
             summary="Assign a device to the case",
             responses=problem_responses(401, 404, 409, 422), dependencies=[Idempotent])
def assign_device(
    session: SessionDep, scope: ScopeDep, case: VisibleCase, body: AssignmentCreate
) -> AssignmentPublic:
    return service.assign_device(session, case=case, device_id=body.device_id,
                                 actor_id=scope.user_id)


@router.delete("/cases/{case_id}/devices/{device_id}", response_model=AssignmentPublic,
               summary="Unassign a device from the case (the assignment stays in the history)",
               responses=problem_responses(401, 404, 422), dependencies=[Idempotent])
def unassign_device(
    session: SessionDep, scope: ScopeDep, case: VisibleCase, device_id: uuid.UUID
) -> AssignmentPublic:
    return service.unassign_device(session, case=case, device_id=device_id,
                                   actor_id=scope.user_id)
