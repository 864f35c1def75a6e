"""Proximity searches (supervisors and investigators; audited, rate-limited, never cached)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from probation.deps import ContextDep, SessionDep, require_role
from probation.errors import problem_responses
from probation.investigations import service
from probation.investigations.models import ProximityAnswer, ProximityQuery
from probation.users.models import User

router = APIRouter(prefix="/investigations", tags=["investigations"])

Investigator = Annotated[User, Depends(require_role(*service.ROLES))]


@router.post(
    "/proximity", response_model=ProximityAnswer, response_model_by_alias=True,
    summary="Who may have been at a place during a window",
    responses=problem_responses(401, 403, 422, 429),
    description="The cases whose person may have been in the place (a circle or a polygon) "
    "during the window (at most 7 days), each with the probability from its fixes' accuracy "
    "circles (the error model is in `model` and in docs/api.md), the closest approach, the "
    "supporting fixes and the gaps (stretches over 15 minutes without a fix: uncertainty, "
    "not absence). Supervisors search their caseload, investigators every case. `reason` "
    "and `reference` are mandatory and every search is audited with the cases it "
    "returned; searches per user are rate-limited (429). Never cached.",
)
def proximity(
    session: SessionDep, ctx: ContextDep, user: Investigator, body: ProximityQuery,
    response: Response,
) -> ProximityAnswer:
    response.headers["Cache-Control"] = "no-store"
    return service.proximity_search(
        session, user=user, query=body, rate_limit=ctx.settings.proximity_rate_limit,
        rate_window_s=ctx.settings.proximity_rate_window_s)
