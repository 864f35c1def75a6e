"""Confirmation of openings and closings ("N points / T seconds"), vectorised.

The episode state machine (`geofence.episodes`) only knows symbols. Whether a
wrong-side fix confirms an opening depends on the run it belongs to: the consecutive
definite wrong-side fixes of its key since the last right-side fix or zone reset
(uncertain fixes, outliers and imprecise wrong-side fixes neither count nor break a
run). A wrong-side fix confirms when its run holds at least ``n_open`` fixes spanning
at least ``t_open_ms``; a right-side fix confirms a closing when its run of right-side
fixes holds at least ``n_close`` fixes spanning ``t_close_ms``. Runs may have started
in an earlier batch: the stored state carries the pending run (first fix, count) and
the closing run (first right-side fix).

Rows are sorted by key, then time; ``seg_start[i]`` is the first row of row i's key.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from geofence.episodes import SYM_D, SYM_I, SYM_R, SYM_RC, SYM_W, SYM_X
from geofence.outliers import HELD, RELEASED
from geofence.runs import last_true

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
BoolA = npt.NDArray[np.bool_]


def _runs(member: BoolA, breaker: BoolA, seg_start: I64, key_before: I64
          ) -> tuple[I64, I64, BoolA]:
    """Per row: position of the first member of its run (n: none), members so far in the
    run, and whether the run reaches back to the start of the key's rows (no breaker
    before). ``key_before``: ``seg_start - 1``.
    """
    n = member.shape[0]
    lb = last_true(breaker)
    np.maximum(lb, key_before, out=lb)  # the last breaker of the same key, or before it
    reaches_start = lb < seg_start
    cm0 = np.empty(n + 1, dtype=np.int64)
    cm0[0] = 0
    np.cumsum(member, out=cm0[1:])
    lb += 1
    before = np.take(cm0, lb)  # members before the run
    count = cm0[1:] - before
    # the run's first member: the member after those (member and breaker rows are disjoint)
    first = np.append(np.flatnonzero(member), n)[before]
    return first, count, reaches_start


def confirm(
    sym: I8,
    ts: I64,
    seg_start: I64,
    seg_id: I64,
    carried_pending: BoolA,
    carried_first_ts: I64,
    carried_count: I64,
    carried_closing: BoolA,
    carried_right_ts: I64,
    n_open: I64 | int,
    t_open_ms: I64 | int,
    n_close: int,
    t_close_ms: int,
    hold: I8 | None = None,
) -> tuple[I8, I64, BoolA]:
    """Symbols with confirmations marked (W -> D opens, R -> RC closes), the
    wrong-side run count per row (what a pending state stores) and the released rows
    that confirm the run before them (`_released`: D where the state before is pending).

    ``carried_*`` are per key (``seg_id[i]``: row i's key; used where the run reaches
    back to the key's first row); ``n_open``/``t_open_ms`` per row (per case) or one
    for all; ``hold`` per row (`geofence.outliers.HELD`/`RELEASED`): a held member of
    its run confirms nothing; a released row that is no wrong-side fix may confirm the
    run just before it (held fixes found real: the person walked back in before the
    next one).
    """
    out = sym.copy()
    rel = np.zeros(sym.shape[0], dtype=bool)
    if sym.shape[0] == 0:
        return out, np.zeros(0, np.int64), rel
    w = (sym == SYM_W) | (sym == SYM_D)
    r = sym == SYM_R
    reset = sym == SYM_I
    key_before = seg_start - 1
    first, count, back = _runs(w, r | reset, seg_start, key_before)
    start_ts = np.where(count > 0, np.take(ts, first, mode="clip"), ts)
    # a run that reaches back to its key's first row continues the key's pending run
    k = np.flatnonzero(back)
    k = k[carried_pending[seg_id[k]]]
    sk = seg_id[k]
    count[k] += carried_count[sk]
    start_ts[k] = carried_first_ts[sk]
    opens = w & (count >= n_open) & (ts - start_ts >= t_open_ms)
    if hold is not None:
        opens &= hold != HELD
        rel = _released(w | reset, hold, count, start_ts, ts, seg_start, seg_id,
                        carried_pending, carried_count, carried_first_ts, n_open, t_open_ms)
    out[opens] = SYM_D
    rfirst, rcount, rback = _runs(r, w | (sym == SYM_X) | reset, seg_start, key_before)
    rstart = np.where(rcount > 0, np.take(ts, rfirst, mode="clip"), ts)
    k = np.flatnonzero(rback)
    k = k[carried_closing[seg_id[k]]]
    rcount[k] += 1
    rstart[k] = carried_right_ts[seg_id[k]]
    out[r & (rcount >= n_close) & (ts - rstart >= t_close_ms)] = SYM_RC
    return out, count, rel


def _released(
    skip: BoolA, hold: I8, count: I64, start_ts: I64, ts: I64, seg_start: I64, seg_id: I64,
    carried_pending: BoolA, carried_count: I64, carried_first_ts: I64, n_open: I64 | int,
    t_open_ms: I64 | int,
) -> BoolA:
    """Released rows that are no wrong-side fix (the person walked back in, or the fix
    is uncertain) after a run of wrong-side fixes that holds enough: its fixes were
    held, and found real (the caller opens where the state before is pending)."""
    out = np.zeros(hold.shape[0], dtype=bool)
    k = np.flatnonzero((hold == RELEASED) & ~skip)
    if k.size == 0:
        return out
    inseg = k > seg_start[k]
    km = np.maximum(k - 1, 0)
    sk = seg_id[k]
    n_before = np.where(inseg, count[km], np.where(carried_pending[sk], carried_count[sk], 0))
    first = np.where(inseg, start_ts[km], carried_first_ts[sk])
    n_k = n_open if isinstance(n_open, int) else n_open[k]
    t_k = t_open_ms if isinstance(t_open_ms, int) else t_open_ms[k]
    out[k] = (n_before >= n_k) & (ts[k] - first >= t_k)
    return out
