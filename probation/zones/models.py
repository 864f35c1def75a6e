"""Zones: the tables (zones, case_zones) and the API shapes (GeoJSON, circle, schedule).

Columns mirror `db/migrations` (the SQL there is the source of truth).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field as PydField
from pydantic import StringConstraints, model_validator
from sqlalchemy import Column, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel
from sqlmodel._compat import SQLModelConfig

from db.types import UTCDateTime, utcnow
from probation.errors import UNION_TAGS, field_error
from probation.fields import Instant, Lat, Lon, Meters, NameText, ShortText


class ZoneKind(StrEnum):
    INCLUSION = "inclusion"
    EXCLUSION = "exclusion"


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
