"""Persons under supervision and their biometric templates.

A person is visible to whoever may see one of their cases, to admins, and to
everyone while they have no case yet (registered, waiting for a case).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, exists, or_, text, true
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from db.types import utcnow
from devices.biometrics import encrypt_photo, encrypt_template
from devices.faces.analysis import Thresholds, template_of
from devices.faces.verify import PhotoAssessment, assess_photo
from probation.audit import service as audit
from probation.cases.models import Case
from probation.cases.scope import CaseScope
from probation.errors import Conflict, FieldError, Forbidden, Invalid, NotFound, invalid
from probation.i18n import field_text
from probation.subjects.models import (
    BiometricEnrolment,
    BiometricEnrolmentResult,
    BiometricTemplate,
    PhotoReason,
    PhotoVerdict,
    Subject,
    SubjectCreate,
    SubjectPublic,
)
from probation.users.models import Role


def visible(scope: CaseScope) -> ColumnElement[bool]:
    """A clause on `Subject` for the persons `scope` may see."""
    if scope.everything:
        return true()
    any_case = exists().where(col(Case.subject_id) == Subject.id)
    seen_case = exists().where(col(Case.subject_id) == Subject.id, scope.where())
    return or_(seen_case, ~any_case)


def create_subject(session: Session, *, data: SubjectCreate, actor_id: uuid.UUID) -> SubjectPublic:
    if session.exec(select(Subject.id).where(Subject.iin == data.iin)).first():
        raise Conflict("iin_taken")
    subject = Subject(iin=data.iin, full_name=data.full_name, birth_date=data.birth_date)
    session.add(subject)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("iin_taken") from None
    audit.record(session, user_id=actor_id, action="subject.create", resource="subject",
                 resource_id=subject.id)
    return SubjectPublic.model_validate(subject, update={"has_biometric_template": False})


def _visible_subject(session: Session, subject_id: uuid.UUID, scope: CaseScope) -> Subject:
    subject = session.exec(
        select(Subject).where(Subject.id == subject_id, visible(scope))
    ).first()
    if subject is None:
        raise NotFound()
    return subject


def get_subject(session: Session, *, subject_id: uuid.UUID, scope: CaseScope) -> SubjectPublic:
    """A person's record (audited as a read)."""
    subject = _visible_subject(session, subject_id, scope)
    has_template = session.get(BiometricTemplate, subject_id) is not None
    audit.record(session, user_id=scope.user_id, action="subject.read", resource="subject",
                 resource_id=subject.id)
    return SubjectPublic.model_validate(subject, update={"has_biometric_template": has_template})


def enrol_template(
    session: Session, *, subject_id: uuid.UUID, data: BiometricEnrolment, scope: CaseScope,
    key: bytes,
) -> BiometricTemplate:
    """Store (or replace) a person's face template, encrypted."""
    subject = _visible_subject(session, subject_id, scope)
    blob = encrypt_template(key, data.embedding, subject_id=subject.id, method=data.method)
    now = utcnow()
    values = {"subject_id": subject.id, "method": data.method, "dim": len(data.embedding),
              "ciphertext": blob, "created_at": now}
    stmt = insert(BiometricTemplate).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["subject_id"],
        set_={"method": stmt.excluded.method, "dim": stmt.excluded.dim,
              "ciphertext": stmt.excluded.ciphertext, "created_at": stmt.excluded.created_at},
    )
    session.execute(stmt)
    audit.record(session, user_id=scope.user_id, action="subject.biometric_enrol",
                 resource="subject", resource_id=subject.id,
                 detail={"method": data.method, "dim": len(data.embedding)})
    return BiometricTemplate(subject_id=subject.id, method=data.method, dim=len(data.embedding),
                             ciphertext=b"", created_at=now)


def _can_reenrol(session: Session, subject_id: uuid.UUID, scope: CaseScope) -> bool:
    """Replacing a template needs an admin or the supervisor of one of the person's cases."""
    if scope.everything:
        return True
    if scope.role != Role.SUPERVISOR:
        return False
    return session.exec(
        select(Case.id).where(Case.subject_id == subject_id, scope.where())
    ).first() is not None


def enrol_photos(
    session: Session, *, subject_id: uuid.UUID, photos: Sequence[bytes], scope: CaseScope,
    key: bytes, lang: str, keep_photos: bool, thresholds: Thresholds,
) -> BiometricEnrolmentResult:
    """Enrol a person from 1 to 5 photos: each must show exactly one face of enrolment
    quality; the backend's model computes the templates, their mean is stored encrypted.
    All photos refused → 422 with the reason per photo. Replacing a template is audited
    and needs the case's supervisor or an admin. Photos are discarded unless kept
    (encrypted) by the setting."""
    subject = _visible_subject(session, subject_id, scope)
    if not 1 <= len(photos) <= 5:
        raise invalid("photos", "too_many_photos")
    existing = session.get(BiometricTemplate, subject.id)
    if existing is not None and not _can_reenrol(session, subject.id, scope):
        raise Forbidden()
    assessed = [assess_photo(p, index=i, th=thresholds) for i, p in enumerate(photos)]
    verdicts = [_photo_verdict(a, lang, thresholds) for a in assessed]
    accepted = [a.embedding for a in assessed if a.embedding is not None]
    if not accepted:
        raise Invalid([FieldError(f"photos.{v.index}", r.code,
                                  {"min_px": thresholds.min_face_px}, "body")
                       for v in verdicts for r in v.reasons])
    template = template_of(accepted)
    now = utcnow()
    values = {"subject_id": subject.id, "method": "face", "dim": int(template.size),
              "ciphertext": encrypt_template(key, template, subject_id=subject.id),
              "created_at": now}
    stmt = insert(BiometricTemplate).values(**values)
    session.execute(stmt.on_conflict_do_update(
        index_elements=["subject_id"],
        set_={"method": stmt.excluded.method, "dim": stmt.excluded.dim,
              "ciphertext": stmt.excluded.ciphertext, "created_at": stmt.excluded.created_at},
    ))
    if keep_photos:
        for p, a in zip(photos, assessed, strict=True):
            if a.accepted:
                session.execute(text(
                    "INSERT INTO biometric_photos (id, subject_id, ciphertext)"
                    " VALUES (:id, :s, :c)"),
                    {"id": uuid.uuid4(), "s": subject.id,
                     "c": encrypt_photo(key, p, subject_id=subject.id)})
    audit.record(session, user_id=scope.user_id,
                 action="subject.biometric_reenrol" if existing else "subject.biometric_enrol",
                 resource="subject", resource_id=subject.id,
                 detail={"method": "face", "photos": len(photos), "accepted": len(accepted),
                         "photos_kept": keep_photos, "replaced": existing is not None})
    return BiometricEnrolmentResult(
        subject_id=subject.id, method="face", dim=int(template.size), templates=len(accepted),
        photos=verdicts, photos_kept=keep_photos, replaced=existing is not None, created_at=now)


def _photo_verdict(a: PhotoAssessment, lang: str, th: Thresholds) -> PhotoVerdict:
    q = a.quality
    return PhotoVerdict(
        index=a.index, accepted=a.accepted, faces=a.faces,
        reasons=[PhotoReason(code=str(r), message=field_text(str(r), lang,
                                                             {"min_px": th.min_face_px}))
                 for r in a.reasons],
        face_px=None if q is None else q.face_px,
        sharpness=None if q is None else round(q.sharpness, 1),
        yaw=None if q is None else round(q.yaw, 3),
        brightness=None if q is None else round(q.brightness, 1),
    )
