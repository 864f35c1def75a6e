"""Array kernels of the engine: fast gathers, membership, sorting, the expanded-box test.

numpy's fancy indexing of a 2-D array by row indices, or by (row, column) index
pairs, runs a generic per-element loop that is 5-17x slower than ``np.take`` on
the same data; the engine gathers from (case x slot) tables on every batch.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt

from geofence.registry import CaseZones

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]
BoolA = npt.NDArray[np.bool_]
ObjA = npt.NDArray[np.object_]

# --------------------------------------------------------------------------- gathers


def take_rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[idx]`` for a 2-D or 3-D table ``a`` and 1-D row indices."""
    return np.take(a, idx, axis=0)


def at2(a: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``a[i, j]`` for a C-contiguous 2-D table and equally shaped index arrays."""
    return np.take(a.reshape(-1), i.astype(np.int64, copy=False) * a.shape[1] + j)


def nonzero2(mask: BoolA) -> tuple[I64, I64]:
    """``np.nonzero`` of a C-contiguous 2-D mask (~4x faster: flat indices, then divmod)."""
    k = np.flatnonzero(mask)
    w = mask.shape[1]
    if k.size == 0:
        return k, k.copy()
    if w & (w - 1) == 0:  # power of two: shift and mask
        sh = w.bit_length() - 1
        return k >> sh, k & (w - 1)
    r, c = np.divmod(k, w)
    return r, c


def in_sorted(x: np.ndarray, keys: np.ndarray) -> BoolA:
    """``np.isin(x, keys)`` for sorted ``keys``: one binary search per element, no sort."""
    if keys.size == 0:
        return np.zeros(x.shape, dtype=bool)
    pos = np.searchsorted(keys, x)
    np.minimum(pos, keys.size - 1, out=pos)
    hit: BoolA = np.take(keys, pos) == x
    return hit


def lookup_ids(index: dict[Any, int], ids: np.ndarray) -> I64:
    """Positions of ``ids`` (an object array) in ``index``; -1 where absent."""
    get = index.get
    return np.fromiter(map(get, ids.tolist(), itertools.repeat(-1, ids.size)), np.int64, ids.size)


def obj(values: ObjA, idx: I64) -> ObjA:
    """``values[idx]`` for an object array (typed)."""
    out: ObjA = values[idx]
    return out


def objs(v: list[str]) -> ObjA:
    """A 1-D object array of strings."""
    a = np.empty(len(v), dtype=object)
    a[:] = v
    return a


# --------------------------------------------------------------------------- boxes


def in_expanded_box(zones: CaseZones, lat: F64, lon: F64, f: I64, z: I64) -> BoolA:
    """Fix ``f`` lies in zone ``z``'s expanded bounding box (the shared-zone prefilter)."""
    inb: BoolA = (
        (lat[f] >= zones.exp_lat_lo[z])
        & (lat[f] <= zones.exp_lat_hi[z])
        & (lon[f] >= zones.exp_lon_lo[z])
        & (lon[f] <= zones.exp_lon_hi[z])
    )
    return inb


def paired_by_prefilter(
    zones: CaseZones, lat: F64, lon: F64, weak_fix: BoolA, big: BoolA, f: I64, z: I64
) -> BoolA:
    """(fix, shared zone) pairs the first pass already built: inside the zone's expanded
    box and not weak, or an imprecise fix checked against every shared zone."""
    had: BoolA = (in_expanded_box(zones, lat, lon, f, z) & ~weak_fix[f]) | big[f]
    return had


# --------------------------------------------------------------------------- sorting


def argsort_int(keys: np.ndarray, bound: int) -> I64:
    """Stable argsort of integer keys in ``[0, bound)`` (LSD radix on 16-bit digits)."""
    if bound <= 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    if bound <= 1 << 32:
        k = keys.astype(np.int64)
        o = np.argsort((k & 0xFFFF).astype(np.uint16), kind="stable")
        return o[np.argsort((k[o] >> 16).astype(np.uint16), kind="stable")]
    return np.argsort(keys, kind="stable")


def lexsort2(primary: np.ndarray, p_bound: int, secondary: np.ndarray, s_bound: int) -> I64:
    """Stable order by (primary, secondary) for bounded non-negative integer keys.

    One stable argsort of a combined int64 key when it fits: the rows come in a few
    long sorted runs, which numpy's timsort merges in a fraction of two radix passes.
    """
    if p_bound * s_bound < 1 << 62:
        key = primary.astype(np.int64) * s_bound + secondary
        return np.argsort(key, kind="stable")
    o = argsort_int(secondary, s_bound)
    return o[argsort_int(primary[o], p_bound)]


def order_by(primary: I64, secondary: I64, s_bound: int) -> I64:
    """Order by (primary, secondary) for unique pairs, ``0 <= secondary < s_bound``.

    One argsort of a combined int64 key when it fits (``np.lexsort`` is several times
    slower), else ``np.lexsort``.
    """
    if primary.size == 0:
        return np.zeros(0, np.int64)
    lo = int(primary.min())
    if (int(primary.max()) - lo + 1) * s_bound < 1 << 62:
        return np.argsort((primary - lo) * s_bound + secondary)
    return np.lexsort((secondary, primary))


def run_starts(key: np.ndarray) -> BoolA:
    """True at the first element of each run of equal keys (``key`` non-empty)."""
    first = np.empty(key.size, dtype=bool)
    first[0] = True
    first[1:] = key[1:] != key[:-1]
    return first
