"""`geofence.runs.last_true` against the running maximum it replaces, at every density."""

from __future__ import annotations

import numpy as np
import pytest

from geofence.runs import last_true


@pytest.mark.parametrize("p", [0.0, 0.02, 0.3, 0.5, 0.51, 0.9, 1.0])
def test_last_true_is_the_running_maximum_of_flagged_positions(p: float) -> None:
    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 3, 17, 1000):
        for _ in range(20):
            flags = rng.random(n) < p
            want = np.maximum.accumulate(np.where(flags, np.arange(n), -1)) if n else \
                np.zeros(0, dtype=np.int64)
            got = last_true(flags)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, want)


def test_last_true_on_runs_at_both_ends() -> None:
    f = np.array([False, False, True, True, False, False, True, False], dtype=bool)
    assert last_true(f).tolist() == [-1, -1, 2, 3, 3, 3, 6, 6]
    assert last_true(~f).tolist() == [0, 1, 1, 1, 4, 5, 5, 7]
