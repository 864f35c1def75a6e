"""Zones: a case's own, shared ones, attachments."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from probation.deps import ContextDep, Idempotent, ScopeDep, SessionDep, VisibleCase, require_role
from probation.errors import problem_responses
from probation.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from probation.users.models import Role, User
from probation.zones import service
from probation.zones.models import ZoneCreate, ZonePublic, ZoneUpdate

router = APIRouter(tags=["zones"])

_ZONE_DOC = (
    "`geometry` (GeoJSON Polygon or MultiPolygon, holes allowed) or `circle`; `buffer_m` warns "
    "before an exclusion zone; `schedule` null = always active, else weekly windows in the "
    "case's timezone (an end before the start runs past midnight); `exceptions` are approved "
    "absences. Invalid geometry or schedule is a 422 naming the field; so is a zone outside the "
    "service area (setting `PROBATION_SERVICE_AREA`), with a hint when latitude and "
    "longitude look swapped."
)


@router.post("/cases/{case_id}/zones", response_model=ZonePublic, status_code=201,
             summary="Add a zone to a case", description=_ZONE_DOC,
             responses=problem_responses(401, 404, 409, 422), dependencies=[Idempotent])
def create_case_zone(
    session: SessionDep, scope: ScopeDep, ctx: ContextDep, case: VisibleCase, body: ZoneCreate
) -> ZonePublic:
    return service.create_case_zone(session, case=case, data=body, scope=scope,
                                    area=ctx.settings.area())


@router.get("/cases/{case_id}/zones", response_model=Page[ZonePublic],
            summary="A case's zones (its own and attached shared ones)",
            responses=problem_responses(401, 404, 422))
def list_case_zones(session: SessionDep, scope: ScopeDep, case: VisibleCase) -> Page[ZonePublic]:
    return Page[ZonePublic](items=service.list_case_zones(session, case=case, scope=scope))


@router.post("/cases/{case_id}/zones/{zone_id}", response_model=ZonePublic,
             summary="Attach a shared zone to a case",
             responses=problem_responses(401, 404, 409, 422), dependencies=[Idempotent])
def attach_zone(
    session: SessionDep, scope: ScopeDep, case: VisibleCase, zone_id: uuid.UUID
) -> ZonePublic:
    return service.attach_zone(session, case=case, zone_id=zone_id, scope=scope)


@router.delete("/cases/{case_id}/zones/{zone_id}", status_code=204, response_class=Response,
               summary="Detach a zone from a case (a case's own zone is deleted)",
               responses=problem_responses(401, 403, 404, 422), dependencies=[Idempotent])
def detach_zone(
    session: SessionDep, scope: ScopeDep, case: VisibleCase, zone_id: uuid.UUID
) -> Response:
    service.detach_zone(session, case=case, zone_id=zone_id, scope=scope)
    return Response(status_code=204)


@router.post("/zones", response_model=ZonePublic, status_code=201,
             summary="Create a shared zone (supervisor, admin)", description=_ZONE_DOC,
             responses=problem_responses(401, 403, 422), dependencies=[Idempotent])
def create_shared_zone(
    session: SessionDep, scope: ScopeDep,
    _: Annotated[User, Depends(require_role(Role.SUPERVISOR, Role.ADMIN))], body: ZoneCreate,
    ctx: ContextDep,
) -> ZonePublic:
    return service.create_shared_zone(session, data=body, scope=scope, area=ctx.settings.area())


@router.get("/zones", response_model=Page[ZonePublic],
            summary="The shared zones (supervisor, admin)",
            responses=problem_responses(401, 403, 422),
            description="Every shared zone, by name: what may be attached to a case with "
            "`POST /api/v1/cases/{id}/zones/{zone_id}` (the console's picker).")
def list_shared_zones(
    session: SessionDep, scope: ScopeDep,
    _: Annotated[User, Depends(require_role(Role.SUPERVISOR, Role.ADMIN))],
    limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None,
) -> Page[ZonePublic]:
    items, nxt = service.list_shared_zones(session, scope=scope, limit=limit, cursor=cursor)
    return Page[ZonePublic](items=items, next_cursor=nxt)


@router.get("/zones/{zone_id}", response_model=ZonePublic, summary="A zone",
            responses=problem_responses(401, 404, 422))
def get_zone(session: SessionDep, scope: ScopeDep, zone_id: uuid.UUID) -> ZonePublic:
    return service.get_zone(session, zone_id=zone_id, scope=scope)


@router.patch("/zones/{zone_id}", response_model=ZonePublic,
              summary="Change a zone (shared zones: supervisor, admin)",
              responses=problem_responses(401, 403, 404, 422), dependencies=[Idempotent])
def update_zone(
    session: SessionDep, scope: ScopeDep, ctx: ContextDep, zone_id: uuid.UUID, body: ZoneUpdate
) -> ZonePublic:
    return service.update_zone(session, zone_id=zone_id, data=body, scope=scope,
                               area=ctx.settings.area())


@router.delete("/zones/{zone_id}", status_code=204, response_class=Response,
               summary="Delete a zone (shared zones: supervisor, admin)",
               responses=problem_responses(401, 403, 404, 422), dependencies=[Idempotent])
def delete_zone(session: SessionDep, scope: ScopeDep, zone_id: uuid.UUID) -> Response:
    service.delete_zone(session, zone_id=zone_id, scope=scope)
    return Response(status_code=204)
