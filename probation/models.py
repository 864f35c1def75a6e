"""Tables of the shell's domain: users, subjects, cases, zones, audit.

Columns mirror `db/migrations` (the SQL there is the source of truth). API
shapes (`XCreate`, `XUpdate`, `XPublic`) sit beside their table.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, StringConstraints, model_validator
from pydantic import Field as PydField
from sqlalchemy import Column, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel
from sqlmodel._compat import SQLModelConfig

from alerts.models import AlertStatus, AlertType, Resolution, Severity
from db.types import UTCDateTime, utcnow
from devices.models import DeviceKind as DeviceKindApi
from probation.errors import UNION_TAGS, field_error

T = TypeVar("T")


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
    checkin_policy: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB(none_as_null=True)))
    status: CaseStatus = Field(default=CaseStatus.ACTIVE, sa_type=String)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Zone(SQLModel, table=True):
    __tablename__ = "zones"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str
    kind: ZoneKind = Field(sa_type=String)
    geometry: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB(none_as_null=True)))
    circle: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB(none_as_null=True)))
    buffer_m: float = 0.0
    schedule: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB(none_as_null=True)))
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


# --------------------------------------------------------------------------------------
# API shapes. Inputs reject NUL characters and unencodable text (PostgreSQL cannot store
# them) and non-finite numbers; every datetime in is offset-aware, every one out is UTC.
# --------------------------------------------------------------------------------------


def _clean_text(value: str) -> str:
    if "\x00" in value:
        raise field_error(None, "nul_character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise field_error(None, "string_pattern_mismatch") from None
    return value


def _known_timezone(value: str) -> str:
    if value not in _timezones():
        raise field_error(None, "timezone_unknown")
    return value


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


def _valid_iin(value: str) -> str:
    from probation.iin import IinError, validate_iin

    try:
        return validate_iin(value)
    except IinError as e:
        raise field_error(None, e.code) from None


def _sane_instant(value: datetime) -> datetime:
    """An aware instant between 1900 and 2200, normalised to UTC."""
    from datetime import UTC

    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise field_error(None, "datetime_range") from None
    if not 1900 <= utc.year <= 2200:
        raise field_error(None, "datetime_range")
    return utc


Text = Annotated[str, AfterValidator(_clean_text)]
Instant = Annotated[AwareDatetime, AfterValidator(_sane_instant),
                    PydField(description="RFC 3339 with an offset (years 1900-2200)")]
ShortText = Annotated[str, StringConstraints(max_length=200), AfterValidator(_clean_text)]
NameText = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_clean_text)]
NoteText = Annotated[str, StringConstraints(min_length=1, max_length=4000), AfterValidator(_clean_text)]
Username = Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256), AfterValidator(_clean_text)]
Timezone = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_known_timezone),
    PydField(description="IANA time zone name", examples=["Asia/Almaty"]),
]
Iin = Annotated[
    str, StringConstraints(min_length=12, max_length=12, pattern=r"^[0-9]{12}$"),
    AfterValidator(_valid_iin),
    PydField(description="Individual identification number: 12 digits, valid check digit",
             examples=["900101300014"]),
]
Lon = Annotated[float, PydField(ge=-180, le=180, allow_inf_nan=False)]
Lat = Annotated[float, PydField(ge=-90, le=90, allow_inf_nan=False)]
Meters = Annotated[float, PydField(ge=0, le=100_000, allow_inf_nan=False)]


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` back as `cursor` for the next one."""

    items: list[T]
    next_cursor: str | None = None


# ---- auth and users -------------------------------------------------------------------


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = PydField(description="Lifetime of the token in seconds.")


class UserBase(SQLModel):
    username: Username
    role: Role
    full_name: ShortText = ""
    supervisor_id: uuid.UUID | None = None


class UserCreate(UserBase):
    password: Password


class UserUpdate(SQLModel):
    full_name: ShortText | None = None
    role: Role | None = None
    supervisor_id: uuid.UUID | None = None
    is_active: bool | None = None
    password: Password | None = None
    unlock: bool | None = PydField(default=None, description="true: clear a login lock-out.")


class UserPublic(UserBase):
    id: uuid.UUID
    is_active: bool
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime


# ---- subjects ---------------------------------------------------------------------------


class SubjectBase(SQLModel):
    iin: Iin
    full_name: NameText
    birth_date: date


class SubjectCreate(SubjectBase):
    @model_validator(mode="after")
    def _iin_matches_birth_date(self) -> SubjectCreate:
        from probation.iin import birth_date_of

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


# ---- cases ------------------------------------------------------------------------------


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


class CaseBase(SQLModel):
    court_order_ref: NameText
    starts_on: date
    ends_on: date
    risk_level: RiskLevel
    timezone: Timezone = "Asia/Almaty"
    checkin_policy: CheckinPolicy | None = None


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


class LivePosition(SQLModel):
    """A case's newest fix, as the live positions stream sends it."""

    case_id: uuid.UUID
    ts: datetime
    lat: float
    lon: float
    acc: float


# ---- zones ------------------------------------------------------------------------------

Position = Annotated[
    list[Annotated[float, PydField(allow_inf_nan=False)]],
    PydField(min_length=2, max_length=3, description="[lon, lat] or [lon, lat, alt] (WGS 84)"),
]
Ring = Annotated[list[Position], PydField(min_length=4, max_length=10_000)]


class PolygonGeometry(SQLModel):
    type: Literal["Polygon"]
    coordinates: Annotated[list[Ring], PydField(min_length=1, max_length=100)]


class MultiPolygonGeometry(SQLModel):
    type: Literal["MultiPolygon"]
    coordinates: Annotated[
        list[Annotated[list[Ring], PydField(min_length=1, max_length=100)]],
        PydField(min_length=1, max_length=100),
    ]


ZoneGeometry = Annotated[PolygonGeometry | MultiPolygonGeometry, PydField(discriminator="type")]
UNION_TAGS.update({"Polygon", "MultiPolygon"})


class Circle(SQLModel):
    center: tuple[Lon, Lat] = PydField(description="[lon, lat]")
    radius_m: float = PydField(gt=0, le=100_000, allow_inf_nan=False)


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ClockTime = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class ScheduleWindow(SQLModel):
    days: Annotated[list[Weekday], PydField(min_length=1, max_length=7)]
    start: ClockTime
    end: ClockTime = PydField(description="Before `start`: the window runs past midnight.")


class Schedule(SQLModel):
    windows: Annotated[list[ScheduleWindow], PydField(min_length=1, max_length=50)]


class ZoneException(SQLModel):
    """An approved absence: the zone is not enforced from `from` to `to`."""

    model_config = SQLModelConfig(populate_by_name=True)

    from_: Instant = PydField(alias="from")
    to: Instant
    reason: ShortText = ""

    @model_validator(mode="after")
    def _order(self) -> ZoneException:
        if self.to <= self.from_:
            raise field_error("to", "time_order", other="from")
        return self


class ZoneBase(SQLModel):
    name: NameText
    kind: ZoneKind
    geometry: ZoneGeometry | None = None
    circle: Circle | None = None
    buffer_m: Meters = PydField(default=0.0, description="Warning ring around exclusion zones.")
    schedule: Schedule | None = PydField(default=None, description="null: always active.")
    exceptions: Annotated[list[ZoneException], PydField(max_length=500)] = []


class ZoneCreate(ZoneBase):
    @model_validator(mode="after")
    def _one_shape(self) -> ZoneCreate:
        if (self.geometry is None) == (self.circle is None):
            raise field_error("geometry", "geometry_or_circle")
        return self


class ZoneUpdate(SQLModel):
    name: NameText | None = None
    kind: ZoneKind | None = None
    geometry: ZoneGeometry | None = None
    circle: Circle | None = None
    buffer_m: Meters | None = None
    schedule: Schedule | None = None
    exceptions: Annotated[list[ZoneException], PydField(max_length=500)] | None = None


class ZonePublic(ZoneBase):
    id: uuid.UUID
    shared: bool
    version: int
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    case_ids: list[uuid.UUID] = PydField(
        default_factory=list, description="The cases this zone applies to (those you may see)."
    )


# ---- devices ----------------------------------------------------------------------------


class DeviceCreate(SQLModel):
    serial: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    kind: DeviceKindApi
    model: ShortText = ""
    firmware: ShortText = ""


class DevicePublic(SQLModel):
    id: uuid.UUID
    serial: str
    kind: DeviceKindApi
    model: str
    firmware: str
    battery: int | None
    online: bool
    last_seen: datetime | None
    last_fix_at: datetime | None
    current_case_id: uuid.UUID | None = None
    created_at: datetime
    updated_at: datetime


class AssignmentCreate(SQLModel):
    device_id: uuid.UUID


class AssignmentPublic(SQLModel):
    id: uuid.UUID
    device_id: uuid.UUID
    serial: str
    case_id: uuid.UUID
    assigned_at: datetime
    unassigned_at: datetime | None
    assigned_by: uuid.UUID | None
    unassigned_by: uuid.UUID | None


# ---- telemetry views --------------------------------------------------------------------


class DeviceEventPublic(SQLModel):
    device_id: uuid.UUID
    seq: int
    ts: datetime
    type: str
    detail: dict[str, Any] | None


class CheckinPublic(SQLModel):
    device_id: uuid.UUID
    seq: int
    ts: datetime
    method: str
    similarity: float | None
    liveness: float
    passed: bool
    request_id: str | None
    lat: float | None
    lon: float | None
    acc: float | None


class CheckinRequestCreate(SQLModel):
    deadline_s: int = PydField(default=900, ge=60, le=3600,
                               description="How long the person has to check in.")


class CheckinRequestPublic(SQLModel):
    id: uuid.UUID
    case_id: uuid.UUID
    device_id: uuid.UUID | None
    source: str
    requested_by: uuid.UUID | None
    due_at: datetime
    deadline: datetime
    command_id: uuid.UUID | None
    status: str
    created_at: datetime


class PointGeometry(BaseModel):
    type: Literal["Point"] = "Point"
    coordinates: list[float]


class LineStringGeometry(BaseModel):
    type: Literal["LineString"] = "LineString"
    coordinates: list[list[float]]


class TrackFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    geometry: LineStringGeometry | PointGeometry | None = PydField(
        description="null for the line of a track with fewer than two fixes")
    properties: dict[str, Any]


class TrackCollection(BaseModel):
    """The track: a LineString feature (properties: case_id, from, to, fixes, points)
    followed by one Point feature per kept fix (properties: ts, acc, and `crossing`)."""

    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[TrackFeature]


# ---- alerts -----------------------------------------------------------------------------


class AlertPublic(SQLModel):
    id: uuid.UUID
    case_id: uuid.UUID
    device_id: uuid.UUID | None
    zone_id: uuid.UUID | None
    type: AlertType
    severity: Severity
    status: AlertStatus
    episode_open: bool
    started_at: datetime
    ended_at: datetime | None
    late: bool
    delay_s: float | None
    inferred: bool
    escalation_level: int
    escalated_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: uuid.UUID | None
    resolved_at: datetime | None
    resolved_by: uuid.UUID | None
    resolution: Resolution | None
    evidence: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    change_seq: int


class AlertEventPublic(SQLModel):
    id: int
    at: datetime
    actor_id: uuid.UUID | None
    actor: str | None = PydField(default=None, description="The actor's username.")
    kind: str
    data: dict[str, Any]


class ZoneSummary(SQLModel):
    id: uuid.UUID
    name: str
    kind: ZoneKind


class AlertDetail(AlertPublic):
    """An alert with its zone, episode duration and timeline (oldest first)."""

    zone: ZoneSummary | None
    duration_s: float | None
    timeline: list[AlertEventPublic]


class AcknowledgeRequest(SQLModel):
    note: NoteText | None = None


class ResolveRequest(SQLModel):
    resolution: Resolution
    note: NoteText | None = None


class NoteCreate(SQLModel):
    text: NoteText


# ---- audit ------------------------------------------------------------------------------


class AuditEntryPublic(SQLModel):
    id: int
    at: datetime
    user_id: uuid.UUID | None
    action: str
    resource: str
    resource_id: str | None
    case_id: uuid.UUID | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerification(SQLModel):
    ok: bool
    entries: int = PydField(description="Entries checked.")
    broken_at: int | None = PydField(default=None, description="Id of the first bad entry.")
    reason: str | None = PydField(
        default=None, description="hash_mismatch (altered) or prev_hash_mismatch (removed or reordered)."
    )
