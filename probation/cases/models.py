"""Cases: the table and API shapes of a case and of the caseload's live rows.

Columns mirror `db/migrations` (the SQL there is the source of truth).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field as PydField
from pydantic import model_validator
from sqlalchemy import Column, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from db.types import UTCDateTime, utcnow
from probation.errors import field_error
from probation.fields import NameText, ShortText, Timezone


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class CaseStatus(StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"


class Case(SQLModel, table=True):
    __tablename__ = "cases"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    subject_id: uuid.UUID = Field(foreign_key="subjects.id")
    officer_id: uuid.UUID = Field(foreign_key="users.id")
    court_order_ref: str
    starts_on: date
    ends_on: date
    risk_level: RiskLevel = Field(sa_type=String)
    timezone: str = "Asia/Almaty"
    checkin_policy: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB(none_as_null=True)))
    confirm_points: int | None = None
    confirm_seconds: float | None = None
    status: CaseStatus = Field(default=CaseStatus.ACTIVE, sa_type=String)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CheckinPolicy(SQLModel):
    """Random biometric check-ins: `per_day` of them between `from_hour` and `to_hour`
    (local time of the case's timezone)."""

    per_day: int = PydField(ge=0, le=24, description="0: no random check-ins.")
    from_hour: int = PydField(default=8, ge=0, le=23)
    to_hour: int = PydField(default=20, ge=1, le=24)

    @model_validator(mode="after")
    def _window(self) -> CheckinPolicy:
        if self.to_hour <= self.from_hour:
            raise field_error("to_hour", "hour_order")
        return self


ConfirmPoints = Annotated[int | None, PydField(
    ge=1, le=20, description="Definite wrong-side fixes that open a violation of this case "
    "(monitoring-rules.md, \"Episodes\"); null: the service's default (2). Changing it "
    "needs a supervisor or an admin.")]
ConfirmSeconds = Annotated[float | None, PydField(
    ge=0, le=3600, description="Seconds those fixes must span; null: the service's default "
    "(30). Changing it needs a supervisor or an admin.")]


class CaseBase(SQLModel):
    court_order_ref: NameText
    starts_on: date
    ends_on: date
    risk_level: RiskLevel
    timezone: Timezone = "Asia/Almaty"
    checkin_policy: CheckinPolicy | None = None
    confirm_points: ConfirmPoints = None
    confirm_seconds: ConfirmSeconds = None


class CaseCreate(CaseBase):
    subject_id: uuid.UUID
    officer_id: uuid.UUID

    @model_validator(mode="after")
    def _dates(self) -> CaseCreate:
        if self.ends_on < self.starts_on:
            raise field_error("ends_on", "date_order", other="starts_on")
        return self


class CaseUpdate(SQLModel):
    court_order_ref: NameText | None = None
    starts_on: date | None = None
    ends_on: date | None = None
    risk_level: RiskLevel | None = None
    timezone: Timezone | None = None
    checkin_policy: CheckinPolicy | None = None
    confirm_points: ConfirmPoints = None
    confirm_seconds: ConfirmSeconds = None
    officer_id: uuid.UUID | None = None


class CaseClose(SQLModel):
    reason: ShortText | None = None


class CasePublic(CaseBase):
    id: uuid.UUID
    subject_id: uuid.UUID
    officer_id: uuid.UUID
    status: CaseStatus
    closed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class Compliance(StrEnum):
    COMPLIANT = "compliant"
    VIOLATION = "violation"
    UNKNOWN = "unknown"


class LastFix(SQLModel):
    ts: datetime
    lat: float
    lon: float
    acc: float


class CaseDevice(SQLModel):
    id: uuid.UUID
    serial: str
    kind: str
    battery: int | None
    online: bool
    last_seen: datetime | None


class CaseLive(CasePublic):
    """A case with its live status (the caseload's rows)."""

    subject_name: str
    subject_iin: str
    compliance: Compliance
    last_fix: LastFix | None
    device: CaseDevice | None
    open_alerts: int
