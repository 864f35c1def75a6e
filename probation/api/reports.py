"""Court-ready PDF reports of an alert's episode or a case's period, and their verification."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Response

from probation.deps import CurrentUser, SessionDep
from probation.errors import problem_responses
from probation.fields import Instant
from probation.i18n import negotiate
from probation.reports import service

router = APIRouter(tags=["reports"])

PDF = {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
       "description": "The report (PDF, A4)."}
LangQuery = Annotated[Literal["kk", "ru", "en"] | None,
                      Query(description="The report's language; default from Accept-Language.")]
HASH_NOTE = ("Every page's footer prints the SHA-256 of the report's content (canonical JSON of "
             "what it states); the audit entry `report.generated` records it and the SHA-256 "
             "of the PDF bytes as served .")


def _pdf(body: bytes, name: str) -> Response:
    return Response(body, media_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="{name}"', "Cache-Control": "no-store"})


@router.get("/alerts/{alert_id}/report.pdf", response_class=Response, responses={
    200: PDF, **problem_responses(401, 404, 422)}, summary="Court report of an alert's episode",
    description="The person, the court order, the episode's timeline (30 minutes either side), "
    "a map of the track and the zones (drawn without any tile service), the evidence fixes "
    "with their accuracy and the devices' health. " + HASH_NOTE)
def alert_report(
    session: SessionDep, user: CurrentUser,
    alert_id: Annotated[uuid.UUID, Path(description="Alert id.")], lang: LangQuery = None,
    accept_language: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    body = service.alert_report(session, alert_id=alert_id, user=user,
                                lang=lang or negotiate(accept_language))
    return _pdf(body, f"alert-{alert_id}.pdf")


@router.get("/cases/{case_id}/report.pdf", response_class=Response, responses={
    200: PDF, **problem_responses(401, 404, 422)}, summary="Court report of a case's period",
    description="As the alert report, over [from, to) (default: the last 7 days, at most "
    "92 days): every alert event, device event and check-in of the period; the evidence "
    "fixes are those of the zone alerts' episodes. " + HASH_NOTE)
def case_report(
    session: SessionDep, user: CurrentUser,
    case_id: Annotated[uuid.UUID, Path(description="Case id.")],
    from_: Annotated[Instant | None, Query(alias="from")] = None,
    to: Annotated[Instant | None, Query()] = None, lang: LangQuery = None,
    accept_language: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    body = service.case_report(session, case_id=case_id, user=user, start=from_, end=to,
                               lang=lang or negotiate(accept_language))
    return _pdf(body, f"case-{case_id}.pdf")


@router.get("/reports/verify", summary="Check a report by its SHA-256",
            responses=problem_responses(401, 422),
            description="`sha256` is either the hash printed in a report's footer (its "
            "content) or the SHA-256 of the PDF file: `valid` says whether this service made "
            "such a report, and which.")
def verify(
    session: SessionDep, user: CurrentUser,
    sha256: Annotated[str, Query(pattern=r"^[0-9a-fA-F]{64}$")],
) -> dict[str, Any]:
    return service.verify(session, sha256=sha256, user=user)
