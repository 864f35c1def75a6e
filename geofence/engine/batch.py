"""`FixBatch`: a batch of fixes as numpy columns, the engine's input."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geofence.engine.kernels import F64, I32, I64, ObjA
from geofence.registry import CaseZones
from geofence.schedule import to_epoch_ms


@dataclass(frozen=True, eq=False)
class FixBatch:
    """A batch of fixes as numpy columns.

    ``case``: registry case index per fix (`CaseZones.case_index`); ``device``:
    index into ``device_ids`` (the device's stable id, e.g. its UUID string);
    ``ts``: epoch ms int64; ``lat``/``lon`` degrees; ``acc`` metres.
    """

    case: I32
    device: I32
    device_ids: ObjA
    ts: I64
    lat: F64
    lon: F64
    acc: F64

    def __post_init__(self) -> None:
        n = np.asarray(self.ts).shape[0]
        for name, dt in (
            ("case", np.int32),
            ("device", np.int32),
            ("ts", np.int64),
            ("lat", np.float64),
            ("lon", np.float64),
            ("acc", np.float64),
        ):
            a = np.ascontiguousarray(np.asarray(getattr(self, name), dtype=dt))
            if a.shape != (n,):
                raise ValueError(f"FixBatch.{name}: expected shape ({n},), got {a.shape}")
            object.__setattr__(self, name, a)
        ids = np.empty(len(self.device_ids), dtype=object)
        ids[:] = list(self.device_ids)
        object.__setattr__(self, "device_ids", ids)
        if n:
            if not (np.isfinite(self.lat).all() and np.isfinite(self.lon).all()):
                raise ValueError("FixBatch: non-finite coordinates")
            if not (np.isfinite(self.acc).all() and (self.acc >= 0).all()):
                raise ValueError("FixBatch: acc must be finite and >= 0")
            if self.device.min() < 0 or self.device.max() >= ids.size:
                raise ValueError("FixBatch: device index out of range")

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def from_columns(
        cls,
        zones: CaseZones,
        case_ids: Sequence[str],
        device_ids: Sequence[str],
        ts: Any,
        lat: Any,
        lon: Any,
        acc: Any,
    ) -> FixBatch:
        """Build from per-fix ids; ``ts`` as epoch ms, datetime64, datetimes or RFC 3339."""
        uniq = sorted(set(device_ids))
        dmap = {d: i for i, d in enumerate(uniq)}
        dev = np.fromiter((dmap[d] for d in device_ids), np.int32, len(device_ids))
        case = np.fromiter((zones.case_index[c] for c in case_ids), np.int32, len(case_ids))
        t = np.asarray(ts)
        if np.issubdtype(t.dtype, np.datetime64):
            t = t.astype("datetime64[ms]").astype(np.int64)
        elif t.dtype == object or t.dtype.kind in "US":
            t = np.fromiter((to_epoch_ms(v, "ts") for v in ts), np.int64, len(ts))
        return cls(case, dev, np.array(uniq, dtype=object), t, lat, lon, acc)

    @classmethod
    def from_records(cls, zones: CaseZones, records: Iterable[Mapping[str, Any]]) -> FixBatch:
        """From dicts with ``case_id, device_id, ts, lat, lon, acc``."""
        recs = list(records)
        return cls.from_columns(
            zones,
            [r["case_id"] for r in recs],
            [r["device_id"] for r in recs],
            [r["ts"] for r in recs] if recs else np.zeros(0, np.int64),
            [float(r["lat"]) for r in recs],
            [float(r["lon"]) for r in recs],
            [float(r["acc"]) for r in recs],
        )

    def select(self, idx: Any) -> FixBatch:
        """Sub-batch (boolean mask or indices); shares the device id table.

        Not validated again: the rows of a valid batch are valid (the checks and the
        id table's copy cost as much as the engine's ordering of a batch)."""
        out = object.__new__(FixBatch)
        for name in ("case", "device", "ts", "lat", "lon", "acc"):
            object.__setattr__(out, name, np.ascontiguousarray(getattr(self, name)[idx]))
        object.__setattr__(out, "device_ids", self.device_ids)
        return out
