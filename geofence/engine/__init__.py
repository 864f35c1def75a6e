"""Batch evaluation: saved states + a batch of fixes -> new states + transitions.

Modules: `advance` (the pipeline, step by step), `frames` (the frozen frames the
steps pass on), `batch` (`FixBatch`), `config` (`GeofenceConfig`), `kernels` (array
helpers), `activity` (schedule lookups), `pairs` (candidate (fix, zone) pairs),
`observe` (distances -> symbols), `segments` (inferred crossings), `evidence`
(episodes, transitions, new states), `events` (no-fix events).
"""

from geofence.engine.advance import OutlierRanges, advance, advance_ex
from geofence.engine.batch import FixBatch
from geofence.engine.config import DEFAULT_CONFIG, GeofenceConfig
from geofence.engine.events import close_inactive, open_at_window_start

__all__ = [
    "DEFAULT_CONFIG",
    "FixBatch",
    "GeofenceConfig",
    "OutlierRanges",
    "advance",
    "advance_ex",
    "close_inactive",
    "open_at_window_start",
]
