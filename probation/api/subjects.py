"""Persons under supervision and their biometric enrolment."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, UploadFile

from devices.biometrics import load_key
from devices.faces.analysis import Thresholds
from probation.deps import ContextDep, Idempotent, ScopeDep, SessionDep
from probation.errors import invalid, problem_responses
from probation.i18n import negotiate
from probation.settings import Settings
from probation.subjects import service
from probation.subjects.models import (
    BiometricEnrolment,
    BiometricEnrolmentResult,
    BiometricTemplateStatus,
    SubjectCreate,
    SubjectPublic,
)

router = APIRouter(prefix="/subjects", tags=["subjects"])


def face_thresholds(settings: Settings) -> Thresholds:
    return Thresholds(match=settings.face_match_min)


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


MAX_PHOTO_BYTES = 8 * 1024 * 1024


def _visible_subject_id(session: SessionDep, scope: ScopeDep, subject_id: uuid.UUID) -> uuid.UUID:
    """404 for a person the caller may not see, before the photos are read or validated."""
    return service.visible_subject(session, subject_id=subject_id, scope=scope).id


@router.post(
    "/{subject_id}/biometric-enrolment", response_model=BiometricEnrolmentResult,
    status_code=201, summary="Biometric registration from 1 to 5 photos",
    description="Each photo must show exactly one face of enrolment quality (face size, "
    "sharpness, pose, exposure); refused photos carry their reasons in the caller's "
    "language. The backend's face model computes a template per accepted photo; their mean "
    "is stored encrypted (never returned). Photos are discarded unless the "
    "`biometric_keep_photos` setting keeps them (encrypted). Replacing an enrolled template "
    "is audited and needs the case's supervisor or an admin. All photos refused: 422.",
    responses=problem_responses(401, 403, 404, 422),
    dependencies=[Idempotent, Depends(_visible_subject_id)],
)
def enrol_photos(
    request: Request, ctx: ContextDep, session: SessionDep, scope: ScopeDep,
    subject_id: uuid.UUID, photos: Annotated[list[UploadFile], File(description="1 to 5 JPEG or PNG photos")],
) -> BiometricEnrolmentResult:
    data = []
    for i, p in enumerate(photos):
        raw = p.file.read(MAX_PHOTO_BYTES + 1)
        if len(raw) > MAX_PHOTO_BYTES:
            raise invalid(f"photos.{i}", "too_large")
        data.append(raw)
    return service.enrol_photos(
        session, subject_id=subject_id, photos=data, scope=scope, key=_key(request, ctx),
        lang=negotiate(request.headers.get("accept-language")),
        keep_photos=ctx.settings.biometric_keep_photos,
        thresholds=face_thresholds(ctx.settings),
    )
