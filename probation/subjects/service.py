"""Persons under supervision and their biometric templates.

A person is reachable only through the cases the caller may see (admins: everyone). A
person without any case yet is visible to whoever registered them (and their supervisor)
so that they can open the first case. Opening a case on a person who has an active case
outside the caller's scope, and enrolling a face for such a person, is refused; replacing
an enrolled template needs a supervisor of the person's cases (or an admin). Refusals and
replacements are audited. `check_enrolment` is the one rule for every enrolment path.
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
from probation.cases.models import Case, CaseStatus
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
    own_new = col(Subject.created_by).in_(scope.officers())
    return or_(seen_case, ~any_case & own_new)


def create_subject(session: Session, *, data: SubjectCreate, scope: CaseScope) -> SubjectPublic:
    """Register a person. A taken IIN is a 409; to a caller who may not see that person it
    says only that the IIN cannot be registered from their account (not that the person
    is known or supervised), and the attempt is audited for the person's supervisors."""
    taken = session.exec(select(Subject.id).where(Subject.iin == data.iin)).first()
    if taken is not None:
        _refuse_taken(session, subject_id=taken, scope=scope)
    subject = Subject(iin=data.iin, full_name=data.full_name, birth_date=data.birth_date,
                      created_by=scope.user_id)
    session.add(subject)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("iin_unavailable") from None
    audit.record(session, user_id=scope.user_id, action="subject.create", resource="subject",
                 resource_id=subject.id)
    return SubjectPublic.model_validate(subject, update={"has_biometric_template": False})


def _refuse_taken(session: Session, *, subject_id: uuid.UUID, scope: CaseScope) -> None:
    seen = session.exec(select(Subject.id).where(Subject.id == subject_id, visible(scope))).first()
    if seen is not None:
        raise Conflict("iin_taken", subject_id=str(subject_id))
    audit.record_now(session, user_id=scope.user_id, action="subject.create_refused",
                     resource="subject", resource_id=subject_id,
                     detail={"reason": "iin of a person the caller may not see"})
    raise Conflict("iin_unavailable")


def _visible_subject(session: Session, subject_id: uuid.UUID, scope: CaseScope) -> Subject:
    subject = session.exec(
        select(Subject).where(Subject.id == subject_id, visible(scope))
    ).first()
    if subject is None:
        raise NotFound()
    return subject


def visible_subject(session: Session, *, subject_id: uuid.UUID, scope: CaseScope) -> Subject:
    """The person if the caller may see them (404 otherwise, as if missing)."""
    return _visible_subject(session, subject_id, scope)


def foreign_active_cases(
    session: Session, *, subject_id: uuid.UUID, scope: CaseScope
) -> list[uuid.UUID]:
    """The person's active cases outside the caller's scope."""
    if scope.everything:
        return []
    q = select(Case.id).where(Case.subject_id == subject_id, Case.status == CaseStatus.ACTIVE,
                              ~scope.where())
    return list(session.exec(q))


def get_subject(session: Session, *, subject_id: uuid.UUID, scope: CaseScope) -> SubjectPublic:
    """A person's record (audited as a read)."""
    subject = _visible_subject(session, subject_id, scope)
    has_template = session.get(BiometricTemplate, subject_id) is not None
    audit.record(session, user_id=scope.user_id, action="subject.read", resource="subject",
                 resource_id=subject.id)
    return SubjectPublic.model_validate(subject, update={"has_biometric_template": has_template})


def check_enrolment(
    session: Session, *, subject_id: uuid.UUID, scope: CaseScope
) -> tuple[Subject, bool]:
    """Whether the caller may enrol a template for this person: the person and whether an
    enrolled template would be replaced. 404 for a person the caller may not see; 403
    (audited) while the person has an active case outside the caller's scope, or to
    replace a template unless the caller is an admin or a supervisor of the person's
    cases."""
    subject = _visible_subject(session, subject_id, scope)
    foreign = foreign_active_cases(session, subject_id=subject_id, scope=scope)
    replacing = session.get(BiometricTemplate, subject_id) is not None
    if foreign:
        _refuse(session, scope, subject_id, "active case outside the caller's scope", foreign)
    if replacing and scope.role not in (Role.ADMIN, Role.SUPERVISOR):
        _refuse(session, scope, subject_id, "replacing a template needs a supervisor", [])
    return subject, replacing


def _refuse(session: Session, scope: CaseScope, subject_id: uuid.UUID, reason: str,
            cases: list[uuid.UUID]) -> None:
    audit.record_now(session, user_id=scope.user_id, action="subject.biometric_refused",
                     resource="subject", resource_id=subject_id,
                     case_id=cases[0] if cases else None,
                     detail={"reason": reason, "case_ids": [str(c) for c in cases]})
    raise Forbidden("subject_other_case")


def enrol_template(
    session: Session, *, subject_id: uuid.UUID, data: BiometricEnrolment, scope: CaseScope,
    key: bytes,
) -> BiometricTemplate:
    """Store (or, for a supervisor or admin, replace) a person's face template, encrypted."""
    subject, replacing = check_enrolment(session, subject_id=subject_id, scope=scope)
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
                 detail={"method": data.method, "dim": len(data.embedding),
                         "replaced": replacing})
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
