"""Zones: per-case and shared, validated by the geofence compiler, versioned for the engine.

Every change bumps `config_versions('zones')`, which the running geofence
engine polls to reload its compiled zones without a restart.

Visibility: a zone is visible to whoever may see a case it is attached to;
shared zones (`POST /zones`) are also visible to every supervisor and admin,
who alone may change or delete them. Only shared zones may be attached to
more than one case.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import OrderedDict
from datetime import UTC
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, or_, text, true, tuple_
from sqlmodel import Session, col, select

from db.types import utcnow
from geofence import (
    InvalidGeometry,
    InvalidSchedule,
    compile_zone,
    validate_exceptions,
    validate_schedule,
)
from geofence.area import Placement, ServiceArea, place, zone_points
from probation.audit import service as audit
from probation.cases.models import Case, CaseStatus
from probation.cases.scope import CaseScope
from probation.errors import Conflict, FieldError, Forbidden, Invalid, NotFound, invalid
from probation.pagination import decode_cursor, page_of, parse_text, parse_uuid
from probation.users.models import Role
from probation.zones.models import CaseZone, Zone, ZoneCreate, ZoneException, ZonePublic, ZoneUpdate

_INDEX = re.compile(r"\[(\d+)\]")


def bump_zones_config(session: Session) -> None:
    """Tell the running engine that zones changed."""
    session.execute(
        text("UPDATE config_versions SET version = version + 1, updated_at = now() "
             "WHERE name = 'zones'")
    )


def _dotted(field: str) -> str:
    return _INDEX.sub(r".\1", field)


def _exceptions_json(items: list[ZoneException]) -> list[dict[str, Any]]:
    return [
        {"from": e.from_.astimezone(UTC).isoformat(), "to": e.to.astimezone(UTC).isoformat(),
         "reason": e.reason}
        for e in items
    ]


def _check_area(zone: Zone, area: ServiceArea) -> None:
    """A 422 if the zone is not inside the service area (with a swap hint if it fits)."""
    where = place(zone_points(zone.geometry, zone.circle), area)
    if where is Placement.INSIDE:
        return
    code = "outside_service_area_swapped" if where is Placement.SWAPPED else "outside_service_area"
    raise invalid("geometry" if zone.geometry is not None else "circle", code,
                  lat_min=area.lat_min, lat_max=area.lat_max,
                  lon_min=area.lon_min, lon_max=area.lon_max)


def _validate(zone: Zone, area: ServiceArea | None) -> None:
    """Compile the zone as the engine will; a 422 naming the field if it cannot or if it
    lies outside the service area."""
    try:
        compile_zone(zone_id=str(zone.id), kind=zone.kind, geometry=zone.geometry,
                     circle=zone.circle, buffer_m=zone.buffer_m)
    except InvalidGeometry as e:
        raise Invalid([FieldError(_dotted(e.field), "geometry_invalid", {"reason": e.message})]) from None
    try:
        validate_schedule(zone.schedule)
        validate_exceptions(zone.exceptions)
    except InvalidSchedule as e:
        raise Invalid([FieldError(_dotted(e.field), "schedule_invalid", {"reason": e.message})]) from None
    if area is not None:
        _check_area(zone, area)


def visible(scope: CaseScope) -> ColumnElement[bool]:
    """A clause on `Zone` for the zones `scope` (a `CaseScope`) may see."""
    if scope.everything:
        return true()
    attached = exists().where(
        and_(col(CaseZone.zone_id) == Zone.id, col(CaseZone.case_id).in_(scope.case_ids()))
    )
    if scope.role == Role.SUPERVISOR:
        return or_(attached, col(Zone.shared))
    return attached


def _public(session: Session, zone: Zone, scope: CaseScope) -> ZonePublic:
    q = select(CaseZone.case_id).where(CaseZone.zone_id == zone.id)
    if not scope.everything:
        q = q.where(col(CaseZone.case_id).in_(scope.case_ids()))
    case_ids = sorted(session.exec(q).all(), key=str)
    return ZonePublic.model_validate(zone, update={"case_ids": case_ids})


def _new_zone(
    data: ZoneCreate, *, shared: bool, actor_id: uuid.UUID, area: ServiceArea
) -> Zone:
    zone = Zone(
        name=data.name, kind=data.kind,
        geometry=data.geometry.model_dump(mode="json") if data.geometry else None,
        circle=data.circle.model_dump(mode="json") if data.circle else None,
        buffer_m=data.buffer_m,
        schedule=data.schedule.model_dump(mode="json") if data.schedule else None,
        exceptions=_exceptions_json(data.exceptions), shared=shared, created_by=actor_id,
    )
    _validate(zone, area)
    return zone


def create_case_zone(
    session: Session, *, case: Case, data: ZoneCreate, scope: CaseScope, area: ServiceArea
) -> ZonePublic:
    """A zone of one case."""
    if case.status != CaseStatus.ACTIVE:
        raise Conflict("case_closed")
    zone = _new_zone(data, shared=False, actor_id=scope.user_id, area=area)
    session.add(zone)
    session.flush()
    session.add(CaseZone(case_id=case.id, zone_id=zone.id))
    session.flush()
    bump_zones_config(session)
    audit.record(session, user_id=scope.user_id, action="zone.create", resource="zone",
                 resource_id=zone.id, case_id=case.id, detail={"kind": zone.kind})
    return ZonePublic.model_validate(zone, update={"case_ids": [case.id]})


def create_shared_zone(
    session: Session, *, data: ZoneCreate, scope: CaseScope, area: ServiceArea
) -> ZonePublic:
    """A shared zone (school, a victim's home) to attach to cases (supervisor, admin)."""
    zone = _new_zone(data, shared=True, actor_id=scope.user_id, area=area)
    session.add(zone)
    session.flush()
    bump_zones_config(session)
    audit.record(session, user_id=scope.user_id, action="zone.create", resource="zone",
                 resource_id=zone.id, detail={"kind": zone.kind, "shared": True})
    return ZonePublic.model_validate(zone, update={"case_ids": []})


def list_shared_zones(
    session: Session, *, scope: CaseScope, limit: int, cursor: str | None
) -> tuple[list[ZonePublic], str | None]:
    """The shared zones (supervisor, admin: the roles that may see every one), by name, to
    pick one to attach to a case."""
    after = decode_cursor("shared_zones", cursor, parse_text, parse_uuid)
    q = select(Zone).where(col(Zone.shared), col(Zone.deleted_at).is_(None))
    if after is not None:
        q = q.where(tuple_(col(Zone.name), col(Zone.id)) > tuple_(after[0], after[1]))
    rows = list(session.exec(q.order_by(col(Zone.name), col(Zone.id)).limit(limit + 1)))
    page, nxt = page_of("shared_zones", rows, limit, lambda z: [z.name, str(z.id)])
    audit.record(session, user_id=scope.user_id, action="zone.list", resource="zone",
                 detail={"shared": True, "count": len(page)})
    return [_public(session, z, scope) for z in page], nxt


def list_case_zones(session: Session, *, case: Case, scope: CaseScope) -> list[ZonePublic]:
    zones = session.exec(
        select(Zone)
        .join(CaseZone, col(CaseZone.zone_id) == Zone.id)
        .where(CaseZone.case_id == case.id, col(Zone.deleted_at).is_(None))
        .order_by(col(Zone.created_at), col(Zone.id))
    ).all()
    audit.record(session, user_id=scope.user_id, action="zone.list", resource="zone",
                 case_id=case.id)
    return [_public(session, z, scope) for z in zones]


def _visible_zone(session: Session, zone_id: uuid.UUID, scope: CaseScope, *, lock: bool = False) -> Zone:
    q = select(Zone).where(Zone.id == zone_id, col(Zone.deleted_at).is_(None), visible(scope))
    if lock:
        q = q.with_for_update(of=Zone)  # type: ignore[arg-type]
    zone = session.exec(q).first()
    if zone is None:
        raise NotFound()
    return zone


def _attached_case(session: Session, zone: Zone) -> uuid.UUID | None:
    if zone.shared:
        return None
    return session.exec(select(CaseZone.case_id).where(CaseZone.zone_id == zone.id)).first()


def get_zone(session: Session, *, zone_id: uuid.UUID, scope: CaseScope) -> ZonePublic:
    zone = _visible_zone(session, zone_id, scope)
    audit.record(session, user_id=scope.user_id, action="zone.read", resource="zone",
                 resource_id=zone.id, case_id=_attached_case(session, zone))
    return _public(session, zone, scope)


def _may_change(zone: Zone, scope: CaseScope) -> None:
    if zone.shared and scope.role not in (Role.SUPERVISOR, Role.ADMIN):
        raise Forbidden()


def update_zone(
    session: Session, *, zone_id: uuid.UUID, data: ZoneUpdate, scope: CaseScope,
    area: ServiceArea,
) -> ZonePublic:
    """Change a zone; its place is checked against `area` when geometry or circle change
    (a zone stored before the check can still be renamed or rescheduled)."""
    zone = _visible_zone(session, zone_id, scope, lock=True)
    _may_change(zone, scope)
    changes = data.model_dump(exclude_unset=True)
    errors = [FieldError(k, "missing") for k in ("name", "kind", "buffer_m", "exceptions")
              if k in changes and changes[k] is None]
    if errors:
        raise Invalid(errors)
    if data.geometry is not None and data.circle is not None:
        raise invalid("geometry", "geometry_or_circle")
    if "name" in changes:
        zone.name = changes["name"]
    if "kind" in changes:
        zone.kind = changes["kind"]
    if "buffer_m" in changes:
        zone.buffer_m = changes["buffer_m"]
    if "geometry" in changes:
        zone.geometry = data.geometry.model_dump(mode="json") if data.geometry else None
        if data.geometry is not None:
            zone.circle = None
    if "circle" in changes:
        zone.circle = data.circle.model_dump(mode="json") if data.circle else None
        if data.circle is not None:
            zone.geometry = None
    if (zone.geometry is None) == (zone.circle is None):
        raise invalid("geometry", "geometry_or_circle")
    if "schedule" in changes:
        zone.schedule = data.schedule.model_dump(mode="json") if data.schedule else None
    if "exceptions" in changes and data.exceptions is not None:
        zone.exceptions = _exceptions_json(data.exceptions)
    _validate(zone, area if {"geometry", "circle"} & changes.keys() else None)
    zone.version += 1
    zone.updated_at = utcnow()
    session.add(zone)
    session.flush()
    bump_zones_config(session)
    audit.record(session, user_id=scope.user_id, action="zone.update", resource="zone",
                 resource_id=zone.id, case_id=_attached_case(session, zone),
                 detail={"fields": sorted(changes), "version": zone.version})
    return _public(session, zone, scope)


def delete_zone(session: Session, *, zone_id: uuid.UUID, scope: CaseScope) -> None:
    """Soft-delete a zone and detach it from every case (alerts keep pointing at it)."""
    zone = _visible_zone(session, zone_id, scope, lock=True)
    _may_change(zone, scope)
    case_id = _attached_case(session, zone)
    zone.deleted_at = utcnow()
    zone.updated_at = zone.deleted_at
    zone.version += 1
    session.add(zone)
    session.execute(text("DELETE FROM case_zones WHERE zone_id = :z"), {"z": zone.id})
    session.flush()
    bump_zones_config(session)
    audit.record(session, user_id=scope.user_id, action="zone.delete", resource="zone",
                 resource_id=zone.id, case_id=case_id)


def attach_zone(session: Session, *, case: Case, zone_id: uuid.UUID, scope: CaseScope) -> ZonePublic:
    """Attach a shared zone to a case."""
    if case.status != CaseStatus.ACTIVE:
        raise Conflict("case_closed")
    zone = _visible_zone(session, zone_id, scope)
    if session.get(CaseZone, (case.id, zone.id)) is not None:
        raise Conflict("zone_already_attached")
    if not zone.shared:
        raise Conflict("zone_not_shared")
    session.add(CaseZone(case_id=case.id, zone_id=zone.id))
    session.flush()
    bump_zones_config(session)
    audit.record(session, user_id=scope.user_id, action="zone.attach", resource="zone",
                 resource_id=zone.id, case_id=case.id)
    return _public(session, zone, scope)


def detach_zone(session: Session, *, case: Case, zone_id: uuid.UUID, scope: CaseScope) -> None:
    """Detach a zone from a case (a case's own zone is deleted with it)."""
    link = session.get(CaseZone, (case.id, zone_id))
    zone = session.get(Zone, zone_id)
    if link is None or zone is None or zone.deleted_at is not None:
        raise NotFound()
    if not zone.shared:
        delete_zone(session, zone_id=zone_id, scope=scope)
        return
    _may_change(zone, scope)
    session.delete(link)
    session.flush()
    bump_zones_config(session)
    audit.record(session, user_id=scope.user_id, action="zone.detach", resource="zone",
                 resource_id=zone.id, case_id=case.id)


def case_zones_compiled(session: Session, case_id: uuid.UUID) -> list[Any]:
    """The compiled geometry of a case's live zones (for track crossings)."""
    zones = session.exec(
        select(Zone).join(CaseZone, col(CaseZone.zone_id) == Zone.id)
        .where(CaseZone.case_id == case_id, col(Zone.deleted_at).is_(None))
    ).all()
    out = []
    for z in zones:
        compiled = _compiled(z.id, z.version, z)
        if compiled is not None:
            out.append(compiled)
    return out


_COMPILED: OrderedDict[tuple[uuid.UUID, int], Any] = OrderedDict()
_COMPILED_MAX = 4096
_COMPILED_LOCK = threading.Lock()


def _compiled(zone_id: uuid.UUID, version: int, zone: Zone) -> Any:
    """A zone's compiled geometry, cached per (id, version); None if it does not compile."""
    key = (zone_id, version)
    with _COMPILED_LOCK:
        if key in _COMPILED:
            _COMPILED.move_to_end(key)
            return _COMPILED[key]
    try:
        compiled = compile_zone(zone_id=str(zone.id), kind=zone.kind, geometry=zone.geometry,
                                circle=zone.circle, buffer_m=zone.buffer_m)
    except InvalidGeometry:
        compiled = None
    with _COMPILED_LOCK:
        _COMPILED[key] = compiled
        if len(_COMPILED) > _COMPILED_MAX:
            _COMPILED.popitem(last=False)
    return compiled
