"""The search's row handling: case ids found on 8 bytes with a fallback, the fast sort
that must give `fix_order`'s order, and windows of many cases' tracks at once."""

from __future__ import annotations

import uuid

import numpy as np

from probation.investigations import service
from probation.investigations.proximity import range_min, window_min


def _ids(values: list[uuid.UUID]) -> np.ndarray:
    return np.frombuffer(b"".join(u.bytes for u in values), dtype="V16")


def test_case_ids_sharing_their_first_8_bytes_stay_apart() -> None:
    a = uuid.UUID("12345678-1234-4234-8234-000000000001")
    b = uuid.UUID("12345678-1234-4234-8234-000000000002")  # same first 8 bytes
    c = uuid.uuid4()
    rows = [a, b, c, b, a, c, c]
    keys, case = service._case_index(_ids(rows))
    assert [keys[k] for k in case.tolist()] == rows
    assert sorted(keys, key=str) == sorted({a, b, c}, key=str)


def test_case_ids_of_rows() -> None:
    cases = [uuid.uuid4() for _ in range(50)]
    rows = [cases[k] for k in np.random.default_rng(3).integers(0, 50, 2000).tolist()]
    keys, case = service._case_index(_ids(rows))
    assert [keys[k] for k in case.tolist()] == rows and len(keys) == len(set(rows))


def test_the_fast_order_is_fix_order_per_case_with_and_without_ties() -> None:
    rng = np.random.default_rng(4)
    for tie_every in (0, 7):
        n = 5000
        case = rng.integers(0, 40, n)
        ts = rng.integers(0, 86_400_000_000, n)
        if tie_every:  # two devices of a case reporting the same instant
            ts[::tie_every] = ts[1::tie_every][: ts[::tie_every].size]
            case[::tie_every] = case[1::tie_every][: case[::tie_every].size]
        lat, lon, acc = rng.normal(43, 0.1, n), rng.normal(77, 0.1, n), rng.uniform(5, 80, n)
        order = service._case_fix_order(case, ts, lat, lon, acc)
        assert np.array_equal(order, np.lexsort((lon, lat, acc, ts, case)))
        for k in range(40):  # within a case: fix_order
            mine = order[case[order] == k]
            sel = np.flatnonzero(case == k)
            assert np.array_equal(mine, sel[service.fix_order(ts[sel], lat[sel], lon[sel],
                                                              acc[sel])])


def test_windows_of_many_tracks_at_once_are_those_of_each_track() -> None:
    """`range_min` over windows found on (case, time) as complex numbers gives every
    track's own `window_min` (the search's dominance, the reference's per case)."""
    rng = np.random.default_rng(5)
    case = np.sort(rng.integers(0, 30, 4000))
    ts = np.concatenate([np.sort(1.8e9 + rng.integers(0, 86_400_000_000, int((case == k).sum()))
                                 / 1e6) for k in range(30)])
    values = rng.uniform(1, 100, case.size)
    key = case + 1j * ts
    lo = np.searchsorted(key, case + 1j * (ts - 600.0), side="left")
    hi = np.searchsorted(key, case + 1j * (ts + 600.0), side="right")
    together = range_min(values, lo, hi)
    for k in range(30):
        sel = case == k
        assert np.array_equal(together[sel], window_min(ts[sel], values[sel], 600.0))
