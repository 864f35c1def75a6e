"""The vectorised state-machine scan against a plain loop."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.episodes import (
    C0,
    C1,
    O0,
    O1,
    SYM_D,
    SYM_I,
    SYM_R,
    SYM_RC,
    SYM_U,
    SYM_W,
    SYM_X,
    scan_states,
)


def step(s: int, sym: int) -> int:
    if sym in (SYM_I, SYM_RC):  # reset, or a confirmed closing
        return C0
    if sym == SYM_U:
        return s
    if sym == SYM_D:  # a confirmed opening
        return O0
    if sym == SYM_W:  # pending until confirmed; keeps an open episode open
        return C1 if s < O0 else O0
    if sym == SYM_X:
        return s if s < O0 else O0
    assert sym == SYM_R  # starts or continues a closing; resets a pending run
    return O1 if s >= O0 else C0


@settings(max_examples=200, deadline=None)
@given(
    seqs=st.lists(
        st.tuples(st.sampled_from([C0, C1, O0, O1]), st.lists(st.integers(0, 6), max_size=40)),
        min_size=1,
        max_size=12,
    )
)
def test_scan_matches_loop(seqs: list[tuple[int, list[int]]]) -> None:
    sym: list[int] = []
    seg_start: list[int] = []
    s0: list[int] = []
    want_before: list[int] = []
    want_after: list[int] = []
    for init, syms in seqs:
        start = len(sym)
        s = init
        for x in syms:
            sym.append(x)
            seg_start.append(start)
            s0.append(init)
            want_before.append(s)
            s = step(s, x)
            want_after.append(s)
    before, after = scan_states(
        np.array(sym, dtype=np.int8),
        np.array(seg_start, dtype=np.int64),
        np.array(s0, dtype=np.int8),
    )
    assert before.tolist() == want_before
    assert after.tolist() == want_after
