"""Positions over rows in order: the last row at or before each one where a flag holds.

A running maximum of row positions (``np.maximum.accumulate``) runs a scalar loop of
several nanoseconds per row; where the flag holds on at least half of the rows, the
rows where it does not are fewer, and each run of them takes the row before the run.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
BoolA = npt.NDArray[np.bool_]


def last_true(flags: BoolA) -> I64:
    """Per row, the last row at or before it where ``flags`` holds (-1: none)."""
    n = flags.shape[0]
    off = np.flatnonzero(~flags)
    if 2 * off.size > n:
        out: I64 = np.maximum.accumulate(np.where(flags, np.arange(n, dtype=np.int64), -1))
        return out
    out = np.arange(n, dtype=np.int64)
    if off.size:
        val = off - 1  # a run's first row takes the row before it, the others follow
        inner = np.flatnonzero(off[1:] - 1 == off[:-1]) + 1
        val[inner] = -1
        out[off] = np.maximum.accumulate(val, out=val)
    return out
