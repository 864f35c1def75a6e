"""A case's track, device events and check-ins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from probation.deps import ScopeDep, SessionDep, VisibleCase
from probation.desk import telemetry
from probation.desk.models import CheckinPublic, DeviceEventPublic
from probation.errors import problem_responses
from probation.fields import Instant
from probation.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from probation.tracks import service as tracks
from probation.tracks.models import TrackCollection

router = APIRouter(prefix="/cases/{case_id}", tags=["tracks"])


@router.get(
    "/track", response_model=TrackCollection, summary="The track as GeoJSON",
    responses=problem_responses(401, 404, 422),
    description="The fixes of [from, to) (default: the last 24 hours) as a FeatureCollection: "
    "a LineString, then one Point per kept fix with `ts`, `acc`, `crossing` and `outlier` (a fix "
    "the kinematic rule found impossible: shown, not on the line, never deciding). Thinned to "
    "`max_points` keeping the first and last fixes and the fixes around zone crossings.",
)
def track(
    session: SessionDep, scope: ScopeDep, case: VisibleCase,
    from_: Annotated[Instant | None, Query(alias="from")] = None,
    to: Annotated[Instant | None, Query()] = None,
    max_points: Annotated[int, Query(ge=2, le=20_000)] = tracks.DEFAULT_MAX_POINTS,
) -> Response:
    body = tracks.case_track(session, case_id=case.id, user_id=scope.user_id, start=from_,
                             end=to, max_points=max_points)
    return Response(body, media_type="application/json")


@router.get("/events", response_model=Page[DeviceEventPublic],
            summary="The case's device events, newest first",
            responses=problem_responses(401, 404, 422))
def events(
    session: SessionDep, scope: ScopeDep, case: VisibleCase,
    type: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]+$")] = None,
    since: Annotated[Instant | None, Query()] = None,
    limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None,
) -> Page[DeviceEventPublic]:
    items, nxt = telemetry.list_events(session, case=case, user_id=scope.user_id, type=type,
                                       since=since, limit=limit, cursor=cursor)
    return Page[DeviceEventPublic](items=items, next_cursor=nxt)


@router.get("/checkins", response_model=Page[CheckinPublic],
            summary="The case's biometric check-ins, newest first",
            responses=problem_responses(401, 404, 422))
def checkins(
    session: SessionDep, scope: ScopeDep, case: VisibleCase,
    since: Annotated[Instant | None, Query()] = None,
    limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None,
) -> Page[CheckinPublic]:
    items, nxt = telemetry.list_checkins(session, case=case, user_id=scope.user_id, since=since,
                                         limit=limit, cursor=cursor)
    return Page[CheckinPublic](items=items, next_cursor=nxt)
