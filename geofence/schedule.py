"""Weekly zone schedules and approved exceptions, evaluated in the case's timezone.

Schedule JSON: ``{"windows": [{"days": ["mon", ...], "start": "22:00", "end": "06:00"}]}``
(``null`` = always active). A window is active while the *local wall-clock* time
(zoneinfo, so DST-correct) is in ``[start, end)`` on one of its days; an end at or
before the start runs past midnight and belongs to the start day (22:00-06:00 on
Monday covers Monday 22:00 to Tuesday 06:00; start == end is a 24-hour window).
``end`` may be ``"24:00"``. During a DST fold the repeated wall-clock hour counts
twice; wall-clock times skipped by a DST gap never occur.

Exceptions ``[{"from", "to", "reason"}]`` are UTC instants (RFC 3339 strings with
an offset, aware datetimes or epoch milliseconds); the zone is inactive for
``from <= t < to``.

Two evaluation strategies, both exact:

* `schedule_active`: local time per timestamp from UTC offsets computed once per
  distinct UTC hour (per timestamp only inside an hour containing a transition).
* `activity_changes`: the sorted instants in a time range at which the zone flips
  active/inactive (candidates: window bounds converted with both folds, tz
  transitions, exception bounds; each verified). The engine uses these for
  `searchsorted` lookups and to know *when* a zone became inactive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
BoolA = npt.NDArray[np.bool_]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MS_MINUTE = 60_000
MS_HOUR = 3_600_000
MS_DAY = 86_400_000
_DAY_BITS = np.array([1 << i for i in range(7)], dtype=np.int64)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidSchedule(ValueError):
    """A schedule or exception list is malformed; ``field`` names the bad field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Window:
    """One weekly window: ``days`` bitmask (bit 0 = Monday), minutes of day."""

    days: int
    start_min: int
    end_min: int


@dataclass(frozen=True)
class Schedule:
    """A compiled (validated, hashable) weekly schedule."""

    windows: tuple[Window, ...]


Exceptions = tuple[tuple[int, int], ...]


# --------------------------------------------------------------------------- parsing


def _hhmm(v: Any, field: str, allow_24: bool) -> int:
    if not isinstance(v, str) or len(v) != 5 or v[2] != ":":
        raise InvalidSchedule(field, "must be a time 'HH:MM'")
    hh, mm = v[:2], v[3:]
    if not (hh.isdigit() and mm.isdigit()):
        raise InvalidSchedule(field, "must be a time 'HH:MM'")
    h, m = int(hh), int(mm)
    if allow_24 and h == 24 and m == 0:
        return 1440
    if h > 23 or m > 59:
        raise InvalidSchedule(field, "time out of range 00:00-23:59")
    return h * 60 + m


def compile_schedule(schedule: Mapping[str, Any] | Schedule | None) -> Schedule | None:
    """Validate and compile a schedule; ``None`` means always active."""
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    if not isinstance(schedule, Mapping):
        raise InvalidSchedule("schedule", "must be an object or null")
    extra = set(schedule) - {"windows"}
    if extra:
        raise InvalidSchedule(f"schedule.{sorted(extra)[0]}", "unknown field")
    wins = schedule.get("windows")
    if not isinstance(wins, (list, tuple)) or not wins:
        raise InvalidSchedule(
            "schedule.windows", "must be a non-empty array (null schedule = always active)"
        )
    out: list[Window] = []
    for i, w in enumerate(wins):
        f = f"schedule.windows[{i}]"
        if not isinstance(w, Mapping):
            raise InvalidSchedule(f, "must be an object")
        extra = set(w) - {"days", "start", "end"}
        if extra:
            raise InvalidSchedule(f"{f}.{sorted(extra)[0]}", "unknown field")
        days = w.get("days")
        if not isinstance(days, (list, tuple)) or not days:
            raise InvalidSchedule(f"{f}.days", "must be a non-empty array of day names")
        mask = 0
        for j, d in enumerate(days):
            if d not in DAY_NAMES:
                raise InvalidSchedule(f"{f}.days[{j}]", f"must be one of {', '.join(DAY_NAMES)}")
            bit = 1 << DAY_NAMES.index(d)
            if mask & bit:
                raise InvalidSchedule(f"{f}.days[{j}]", "duplicate day")
            mask |= bit
        start = _hhmm(w.get("start"), f"{f}.start", allow_24=False)
        end = _hhmm(w.get("end"), f"{f}.end", allow_24=True)
        out.append(Window(mask, start, end))
    return Schedule(tuple(out))


def validate_schedule(schedule: Mapping[str, Any] | None) -> None:
    """Raise `InvalidSchedule` if ``schedule`` is not a valid schedule (or null)."""
    compile_schedule(schedule)


def to_epoch_ms(v: Any, field: str = "time") -> int:
    """RFC 3339 string (with offset), aware datetime or int epoch ms -> epoch ms."""
    if isinstance(v, bool):
        raise InvalidSchedule(field, "must be an RFC 3339 time")
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v)
        except ValueError:
            raise InvalidSchedule(field, "must be an RFC 3339 time") from None
    if isinstance(v, datetime):
        if v.tzinfo is None or v.utcoffset() is None:
            raise InvalidSchedule(field, "must carry a UTC offset")
        delta = v - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    raise InvalidSchedule(field, "must be an RFC 3339 time")


def compile_exceptions(exceptions: Iterable[Any] | None) -> Exceptions:
    """Validate exceptions; returns sorted, merged ``(from_ms, to_ms)`` intervals."""
    if exceptions is None:
        return ()
    if isinstance(exceptions, (str, bytes, Mapping)):
        raise InvalidSchedule("exceptions", "must be an array")
    iv: list[tuple[int, int]] = []
    for i, e in enumerate(exceptions):
        f = f"exceptions[{i}]"
        if isinstance(e, tuple) and len(e) == 2:
            a, b = to_epoch_ms(e[0], f"{f}.from"), to_epoch_ms(e[1], f"{f}.to")
        elif isinstance(e, Mapping):
            if "from" not in e or "to" not in e:
                raise InvalidSchedule(f, "needs 'from' and 'to'")
            a, b = to_epoch_ms(e["from"], f"{f}.from"), to_epoch_ms(e["to"], f"{f}.to")
            if "reason" in e and e["reason"] is not None and not isinstance(e["reason"], str):
                raise InvalidSchedule(f"{f}.reason", "must be a string")
        else:
            raise InvalidSchedule(f, "must be an object with 'from' and 'to'")
        if b <= a:
            raise InvalidSchedule(f"{f}.to", "must be after 'from'")
        iv.append((a, b))
    iv.sort()
    merged: list[tuple[int, int]] = []
    for a, b in iv:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return tuple(merged)


def validate_exceptions(exceptions: Iterable[Any] | None) -> None:
    """Raise `InvalidSchedule` if the exception list is malformed."""
    compile_exceptions(exceptions)


@lru_cache(maxsize=1024)
def get_tz(name: str) -> ZoneInfo:
    """``ZoneInfo`` for an IANA name; raises `InvalidSchedule` (field ``timezone``)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule("timezone", f"unknown IANA timezone {name!r}") from None


def _zi(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else get_tz(tz)


def _as_ms(ts: npt.ArrayLike) -> I64:
    a = np.asarray(ts)
    if np.issubdtype(a.dtype, np.datetime64):
        return a.astype("datetime64[ms]").astype(np.int64)
    return a.astype(np.int64, copy=False)


# --------------------------------------------------------------------------- evaluation


def _offset_ms(zi: ZoneInfo, t_ms: int) -> int:
    off = (_EPOCH + timedelta(milliseconds=t_ms)).astimezone(zi).utcoffset()
    assert off is not None
    return (off.days * 86_400 + off.seconds) * 1000 + off.microseconds // 1000


def utc_offsets_ms(tz: str | ZoneInfo, ts_ms: npt.ArrayLike) -> I64:
    """UTC offset (ms) of the timezone at each instant; zoneinfo once per distinct hour."""
    zi = _zi(tz)
    ts = _as_ms(ts_ms)
    if ts.size == 0:
        return np.zeros(0, dtype=np.int64)
    hours = ts // MS_HOUR
    uh, inv = np.unique(hours, return_inverse=True)
    off0 = np.fromiter((_offset_ms(zi, int(h) * MS_HOUR) for h in uh), np.int64, uh.size)
    off1 = np.fromiter((_offset_ms(zi, int(h + 1) * MS_HOUR - 1) for h in uh), np.int64, uh.size)
    out = off0[inv]
    mixed = np.flatnonzero((off0 != off1)[inv])
    for k in mixed:
        out[k] = _offset_ms(zi, int(ts[k]))
    return out


def local_active(schedule: Schedule | None, tz: str | ZoneInfo, ts_ms: npt.ArrayLike) -> BoolA:
    """Whether the weekly windows hold at each instant (exceptions not applied)."""
    ts = _as_ms(ts_ms)
    if schedule is None:
        return np.ones(ts.shape, dtype=bool)
    loc = ts + utc_offsets_ms(tz, ts)
    day = loc // MS_DAY
    mod = (loc - day * MS_DAY) // MS_MINUTE
    bit = _DAY_BITS[(day + 3) % 7]  # 1970-01-01 was a Thursday
    pbit = _DAY_BITS[(day + 2) % 7]
    res = np.zeros(ts.shape, dtype=bool)
    for w in schedule.windows:
        on = (bit & w.days) != 0
        if w.end_min > w.start_min:
            res |= on & (mod >= w.start_min) & (mod < w.end_min)
        else:
            prev = (pbit & w.days) != 0
            res |= (on & (mod >= w.start_min)) | (prev & (mod < w.end_min))
    return res


def in_exceptions(exceptions: Exceptions, ts_ms: npt.ArrayLike) -> BoolA:
    """Whether each instant falls in one of the (merged) exception intervals."""
    ts = _as_ms(ts_ms)
    if not exceptions:
        return np.zeros(ts.shape, dtype=bool)
    bounds = np.array(exceptions, dtype=np.int64).ravel()
    return (np.searchsorted(bounds, ts, side="right") & 1).astype(bool)


def schedule_active(
    schedule: Mapping[str, Any] | Schedule | None,
    tz: str | ZoneInfo,
    ts_ms: npt.ArrayLike,
    exceptions: Iterable[Any] | Exceptions | None = None,
) -> BoolA:
    """Whether the zone is active at each instant (epoch ms int64 or datetime64)."""
    spec = compile_schedule(schedule)
    exc = _exc(exceptions)
    act = local_active(spec, tz, ts_ms)
    if exc:
        act &= ~in_exceptions(exc, ts_ms)
    return act


def _exc(exceptions: Iterable[Any] | Exceptions | None) -> Exceptions:
    if exceptions is None:
        return ()
    return compile_exceptions(exceptions)


def _transitions(zi: ZoneInfo, t0: int, t1: int) -> list[int]:
    """Instants in (t0, t1] at which the timezone's UTC offset changes."""
    h0 = t0 // MS_HOUR
    h1 = -(-t1 // MS_HOUR)
    marks = [h * MS_HOUR for h in range(h0, h1 + 1)]
    offs = [_offset_ms(zi, m) for m in marks]
    out: list[int] = []
    for k in range(len(marks) - 1):
        if offs[k] != offs[k + 1]:
            lo, hi = marks[k], marks[k + 1]  # off(lo) != off(hi): find first t with off(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_ms(zi, mid) == offs[k + 1]:
                    hi = mid
                else:
                    lo = mid
            if t0 < hi <= t1:
                out.append(hi)
    return out


def _local_to_utc(zi: ZoneInfo, d: date, minutes: int) -> tuple[int, int]:
    naive = datetime(d.year, d.month, d.day) + timedelta(minutes=minutes)
    a = naive.replace(tzinfo=zi, fold=0)
    b = naive.replace(tzinfo=zi, fold=1)
    return to_epoch_ms(a), to_epoch_ms(b)


def activity_changes(
    schedule: Schedule | None,
    tz: str | ZoneInfo,
    exceptions: Exceptions,
    t0_ms: int,
    t1_ms: int,
) -> tuple[bool, I64]:
    """Status at ``t0`` and the sorted instants in ``(t0, t1]`` where the status flips.

    The status at ``t`` in ``[t0, t1]`` is ``active0 XOR (number of flips <= t is odd)``.
    """
    zi = _zi(tz)
    cands: list[int] = []
    if schedule is not None:
        off0 = _offset_ms(zi, t0_ms)
        first = datetime.fromtimestamp((t0_ms + off0) // 1000, UTC).date() - timedelta(days=2)
        last = datetime.fromtimestamp((t1_ms + _offset_ms(zi, t1_ms)) // 1000, UTC).date()
        last += timedelta(days=1)
        d = first
        while d <= last:
            wd = d.weekday()
            for w in schedule.windows:
                if w.days >> wd & 1:
                    cands.extend(_local_to_utc(zi, d, w.start_min))
                    end_day = d if w.end_min > w.start_min else d + timedelta(days=1)
                    cands.extend(_local_to_utc(zi, end_day, w.end_min))
            d += timedelta(days=1)
        cands.extend(_transitions(zi, t0_ms, t1_ms))
    for a, b in exceptions:
        cands.extend((a, b))
    c = np.unique(np.array(cands, dtype=np.int64))
    c = c[(c > t0_ms) & (c <= t1_ms)]
    probe = np.concatenate(([t0_ms], c, c - 1))
    act = local_active(schedule, zi, probe)
    if exceptions:
        act &= ~in_exceptions(exceptions, probe)
    n = c.size
    flips = act[1 : n + 1] != act[n + 1 :]
    return bool(act[0]), c[flips]


def window_starts(
    schedule: Mapping[str, Any] | Schedule | None,
    tz: str | ZoneInfo,
    since: datetime | int,
    until: datetime | int,
    exceptions: Iterable[Any] | Exceptions | None = None,
) -> list[datetime]:
    """UTC instants in ``[since, until)`` at which the zone becomes active.

    Overlapping or back-to-back windows give one start; the end of an exception
    inside a window is a start; a window start inside an exception is not. A null
    schedule has no window starts (only exception ends).
    """
    spec = compile_schedule(schedule)
    exc = _exc(exceptions)
    t0 = to_epoch_ms(since, "since")
    t1 = to_epoch_ms(until, "until")
    if t1 <= t0:
        return []
    a0, ch = activity_changes(spec, tz, exc, t0 - 1, t1 - 1)
    # After flip k the status is a0 XOR (k even).
    starts = ch[(np.arange(ch.size) % 2 == 0) != a0]
    return [_EPOCH + timedelta(milliseconds=int(t)) for t in starts]
