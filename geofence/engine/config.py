"""The engine's thresholds (`GeofenceConfig`) and its distance-kernel thread pool."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


@dataclass(frozen=True)
class GeofenceConfig:
    """Rule thresholds (defaults from the monitoring rules; global, not per case).

    The "2 consecutive fixes" counts are fixed by the state machine.
    ``threads``: workers for the distance kernel (<= 1: none).
    """

    min_margin_m: float = 10.0
    deep_factor: float = 3.0
    deep_min_m: float = 100.0
    max_open_acc_m: float = 500.0
    segment_max_gap_ms: int = 600_000
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
