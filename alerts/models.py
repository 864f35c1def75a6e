"""Alerts: one per violation episode, with a timeline of everything that happens to it."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from db.types import UTCDateTime, utcnow


class AlertType(StrEnum):
    EXCLUSION_ZONE_ENTERED = "exclusion_zone_entered"
    EXCLUSION_ZONE_APPROACH = "exclusion_zone_approach"
    INCLUSION_ZONE_LEFT = "inclusion_zone_left"
    STRAP_TAMPER = "strap_tamper"
    CASE_TAMPER = "case_tamper"
    BATTERY_LOW = "battery_low"
    BATTERY_CRITICAL = "battery_critical"
    POWER_OFF = "power_off"
    COMMUNICATION_LOST = "communication_lost"
    LOCATION_LOST = "location_lost"
    GPS_JAMMING = "gps_jamming"
    BEACON_LOST = "beacon_lost"
    CHECKIN_MISSED = "checkin_missed"
    CHECKIN_FAILED = "checkin_failed"


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class AlertStatus(StrEnum):
    """The officer-facing lifecycle: open → acknowledged → resolved."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


#: Allowed lifecycle transitions; anything else is a conflict.
TRANSITIONS: dict[AlertStatus, frozenset[AlertStatus]] = {
    AlertStatus.OPEN: frozenset({AlertStatus.ACKNOWLEDGED, AlertStatus.RESOLVED}),
    AlertStatus.ACKNOWLEDGED: frozenset({AlertStatus.RESOLVED}),
    AlertStatus.RESOLVED: frozenset(),
}


def can_transition(current: AlertStatus, target: AlertStatus) -> bool:
    return target in TRANSITIONS[current]


class Resolution(StrEnum):
    VIOLATION_CONFIRMED = "violation_confirmed"
    FALSE_ALARM = "false_alarm"
    DEVICE_FAULT = "device_fault"
    APPROVED_ABSENCE = "approved_absence"
    OTHER = "other"


DEFAULT_SEVERITY: dict[AlertType, Severity] = {
    AlertType.EXCLUSION_ZONE_ENTERED: Severity.CRITICAL,
    AlertType.EXCLUSION_ZONE_APPROACH: Severity.MEDIUM,
    AlertType.INCLUSION_ZONE_LEFT: Severity.HIGH,
    AlertType.STRAP_TAMPER: Severity.CRITICAL,
    AlertType.CASE_TAMPER: Severity.CRITICAL,
    AlertType.BATTERY_LOW: Severity.LOW,
    AlertType.BATTERY_CRITICAL: Severity.HIGH,
    AlertType.POWER_OFF: Severity.HIGH,
    AlertType.COMMUNICATION_LOST: Severity.HIGH,
    AlertType.LOCATION_LOST: Severity.MEDIUM,
    AlertType.GPS_JAMMING: Severity.HIGH,
    AlertType.BEACON_LOST: Severity.MEDIUM,
    AlertType.CHECKIN_MISSED: Severity.MEDIUM,
    AlertType.CHECKIN_FAILED: Severity.HIGH,
}


class Alert(SQLModel, table=True):
    __tablename__ = "alerts"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="cases.id")
    device_id: uuid.UUID | None = Field(default=None, foreign_key="devices.id")
    zone_id: uuid.UUID | None = Field(default=None, foreign_key="zones.id")
    type: AlertType = Field(sa_type=String)
    severity: Severity = Field(sa_type=String)
    status: AlertStatus = Field(default=AlertStatus.OPEN, sa_type=String)
    episode_key: str
    episode_open: bool = True
    started_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    late: bool = False
    delay_s: float | None = None
    inferred: bool = False
    escalation_level: int = 0
    escalated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolved_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    resolution: Resolution | None = Field(default=None, sa_type=String)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    change_seq: int | None = None  # set by a trigger on every insert and update


class AlertEvent(SQLModel, table=True):
    __tablename__ = "alert_events"

    id: int | None = Field(default=None, primary_key=True)
    alert_id: uuid.UUID = Field(foreign_key="alerts.id")
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    actor_id: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    kind: str
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
