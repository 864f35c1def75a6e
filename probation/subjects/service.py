"""Persons under supervision and their biometric templates.

A person is visible to whoever may see one of their cases, to admins, and to
everyone while they have no case yet (registered, waiting for a case).
"""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, exists, or_, true
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from db.types import utcnow
from devices.biometrics import encrypt_template
from probation.audit import service as audit
from probation.cases.models import Case
from probation.cases.scope import CaseScope
from probation.errors import Conflict, NotFound
from probation.subjects.models import (
    BiometricEnrolment,
    BiometricTemplate,
    Subject,
    SubjectCreate,
    SubjectPublic,
)


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
