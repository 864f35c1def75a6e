"""The engine's thresholds (`GeofenceConfig`) and its distance-kernel thread pool."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from geofence.outliers import DEFAULT_OUTLIER_CONFIG, OutlierConfig


@dataclass(frozen=True)
class GeofenceConfig:
    """Rule thresholds (defaults from the monitoring rules).

    Opening needs ``confirm_points`` consecutive definite wrong-side fixes spanning
    ``confirm_ms`` (per case through `CaseZones`' ``confirm``), closing
    ``close_points`` right-side fixes spanning ``close_ms``. Inferred crossings need a
    plausible speed between their two fixes (``segment_max_speed_mps``, after both
    margins) and a long chord must pass deeper (``segment_depth_per_m`` of its length:
    it strays from a curved road). ``outliers``: the kinematic outlier rule
    (`geofence.outliers`). ``threads``: workers for the distance kernel (<= 1: none).
    """

    min_margin_m: float = 10.0
    max_open_acc_m: float = 500.0
    segment_max_gap_ms: int = 600_000
    segment_max_speed_mps: float = 45.0
    segment_depth_per_m: float = 0.1
    confirm_points: int = 2
    confirm_ms: int = 30_000
    close_points: int = 2
    close_ms: int = 60_000
    outliers: OutlierConfig = DEFAULT_OUTLIER_CONFIG
    threads: int = 1


DEFAULT_CONFIG = GeofenceConfig()
_EXECUTORS: dict[int, ThreadPoolExecutor] = {}


def executor(threads: int) -> ThreadPoolExecutor | None:
    """A shared pool of ``threads`` workers (capped at the CPU count); None for one."""
    threads = min(threads, os.cpu_count() or 1)
    if threads <= 1:
        return None
    ex = _EXECUTORS.get(threads)
    if ex is None:
        ex = _EXECUTORS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="geofence")
    return ex
