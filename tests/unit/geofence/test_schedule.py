"""Schedules: vectorised evaluation against a per-timestamp zoneinfo reference."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence import (
    InvalidSchedule,
    schedule_active,
    validate_exceptions,
    validate_schedule,
    window_starts,
)
from geofence.schedule import activity_changes, compile_exceptions, compile_schedule

from .helpers import DAYS, ref_active

TZS = ["Asia/Almaty", "Europe/London", "America/New_York", "Australia/Lord_Howe", "UTC"]
# Ranges around DST changes (London 2026-03-29 / 2026-10-25, New York 2026-03-08 / 2026-11-01,
# Lord Howe 30-minute shifts 2026-04-05 / 2026-10-04) and a quiet week.
STARTS = [
    datetime(2026, 3, 27, tzinfo=UTC),
    datetime(2026, 10, 23, tzinfo=UTC),
    datetime(2026, 3, 6, tzinfo=UTC),
    datetime(2026, 10, 30, tzinfo=UTC),
    datetime(2026, 4, 3, tzinfo=UTC),
    datetime(2026, 10, 2, tzinfo=UTC),
    datetime(2026, 6, 10, tzinfo=UTC),
]


def ms(d: datetime) -> int:
    return int(d.timestamp() * 1000)


hhmm = st.tuples(st.integers(0, 23), st.sampled_from([0, 15, 30, 45, 59])).map(
    lambda t: f"{t[0]:02d}:{t[1]:02d}"
)
window = st.fixed_dictionaries(
    {
        "days": st.lists(st.sampled_from(DAYS), min_size=1, max_size=7, unique=True),
        "start": hhmm,
        "end": st.one_of(hhmm, st.just("24:00")),
    }
)
schedules = st.one_of(
    st.none(), st.fixed_dictionaries({"windows": st.lists(window, min_size=1, max_size=3)})
)


@settings(max_examples=80, deadline=None)
@given(
    schedule=schedules,
    tz=st.sampled_from(TZS),
    start=st.sampled_from(STARTS),
    seed=st.integers(0, 2**31 - 1),
    n_exc=st.integers(0, 2),
)
def test_schedule_active_matches_per_timestamp_reference(
    schedule: dict[str, Any] | None, tz: str, start: datetime, seed: int, n_exc: int
) -> None:
    rng = np.random.default_rng(seed)
    t0 = ms(start)
    span = 5 * 86_400_000
    ts = np.sort(t0 + rng.integers(0, span, 300))
    # Also exactly at and around minute boundaries.
    ts = np.concatenate((ts, (ts // 60_000) * 60_000, (ts // 60_000) * 60_000 - 1))
    exc = []
    for _ in range(n_exc):
        a = t0 + int(rng.integers(0, span))
        exc.append((a, a + int(rng.integers(60_000, 86_400_000))))
    got = schedule_active(schedule, tz, ts, exc)
    want = np.array([ref_active(schedule, tz, exc, int(t)) for t in ts])
    assert np.array_equal(got, want)
    # The flip-instant representation agrees as well.
    a0, ch = activity_changes(
        compile_schedule(schedule), tz, compile_exceptions(exc), t0 - 1, t0 + span
    )
    via = a0 ^ (np.searchsorted(ch, ts, side="right") % 2 == 1)
    assert np.array_equal(via, want)
    # window_starts == instants where the reference flips to active.
    starts = window_starts(schedule, tz, t0, t0 + span, exc)
    for s in starts:
        t = ms(s)
        assert ref_active(schedule, tz, exc, t) and not ref_active(schedule, tz, exc, t - 1)


def test_window_past_midnight_belongs_to_start_day() -> None:
    sch = {"windows": [{"days": ["mon"], "start": "22:00", "end": "06:00"}]}
    tz = "Asia/Almaty"  # UTC+5
    # Monday 2026-06-15 23:00 local, Tuesday 05:59 local: active; Tuesday 22:30: not.
    t = [
        ms(datetime(2026, 6, 15, 18, 0, tzinfo=UTC)),
        ms(datetime(2026, 6, 16, 0, 59, tzinfo=UTC)),
        ms(datetime(2026, 6, 16, 1, 0, tzinfo=UTC)),
        ms(datetime(2026, 6, 16, 17, 30, tzinfo=UTC)),
        ms(datetime(2026, 6, 14, 18, 0, tzinfo=UTC)),
    ]
    assert schedule_active(sch, tz, t).tolist() == [True, True, False, False, False]


def test_london_dst_local_wall_clock() -> None:
    sch = {"windows": [{"days": DAYS, "start": "22:00", "end": "06:00"}]}
    # 2026-03-29: clocks go 01:00 GMT -> 02:00 BST. 06:00 BST is 05:00 UTC that day.
    assert schedule_active(sch, "Europe/London", [ms(datetime(2026, 3, 29, 4, 59, tzinfo=UTC))])[0]
    assert not schedule_active(sch, "Europe/London", [ms(datetime(2026, 3, 29, 5, 0, tzinfo=UTC))])[
        0
    ]
    # Window starts: 22:00 GMT on the 28th (22:00 UTC), 22:00 BST on the 29th (21:00 UTC).
    st_ = window_starts(
        sch, "Europe/London", datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 3, 30, tzinfo=UTC)
    )
    assert st_ == [datetime(2026, 3, 28, 22, tzinfo=UTC), datetime(2026, 3, 29, 21, tzinfo=UTC)]
    # Autumn: the repeated hour counts twice; 06:00 GMT on 2026-10-25 is 06:00 UTC.
    assert schedule_active(sch, "Europe/London", [ms(datetime(2026, 10, 25, 5, 59, tzinfo=UTC))])[0]
    assert not schedule_active(
        sch, "Europe/London", [ms(datetime(2026, 10, 25, 6, 0, tzinfo=UTC))]
    )[0]


def test_datetime64_input_and_exception_ends_are_starts() -> None:
    sch = {"windows": [{"days": DAYS, "start": "22:00", "end": "06:00"}]}
    t = np.array(["2026-06-15T18:30:00", "2026-06-15T12:00:00"], dtype="datetime64[ms]")
    assert schedule_active(sch, "Asia/Almaty", t).tolist() == [True, False]
    exc = [
        {"from": "2026-06-15T17:00:00Z", "to": "2026-06-15T19:00:00+00:00", "reason": "hospital"}
    ]
    assert schedule_active(sch, "Asia/Almaty", t, exc).tolist() == [False, False]
    starts = window_starts(
        sch,
        "Asia/Almaty",
        datetime(2026, 6, 15, tzinfo=UTC),
        datetime(2026, 6, 16, tzinfo=UTC),
        exc,
    )
    assert starts == [datetime(2026, 6, 15, 19, tzinfo=UTC)]  # when the exception ends
    assert window_starts(None, "Asia/Almaty", 0, 10**12) == []


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ([], "schedule"),
        ({"windows": []}, "schedule.windows"),
        (
            {"windows": [{"days": ["monday"], "start": "22:00", "end": "06:00"}]},
            "schedule.windows[0].days[0]",
        ),
        (
            {"windows": [{"days": ["mon", "mon"], "start": "22:00", "end": "06:00"}]},
            "schedule.windows[0].days[1]",
        ),
        (
            {"windows": [{"days": ["mon"], "start": "25:00", "end": "06:00"}]},
            "schedule.windows[0].start",
        ),
        (
            {"windows": [{"days": ["mon"], "start": "22:00", "end": "6:00"}]},
            "schedule.windows[0].end",
        ),
        ({"windows": [{"days": ["mon"], "start": "22:00"}]}, "schedule.windows[0].end"),
        (
            {"windows": [{"days": ["mon"], "start": "22:00", "end": "06:00", "x": 1}]},
            "schedule.windows[0].x",
        ),
        ({"windows": [], "tz": "UTC"}, "schedule.tz"),
    ],
)
def test_invalid_schedule_names_the_field(schedule: Any, field: str) -> None:
    with pytest.raises(InvalidSchedule) as ei:
        validate_schedule(schedule)
    assert ei.value.field == field


def test_valid_schedules_and_exceptions() -> None:
    validate_schedule(None)
    validate_schedule({"windows": [{"days": ["sun"], "start": "00:00", "end": "24:00"}]})
    validate_exceptions(
        [{"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00+06:00", "reason": "x"}]
    )
    with pytest.raises(InvalidSchedule) as ei:
        validate_exceptions([{"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}])
    assert ei.value.field == "exceptions[0].to"
    with pytest.raises(InvalidSchedule) as ei:
        validate_exceptions([{"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00Z"}])
    assert ei.value.field == "exceptions[0].from"
