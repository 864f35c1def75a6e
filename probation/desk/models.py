"""API shapes of the alert desk: devices and assignments, telemetry views, alerts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field as PydField
from pydantic import StringConstraints
from sqlmodel import SQLModel

from alerts.models import AlertStatus, AlertType, Resolution, Severity
from devices.models import DeviceKind as DeviceKindApi
from probation.fields import NoteText, ShortText
from probation.zones.models import ZoneKind


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
    trusted_biometrics: bool = False
    created_at: datetime
    updated_at: datetime


class DeviceCredentials(SQLModel):
    """A device's broker login, shown once: only its hash is kept."""

    device_id: uuid.UUID
    mqtt_username: str = PydField(description="The device's serial.")
    mqtt_password: str = PydField(description="Shown only in this response; store it on the "
                                  "device. Lost: rotate it.")
    issued_at: datetime


class DeviceCreated(DevicePublic):
    credentials: DeviceCredentials


class DeviceUpdate(SQLModel):
    """What an admin may change on a device."""

    trusted_biometrics: bool = PydField(
        description="Accept check-ins with an app-computed face embedding from this device "
        "(v1.0 form). Other devices must send camera frames; their embeddings fail with "
        "`untrusted_device_biometrics`.")


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
    challenge: str | None = None


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
