"""Tables of the shell's domain: users, subjects, cases, zones, audit.

Columns mirror `db/migrations` (the SQL there is the source of truth). API
shapes (`XCreate`, `XUpdate`, `XPublic`) sit beside their table.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from db.types import UTCDateTime, utcnow


class Role(StrEnum):
    OFFICER = "officer"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class CaseStatus(StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"


class ZoneKind(StrEnum):
    INCLUSION = "inclusion"
    EXCLUSION = "exclusion"


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    username: str = Field(unique=True)
    password_hash: str
    role: Role = Field(sa_type=String)
    full_name: str = ""
    supervisor_id: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    is_active: bool = True
    failed_logins: int = 0
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Subject(SQLModel, table=True):
    __tablename__ = "subjects"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    iin: str = Field(unique=True, max_length=12)
    full_name: str
    birth_date: date
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BiometricTemplate(SQLModel, table=True):
    __tablename__ = "biometric_templates"

    subject_id: uuid.UUID = Field(primary_key=True, foreign_key="subjects.id")
    method: str
    dim: int
    ciphertext: bytes
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


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
    checkin_policy: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    status: CaseStatus = Field(default=CaseStatus.ACTIVE, sa_type=String)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Zone(SQLModel, table=True):
    __tablename__ = "zones"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str
    kind: ZoneKind = Field(sa_type=String)
    geometry: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    circle: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    buffer_m: float = 0.0
    schedule: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    exceptions: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False)
    )
    shared: bool = False
    version: int = 1
    created_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class CaseZone(SQLModel, table=True):
    __tablename__ = "case_zones"

    case_id: uuid.UUID = Field(primary_key=True, foreign_key="cases.id")
    zone_id: uuid.UUID = Field(primary_key=True, foreign_key="zones.id")
    attached_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    user_id: uuid.UUID | None = None
    action: str
    resource: str
    resource_id: str | None = None
    case_id: uuid.UUID | None = None
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    prev_hash: str
    hash: str
