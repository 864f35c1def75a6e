"""The frozen frames that flow between the steps of `advance` (numpy columns).

Frames are not copied: a step reads the arrays of earlier frames and builds new
ones; no step writes into an array of a frame it did not build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from geofence.engine.kernels import F64, I8, I32, I64, BoolA


@dataclass(frozen=True, eq=False)
class Fixes:
    """Step 0: the batch in (device, ts) order; ``m``: margin, max(acc, min_margin_m)."""

    n: int
    ndev: int
    ts: I64
    case: I64
    dev: I32
    lat: F64
    lon: F64
    acc: F64
    m: F64


@dataclass(frozen=True, eq=False)
class Sequences:
    """Step 1: per device and per (device, case) key ("dc") runs of fixes.

    ``od``: fix order by device (the identity after step 0); ``dev_ptr``: each
    device's run in ``od``; ``dc``: (device, case) key per fix, ``odc``/``dc_ptr`` its
    runs; ``multi``: some device sends fixes of several cases (``u_dc`` then holds
    the sorted ``device * nc + case`` codes).
    """

    od: I64
    dev_ptr: I64
    has_fix: BoolA
    dev_case: I64
    multi: bool
    dc: I64
    ndc: int
    dc_dev: I64
    dc_case: I64
    odc: I64
    dc_ptr: I64
    u_dc: I64


@dataclass(frozen=True, eq=False)
class Extended:
    """Step 2: the fix pool for segments: batch fixes, then stored last fixes ("virtual").

    ``drow``: row of each batch device in the state's device table (-1: none);
    ``prev``: the previous fix of each batch fix (index into the pool, -1: none).
    """

    dmap: dict[Any, int]
    drow: I64
    nv: int
    v_ts: I64
    prev: I64
    ets: I64
    elat: F64
    elon: F64
    eacc: F64
    em: F64
    edc: I64


@dataclass(frozen=True, eq=False)
class Stated:
    """Step 3: stored episode states that take part (rows of the state) and their keys.

    ``key``: ((dc * nz + zone) * 2 + t), t = 1 for approach; ``slot``: the zone's slot
    in its case's direct table (-1: a shared zone).
    """

    rows: I64
    dc: I64
    zone: I64
    case: I64
    t: I64
    key: I64
    order: I64
    key_sorted: I64
    slot: I64


@dataclass(frozen=True, eq=False)
class Prefilter:
    """Step 4 masks: weak fixes (acc > max_open_acc_m), imprecise ("big") ones, and the
    (dc x slot) table of stated direct keys."""

    zone2: I32
    maxd: int
    weak_fix: BoolA
    big: BoolA
    stated_tab: BoolA | None
    dc_stated: BoolA


@dataclass(frozen=True, eq=False)
class Pairs:
    """Candidate (fix, zone) pairs with the zone's schedule status at the fix."""

    f: I64
    z: I64
    act: BoolA
    cnt: I64
    g: I64
    slot: I64

    def concat(self, other: Pairs) -> Pairs:
        return Pairs(
            np.concatenate((self.f, other.f)),
            np.concatenate((self.z, other.z)),
            np.concatenate((self.act, other.act)),
            np.concatenate((self.cnt, other.cnt)),
            np.concatenate((self.g, other.g)),
            np.concatenate((self.slot, other.slot)),
        )


@dataclass(frozen=True, eq=False)
class Rows:
    """Step 9: rows of the state-machine scan (observations and inferred crossings).

    ``afix``: an inferred crossing's first fix (-1 otherwise); ``tie``: order among
    rows of one fix (0 reset, 1 inferred crossing, 2 observation, 3 end row).
    """

    fix: I64
    zone: I64
    t: I64
    sym: I8
    depth: F64
    act: BoolA
    cnt: I64
    g: I64
    afix: I64
    tie: I64
    dc: I64
    key: I64
    ts: I64


@dataclass(frozen=True, eq=False)
class ScannedRows:
    """Rows in scan order (by key, then time), with reset and end rows merged in."""

    fix: I64
    zone: I64
    t: I64
    sym: I8
    depth: F64
    afix: I64
    dc: I64
    ts: I64
    tie: I64
    key: I64


@dataclass(frozen=True, eq=False)
class Scan:
    """The state machine over the rows: a segment per key, states before/after each row.

    ``srow_of_first``: per segment, index into ``Stated.rows`` of its stored state (-1).
    """

    first: BoolA
    fpos: I64
    seg_start: I64
    seg_id: I64
    s0_seg: I8
    srow_of_first: I64
    before: I8
    after: I8
    run_n: I64  # per row: wrong-side fixes of its pending run (what a pending state keeps)
