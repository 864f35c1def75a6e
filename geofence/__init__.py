"""Pure-computation geofence engine (numpy + standard library only, no I/O).

Public API:

* Zones: `compile_zone` (GeoJSON Polygon/MultiPolygon or circle -> `CompiledZone`,
  raises `InvalidGeometry(field, message)`), `validate_schedule` /
  `validate_exceptions` (raise `InvalidSchedule(field, message)`).
* Schedules: `schedule_active` (vectorised, DST-correct), `window_starts` (UTC
  instants at which a zone becomes active, for the curfew-start rule).
* Registry: `CaseZones(cases, zones, attachments)` / `CaseZones.from_cases(...)`
  with `ZoneEntry.make(compiled, schedule, exceptions)`; build once per zones version.
* Evaluation: `advance(state, FixBatch, CaseZones) -> (EngineState, Transitions)`,
  pure and deterministic; `close_inactive` (periodic: zones that went inactive
  without fixes), `open_at_window_start` (curfew start with the last fix outside).
* State: `EngineState` (numpy columns; `to_dict`/`from_dict`, per device
  `device_state`/`from_device_states`), transitions: `Transitions` (columnar;
  iterate for `Transition`, `.records()` for JSON-able dicts).
The benchmark against shapely is `bench.geofence` (`probation bench geofence`).
"""

from geofence.engine import (
    DEFAULT_CONFIG,
    FixBatch,
    GeofenceConfig,
    advance,
    close_inactive,
    open_at_window_start,
)
from geofence.episodes import (
    ALERT_TYPES,
    SEVERITY,
    EngineState,
    EpisodeState,
    Fix,
    Transition,
    Transitions,
)
from geofence.geometry import CompiledZone, InvalidGeometry, ZoneStore, compile_zone, haversine_m
from geofence.registry import CaseZones, ZoneEntry
from geofence.schedule import (
    InvalidSchedule,
    Schedule,
    compile_exceptions,
    compile_schedule,
    schedule_active,
    validate_exceptions,
    validate_schedule,
    window_starts,
)

__all__ = [
    "ALERT_TYPES",
    "DEFAULT_CONFIG",
    "SEVERITY",
    "CaseZones",
    "CompiledZone",
    "EngineState",
    "EpisodeState",
    "Fix",
    "FixBatch",
    "GeofenceConfig",
    "InvalidGeometry",
    "InvalidSchedule",
    "Schedule",
    "Transition",
    "Transitions",
    "ZoneEntry",
    "ZoneStore",
    "advance",
    "close_inactive",
    "compile_exceptions",
    "compile_schedule",
    "compile_zone",
    "haversine_m",
    "open_at_window_start",
    "schedule_active",
    "validate_exceptions",
    "validate_schedule",
    "window_starts",
]
