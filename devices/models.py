"""Tables of the devices domain: inventory, assignments, commands, dead letters.

Telemetry (`fixes`, `device_events`, `checkins`) is written and read with
written-out SQL in `devices/service.py`; its DDL is in `db/migrations`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import String
from sqlmodel import Field, SQLModel

from db.types import UTCDateTime, utcnow


class DeviceKind(StrEnum):
    BRACELET = "bracelet"
    BEACON = "beacon"
    PHONE = "phone"


class Device(SQLModel, table=True):
    __tablename__ = "devices"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    serial: str = Field(unique=True)
    kind: DeviceKind = Field(sa_type=String)
    model: str = ""
    firmware: str = ""
    battery: int | None = None
    online: bool = False
    last_seen: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_fix_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_good_fix_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    mqtt_password_hash: str | None = None  # devices/mqtt_auth.py; never the password
    mqtt_password_set_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    trusted_biometrics: bool = False  # app-computed embeddings accepted (admin's choice)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DeviceAssignment(SQLModel, table=True):
    __tablename__ = "device_assignments"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    device_id: uuid.UUID = Field(foreign_key="devices.id")
    case_id: uuid.UUID = Field(foreign_key="cases.id")
    assigned_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    unassigned_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    assigned_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    unassigned_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")


class CheckinRequest(SQLModel, table=True):
    __tablename__ = "checkin_requests"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="cases.id")
    device_id: uuid.UUID | None = Field(default=None, foreign_key="devices.id")
    source: str
    requested_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    due_at: datetime = Field(sa_type=UTCDateTime)
    deadline: datetime = Field(sa_type=UTCDateTime)
    command_id: uuid.UUID | None = None
    status: str = "scheduled"
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    challenge: str | None = None  # the gesture asked (check-ins with camera frames)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
