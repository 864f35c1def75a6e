"""Persons under supervision and their biometric enrolment."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from devices.biometrics import load_key
from probation.deps import ContextDep, Idempotent, ScopeDep, SessionDep
from probation.errors import problem_responses
from probation.subjects import service
from probation.subjects.models import (
    BiometricEnrolment,
    BiometricTemplateStatus,
    SubjectCreate,
    SubjectPublic,
)

router = APIRouter(prefix="/subjects", tags=["subjects"])


@router.post("", response_model=SubjectPublic, status_code=201, summary="Register a person",
             responses=problem_responses(401, 409, 422), dependencies=[Idempotent],
             description="A taken IIN is a 409: `iin_taken` (with the person's id) when the "
             "caller may see that person, else `iin_unavailable`, which does not say whether "
             "or by whom the person is supervised.")
def create_subject(session: SessionDep, scope: ScopeDep, body: SubjectCreate) -> SubjectPublic:
    return service.create_subject(session, data=body, scope=scope)


@router.get("/{subject_id}", response_model=SubjectPublic, summary="A person",
            responses=problem_responses(401, 404, 422))
def get_subject(session: SessionDep, scope: ScopeDep, subject_id: uuid.UUID) -> SubjectPublic:
    return service.get_subject(session, subject_id=subject_id, scope=scope)


def _key(request: Request, ctx: ContextDep) -> bytes:
    key: bytes | None = getattr(request.app.state, "biometric_key", None)
    if key is None:
        key = load_key(ctx.settings.resolved_biometric_key())
        request.app.state.biometric_key = key
    return key


@router.post(
    "/{subject_id}/biometric-template", response_model=BiometricTemplateStatus, status_code=201,
    summary="Enrol a face template (stored encrypted, never returned)",
    responses=problem_responses(401, 403, 404, 422), dependencies=[Idempotent],
    description="Refused (403, audited) while the person has an active case outside the "
    "caller's caseload; replacing an enrolled template needs a supervisor of the person's "
    "cases or an admin.",
)
def enrol(
    request: Request, ctx: ContextDep, session: SessionDep, scope: ScopeDep,
    subject_id: uuid.UUID, body: BiometricEnrolment,
) -> BiometricTemplateStatus:
    t = service.enrol_template(session, subject_id=subject_id, data=body, scope=scope,
                               key=_key(request, ctx))
    return BiometricTemplateStatus(subject_id=t.subject_id, method=t.method, dim=t.dim,
                                   created_at=t.created_at)
