"""Subjects (the people supervised) and their biometric templates.

Columns mirror `db/migrations` (the SQL there is the source of truth).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, StringConstraints, model_validator
from pydantic import Field as PydField
from sqlmodel import Field, SQLModel

from db.types import UTCDateTime, utcnow
from probation.errors import field_error
from probation.fields import NameText
from probation.subjects.iin import IinError, birth_date_of, validate_iin


class Subject(SQLModel, table=True):
    __tablename__ = "subjects"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    iin: str = Field(unique=True, max_length=12)
    full_name: str
    birth_date: date
    created_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BiometricTemplate(SQLModel, table=True):
    __tablename__ = "biometric_templates"

    subject_id: uuid.UUID = Field(primary_key=True, foreign_key="subjects.id")
    method: str
    dim: int
    ciphertext: bytes
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


def _valid_iin(value: str) -> str:
    try:
        return validate_iin(value)
    except IinError as e:
        raise field_error(None, e.code) from None


Iin = Annotated[
    str, StringConstraints(min_length=12, max_length=12, pattern=r"^[0-9]{12}$"),
    AfterValidator(_valid_iin),
    PydField(
        description=(
            "Individual identification number (ИИН / ЖСН), 12 digits: `YYMMDD` the birth "
            "date (must equal `birth_date`); then the century-and-sex digit (1/2: born in "
            "the 1800s, male/female; 3/4: 1900s; 5/6: 2000s); four serial digits; and a "
            "check digit: the sum of the first 11 digits times the weights 1..11, mod 11; if "
            "that is 10, the weights 3..11, 1, 2 instead; if it is 10 again the number is "
            "invalid."
        ),
        examples=["900101300017"],
    ),
]


class SubjectBase(SQLModel):
    iin: Iin
    full_name: NameText
    birth_date: date


class SubjectCreate(SubjectBase):
    @model_validator(mode="after")
    def _iin_matches_birth_date(self) -> SubjectCreate:
        if birth_date_of(self.iin) != self.birth_date:
            raise field_error("iin", "iin_birth_date")
        return self


class SubjectPublic(SubjectBase):
    id: uuid.UUID
    has_biometric_template: bool = False
    created_at: datetime
    updated_at: datetime


def _finite_embedding(values: list[float]) -> list[float]:
    import math

    if not all(math.isfinite(v) for v in values):
        raise field_error(None, "finite_number")
    return values


class BiometricEnrolment(SQLModel):
    method: Literal["face"]
    embedding: Annotated[
        list[Annotated[float, PydField(ge=-1e6, le=1e6, allow_inf_nan=False)]],
        PydField(min_length=128, max_length=1024),
        AfterValidator(_finite_embedding),
    ]


class BiometricTemplateStatus(SQLModel):
    """What the API says about an enrolled template (never the template)."""

    subject_id: uuid.UUID
    method: str
    dim: int
    created_at: datetime


class PhotoReason(SQLModel):
    """Why an enrolment photo was refused: a code and its text in the caller's language."""

    code: str
    message: str


class PhotoVerdict(SQLModel):
    """The quality verdict on one enrolment photo."""

    index: int
    accepted: bool
    faces: int
    reasons: list[PhotoReason]
    face_px: int | None = None
    sharpness: float | None = None
    yaw: float | None = None
    brightness: float | None = None


class BiometricEnrolmentResult(SQLModel):
    """What `POST /subjects/{id}/biometric-enrolment` computed: one template per accepted
    photo (their mean is stored, encrypted; the vectors are never returned)."""

    subject_id: uuid.UUID
    method: str
    dim: int
    templates: int
    photos: list[PhotoVerdict]
    photos_kept: bool
    replaced: bool
    created_at: datetime
