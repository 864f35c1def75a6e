"""Device inventory and assignments (the API's side of devices).

A device serves one active case at a time (the partial unique index
`device_assignments_one_active`); unassigning closes the assignment, so the
history stays. Visibility: admins see every device; others see the devices of
the cases they may see plus the free ones (to assign them).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, exists, or_, true
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from db.types import utcnow
from devices import mqtt_auth
from devices.models import Device, DeviceAssignment, DeviceKind
from probation.audit import service as audit
from probation.cases.models import Case, CaseStatus
from probation.cases.scope import CaseScope
from probation.desk.models import (
    AssignmentPublic,
    DeviceCreate,
    DeviceCreated,
    DeviceCredentials,
    DevicePublic,
    DeviceUpdate,
)
from probation.errors import Conflict, NotFound, invalid
from probation.pagination import decode_cursor, page_of, parse_text

_ACTIVE = col(DeviceAssignment.unassigned_at).is_(None)


def _current_case() -> Any:
    return (
        select(DeviceAssignment.case_id)
        .where(DeviceAssignment.device_id == Device.id, _ACTIVE)
        .limit(1)
        .scalar_subquery()
    )


def visible(scope: CaseScope) -> ColumnElement[bool]:
    """A clause on `Device` for the devices `scope` (a `CaseScope`) may see."""
    if scope.everything:
        return true()
    in_use = exists().where(col(DeviceAssignment.device_id) == Device.id, _ACTIVE)
    mine = exists().where(
        col(DeviceAssignment.device_id) == Device.id, _ACTIVE,
        col(DeviceAssignment.case_id).in_(scope.case_ids()),
    )
    return or_(~in_use, mine)


def _public(device: Device, case_id: uuid.UUID | None) -> DevicePublic:
    return DevicePublic.model_validate(device, update={"current_case_id": case_id})


def update_device(
    session: Session, *, device_id: uuid.UUID, data: DeviceUpdate, actor_id: uuid.UUID,
) -> DevicePublic:
    """Change a device's biometric trust (admin; audited)."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound()
    before = device.trusted_biometrics
    device.trusted_biometrics = data.trusted_biometrics
    device.updated_at = utcnow()
    session.add(device)
    session.flush()
    audit.record(session, user_id=actor_id, action="device.update", resource="device",
                 resource_id=device.id,
                 detail={"trusted_biometrics": {"from": before, "to": data.trusted_biometrics}})
    current = session.exec(
        select(DeviceAssignment.case_id).where(DeviceAssignment.device_id == device.id, _ACTIVE)
    ).first()
    return _public(device, current)


def _issue_credentials(device: Device) -> DeviceCredentials:
    """A new broker password for `device`: its hash is stored, the password returned once."""
    password = mqtt_auth.new_password()
    device.mqtt_password_hash = mqtt_auth.hash_password(password)
    device.mqtt_password_set_at = utcnow()
    return DeviceCredentials(device_id=device.id, mqtt_username=device.serial,
                             mqtt_password=password, issued_at=device.mqtt_password_set_at)


def create_device(session: Session, *, data: DeviceCreate, actor_id: uuid.UUID) -> DeviceCreated:
    """Register a device and issue its broker credentials."""
    if session.exec(select(Device.id).where(Device.serial == data.serial)).first():
        raise Conflict("serial_taken", serial=data.serial)
    device = Device(serial=data.serial, kind=data.kind, model=data.model, firmware=data.firmware)
    credentials = _issue_credentials(device)
    session.add(device)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("serial_taken", serial=data.serial) from None
    audit.record(session, user_id=actor_id, action="device.create", resource="device",
                 resource_id=device.id, detail={"serial": device.serial, "kind": device.kind})
    return DeviceCreated(**_public(device, None).model_dump(), credentials=credentials)


def rotate_credentials(session: Session, *, device_id: uuid.UUID,
                       actor_id: uuid.UUID) -> DeviceCredentials:
    """Replace a device's broker password (the old one stops working once the broker has
    reloaded its accounts)."""
    device = session.exec(select(Device).where(Device.id == device_id).with_for_update()).first()
    if device is None:
        raise NotFound()
    credentials = _issue_credentials(device)
    session.add(device)
    session.flush()
    audit.record(session, user_id=actor_id, action="device.rotate_credentials",
                 resource="device", resource_id=device.id, detail={"serial": device.serial})
    return credentials


def list_devices(
    session: Session, *, scope: CaseScope, kind: DeviceKind | None = None, serial: str | None = None,
    assigned: bool | None = None, limit: int = 50, cursor: str | None = None,
) -> tuple[list[DevicePublic], str | None]:
    """Inventory in serial order."""
    current = _current_case().label("current_case_id")
    q = select(Device, current).where(visible(scope))
    if kind is not None:
        q = q.where(Device.kind == kind)
    if serial is not None:
        q = q.where(col(Device.serial).startswith(serial, autoescape=True))
    if assigned is not None:
        active = exists().where(col(DeviceAssignment.device_id) == Device.id, _ACTIVE)
        q = q.where(active if assigned else ~active)
    after = decode_cursor("devices", cursor, parse_text)
    if after is not None:
        q = q.where(Device.serial > after[0])
    rows = session.exec(q.order_by(col(Device.serial)).limit(limit + 1)).all()
    items = [_public(d, c) for d, c in rows]
    page, nxt = page_of("devices", items, limit, lambda d: [d.serial])
    if page:
        audit.record(session, user_id=scope.user_id, action="device.list", resource="device",
                     detail={"device_ids": [str(d.id) for d in page]})
    return page, nxt


def get_device(session: Session, *, device_id: uuid.UUID, scope: CaseScope) -> DevicePublic:
    current = _current_case().label("current_case_id")
    row = session.exec(
        select(Device, current).where(Device.id == device_id, visible(scope))
    ).first()
    if row is None:
        raise NotFound()
    audit.record(session, user_id=scope.user_id, action="device.read", resource="device",
                 resource_id=device_id, case_id=row[1])
    return _public(row[0], row[1])


def _assignment_public(a: DeviceAssignment, serial: str) -> AssignmentPublic:
    return AssignmentPublic.model_validate(a, update={"serial": serial})


def assign_device(
    session: Session, *, case: Case, device_id: uuid.UUID, actor_id: uuid.UUID
) -> AssignmentPublic:
    """Give a free device to an active case."""
    if case.status != CaseStatus.ACTIVE:
        raise Conflict("case_closed")
    device = session.exec(select(Device).where(Device.id == device_id).with_for_update()).first()
    if device is None:
        raise invalid("device_id", "unknown_device")
    current = session.exec(
        select(DeviceAssignment).where(DeviceAssignment.device_id == device_id, _ACTIVE)
    ).first()
    if current is not None:
        raise Conflict("device_already_assigned" if current.case_id == case.id else "device_in_use")
    assignment = DeviceAssignment(device_id=device_id, case_id=case.id, assigned_by=actor_id)
    session.add(assignment)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("device_in_use") from None
    audit.record(session, user_id=actor_id, action="device.assign", resource="device",
                 resource_id=device_id, case_id=case.id, detail={"serial": device.serial})
    return _assignment_public(assignment, device.serial)


def unassign_device(
    session: Session, *, case: Case, device_id: uuid.UUID, actor_id: uuid.UUID
) -> AssignmentPublic:
    """End a device's assignment to a case (the record stays)."""
    row = session.exec(
        select(DeviceAssignment, Device.serial)
        .join(Device, col(Device.id) == DeviceAssignment.device_id)
        .where(DeviceAssignment.device_id == device_id, DeviceAssignment.case_id == case.id,
               _ACTIVE)
        .with_for_update(of=DeviceAssignment)  # type: ignore[arg-type]
    ).first()
    if row is None:
        raise NotFound("no_active_assignment")
    assignment, serial = row
    assignment.unassigned_at = utcnow()
    assignment.unassigned_by = actor_id
    session.add(assignment)
    session.flush()
    audit.record(session, user_id=actor_id, action="device.unassign", resource="device",
                 resource_id=device_id, case_id=case.id, detail={"serial": serial})
    return _assignment_public(assignment, serial)


def case_assignments(
    session: Session, *, case: Case, actor_id: uuid.UUID
) -> list[AssignmentPublic]:
    """A case's assignment history, newest first (audited as a read)."""
    rows = session.exec(
        select(DeviceAssignment, Device.serial)
        .join(Device, col(Device.id) == DeviceAssignment.device_id)
        .where(DeviceAssignment.case_id == case.id)
        .order_by(col(DeviceAssignment.assigned_at).desc())
    ).all()
    audit.record(session, user_id=actor_id, action="assignment.list", resource="case",
                 resource_id=case.id, case_id=case.id)
    return [_assignment_public(a, s) for a, s in rows]


def active_device(session: Session, *, case_id: uuid.UUID, prefer: tuple[str, ...]) -> Device | None:
    """The case's active device, preferring the kinds in `prefer` in that order."""
    rows = session.exec(
        select(Device).join(DeviceAssignment, col(DeviceAssignment.device_id) == Device.id)
        .where(DeviceAssignment.case_id == case_id, _ACTIVE)
        .order_by(col(DeviceAssignment.assigned_at).desc())
    ).all()
    for kind in prefer:
        for d in rows:
            if d.kind == kind:
                return d
    return rows[0] if rows else None

