"""`probation bench realgps`: the monitoring rules on real recorded GPS.

Real receivers are not honest about their error: single fixes hundreds of metres away
with a small `acc` after a gap, short clusters that jump out and back. This benchmark
measures what officers would see on such data, through the real pipeline: a private
mosquitto, the real ingest worker (`probation.runtime.workers.build_ingestion`: geofence engine,
alerts) and a private PostgreSQL with TimescaleDB when installed.

Data: CSV files in the development set's format (`track_id,ts_utc_iso,lat,lon,acc_m,
source_note`, gzip or not), default: the `shared/realgps` folder beside the repository.

Scenarios (per track, on the track resampled to one fix per 30 s like a bracelet: the
first recorded fix of every 30-second slot, never an interpolated one):

- dwell: at least 30 minutes in which >= 90 % of fixes stay within 50 m of their median
  point, trimmed to its first and last fix within 50 m; replayed with up to 20 minutes
  before it (the arrival) and 10 minutes after. One case with three zones:
  a home inclusion zone (150 m circle at the median) active during the dwell only (its
  exceptions cover the rest), an exclusion zone (100 m circle) whose edge lies 150 m from
  the median (on the bearing the arrival and departure stay farthest from), an exclusion
  zone (100 m) around the median: the person arrives once.
- moving: 40-minute windows of the rest of the track with >= 800 m travelled. One case
  with an exclusion zone (100 m circle) centred on the path at the window's middle
  (passed through) and one whose edge lies 150 m from the path (passed by).

Truth: the dwell is the truth for its zones (quiet home and near zones, one visit of
the zone around it). Elsewhere visits come from the recorded track (every fix, not the
resampled one) smoothed by a rolling median of 5 fixes, segment by segment: a visit goes
at least 20 m deep into the zone (shallower is within the assumed accuracy: drift);
visits less than 10 minutes apart are one. Zone placement uses the same path. An alert on a zone without a visit is
a false alarm; the first alert of a visit is a detection, any other a duplicate; delay =
the data time of the fix that raised the alert (`evidence.raised_by`) minus the second
replayed fix inside the zone (visits with fewer than two fixes inside have no delay).

Person-days: the replayed time of all windows (each window is one person); fixes carry
their own accuracy where the data has one, else an assumed one (20 m and 10 m: two
variants, both replayed). Tracks are moved to Almaty (a local metric frame, distances
kept) and to the recent past (timestamps relative to the window kept).
"""

from __future__ import annotations

import csv
import gzip
import itertools
import logging
import math
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

M_PER_DEG = 111_320.0
ORIGIN = (43.238, 76.945)  # Almaty: where every scenario is moved
FIX_INTERVAL_S = 30
DWELL_MIN_S = 30 * 60
DWELL_RADIUS_M = 50.0
DWELL_SHARE = 0.9
LEAD_IN_S = 20 * 60
LEAD_OUT_S = 10 * 60
MOVING_WINDOW_S = 40 * 60
MOVING_MIN_PATH_M = 800.0
HOME_RADIUS_M = 150.0
ZONE_RADIUS_M = 100.0
NEAR_EDGE_M = 150.0
SMOOTH_FIXES = 5
VISIT_MERGE_S = 10 * 60
#: a visit goes this deep into the zone (the larger assumed accuracy: shallower is drift)
VISIT_DEPTH_M = 20.0
MATCH_BEFORE_S = 5 * 60
MATCH_AFTER_S = 10 * 60
FIXES_PER_MESSAGE = 4
MAX_GAP_S = 30 * 60  # a longer gap ends a recording: tracks are split there
ZONE_TYPES = ("exclusion_zone_entered", "exclusion_zone_approach", "inclusion_zone_left")
ASSUMED_ACC_M = (20.0, 10.0)


# --------------------------------------------------------------------------- data


@dataclass(eq=False)
class Track:
    source: str
    track_id: str
    ts: I64  # epoch ms, sorted
    lat: F64
    lon: F64
    acc: F64  # NaN: the data has none

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, idx: Any) -> Track:
        return Track(self.source, self.track_id, self.ts[idx], self.lat[idx], self.lon[idx],
                     self.acc[idx])


def default_data_dir() -> Path:
    """``$PROBATION_REALGPS_DATA``, else the `shared/realgps` folder beside the repository
    (or beside a worktree's main checkout, or beside the local repository a clone was
    made from: ``git clone /work/main /tmp/x`` finds ``/work/shared/realgps``)."""
    env = os.environ.get("PROBATION_REALGPS_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    candidates = [Path.cwd() / ".." / "shared" / "realgps", here.parent / "shared" / "realgps"]
    git = here / ".git"
    if git.is_file():  # a git worktree: .git names the main repository's git dir
        text = git.read_text().strip()
        if text.startswith("gitdir:"):
            main = Path(text.split(":", 1)[1].strip()).resolve().parent.parent.parent
            candidates.append(main.parent / "shared" / "realgps")
    origin = _local_origin(git / "config") if git.is_dir() else None
    if origin is not None:
        candidates.append(origin.parent / "shared" / "realgps")
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return candidates[0]


def _local_origin(config: Path) -> Path | None:
    """The directory a clone's ``origin`` remote names, when it is a local one."""
    try:
        text = config.read_text()
    except OSError:
        return None
    m = re.search(r'\[remote "origin"\][^\[]*?^\s*url\s*=\s*(.+?)\s*$', text, re.M | re.S)
    if m is None:
        return None
    url = m.group(1).removeprefix("file://")
    p = Path(url)
    return p.resolve() if p.is_absolute() and p.is_dir() else None


def _parse_ts(v: str) -> int:
    return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)


def load_csv(path: Path) -> list[Track]:
    """Tracks of one file, each sorted by time (duplicate timestamps dropped)."""
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    rows: dict[str, list[tuple[int, float, float, float]]] = {}
    with opener(path, "rt", newline="") as f:
        for r in csv.DictReader(f):
            acc = r.get("acc_m") or ""
            rows.setdefault(r["track_id"], []).append(
                (_parse_ts(r["ts_utc_iso"]), float(r["lat"]), float(r["lon"]),
                 float(acc) if acc.strip() else math.nan))
    source = path.name.split(".")[0]
    out = []
    for tid, rs in rows.items():
        a = np.array(rs, dtype=np.float64)
        ts = a[:, 0].astype(np.int64)
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        keep = np.ones(ts.shape[0], dtype=bool)
        keep[1:] = np.diff(ts) > 0
        idx = order[keep]
        out.append(Track(source, tid, ts[keep], a[idx, 1], a[idx, 2], a[idx, 3]))
    return out


def resample(t: Track, interval_s: int = FIX_INTERVAL_S) -> Track:
    """Like a bracelet with a fix every `interval_s`: the first recorded fix at least
    `interval_s` after the previous one taken (a gap stays a gap; never interpolated)."""
    if not len(t):
        return t
    step = interval_s * 1000
    ts = t.ts
    keep = [0]
    nxt = int(ts[0]) + step
    k = 0
    while True:
        k = int(np.searchsorted(ts, nxt, side="left"))
        if k >= ts.shape[0]:
            break
        keep.append(k)
        nxt = int(ts[k]) + step
    return t.take(np.array(keep, dtype=np.int64))


def local_xy(lat: F64, lon: F64, lat0: float, lon0: float) -> tuple[F64, F64]:
    """Metres east and north of (lat0, lon0) (equirectangular; fine within tens of km)."""
    return ((lon - lon0) * M_PER_DEG * math.cos(math.radians(lat0)), (lat - lat0) * M_PER_DEG)


def rolling_median(v: F64, k: int = SMOOTH_FIXES) -> F64:
    if v.shape[0] < k:
        return np.full_like(v, np.median(v)) if v.shape[0] else v
    h = k // 2
    padded = np.concatenate([np.full(h, v[0]), v, np.full(h, v[-1])])
    win = np.lib.stride_tricks.sliding_window_view(padded, k)
    return np.median(win, axis=1)


# --------------------------------------------------------------------------- dwells


def _dwell_ok(x: F64, y: F64) -> tuple[bool, float, float]:
    mx, my = float(np.median(x)), float(np.median(y))
    share = float(np.mean(np.hypot(x - mx, y - my) <= DWELL_RADIUS_M))
    return share >= DWELL_SHARE, mx, my


def find_dwells(t: Track) -> list[tuple[int, int]]:
    """Maximal dwells of a resampled track as inclusive index ranges (trimmed)."""
    n = len(t)
    if n < 2:
        return []
    x, y = local_xy(t.lat, t.lon, float(t.lat[0]), float(t.lon[0]))
    out: list[tuple[int, int]] = []
    i = 0
    while i < n:
        j = int(np.searchsorted(t.ts, t.ts[i] + DWELL_MIN_S * 1000))
        if j >= n:
            break
        ok, _, _ = _dwell_ok(x[i:j + 1], y[i:j + 1])
        if not ok:
            i += 1
            continue
        # extend while the window still qualifies (allow a few failing steps: the 10 %)
        best = j
        k = j + 1
        misses = 0
        while k < n and misses < 20:
            if _dwell_ok(x[i:k + 1], y[i:k + 1])[0]:
                best, misses = k, 0
            else:
                misses += 1
            k += 1
        _, mx, my = _dwell_ok(x[i:best + 1], y[i:best + 1])
        inside = np.flatnonzero(np.hypot(x[i:best + 1] - mx, y[i:best + 1] - my)
                                <= DWELL_RADIUS_M) + i
        a, b = int(inside[0]), int(inside[-1])
        if t.ts[b] - t.ts[a] >= DWELL_MIN_S * 1000:
            out.append((a, b))
        i = best + 1
    return out


# --------------------------------------------------------------------------- scenarios


@dataclass
class ZoneSpec:
    role: str  # home | near | around | through | passby
    kind: str  # inclusion | exclusion
    x: float  # metres in the scenario's frame
    y: float
    radius_m: float
    active_ms: tuple[int, int] | None = None  # (from, to) in the data's time; None: always
    visits: list[tuple[int, int]] = field(default_factory=list)  # data time ms
    second_inside_ms: list[int | None] = field(default_factory=list)  # per visit


@dataclass
class Scenario:
    source: str
    track_id: str
    kind: str  # dwell | moving
    fixes: Track  # the replayed fixes (resampled)
    lat0: float  # the frame's origin in the data
    lon0: float
    zones: list[ZoneSpec]

    @property
    def duration_s(self) -> float:
        return float(self.fixes.ts[-1] - self.fixes.ts[0]) / 1000 if len(self.fixes) else 0.0


def _segment_dist(px: F64, py: F64, cx: float, cy: float) -> F64:
    """Distance from (cx, cy) to each segment p[k] -> p[k+1]."""
    ax, ay, bx, by = px[:-1], py[:-1], px[1:], py[1:]
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy
    u = np.where(ll > 0, ((cx - ax) * dx + (cy - ay) * dy) / np.where(ll > 0, ll, 1), 0.0)
    u = np.clip(u, 0.0, 1.0)
    return np.hypot(ax + u * dx - cx, ay + u * dy - cy)


def visits_of(ts: I64, sx: F64, sy: F64, z: ZoneSpec) -> list[tuple[int, int]]:
    """Visits of the smoothed path to a circle: runs of segments that touch it, merged when
    less than `VISIT_MERGE_S` apart."""
    if ts.shape[0] < 2:
        return []
    touch = _segment_dist(sx, sy, z.x, z.y) < z.radius_m - VISIT_DEPTH_M
    runs: list[tuple[int, int]] = []
    k = 0
    n = touch.shape[0]
    while k < n:
        if not touch[k]:
            k += 1
            continue
        s = k
        while k < n and touch[k]:
            k += 1
        a, b = int(ts[s]), int(ts[k])
        if runs and a - runs[-1][1] < VISIT_MERGE_S * 1000:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    return runs


def _inside_fixes(ts: I64, x: F64, y: F64, z: ZoneSpec, visit: tuple[int, int]) -> I64:
    sel = (ts >= visit[0] - FIX_INTERVAL_S * 1000) & (ts <= visit[1] + FIX_INTERVAL_S * 1000)
    return ts[np.flatnonzero(sel & (np.hypot(x - z.x, y - z.y) < z.radius_m))]


def _second_inside(ts: I64, x: F64, y: F64, z: ZoneSpec, visit: tuple[int, int]) -> int | None:
    inside = _inside_fixes(ts, x, y, z, visit)
    return int(inside[1]) if inside.shape[0] >= 2 else None


def _bearing_away(x: F64, y: F64, mx: float, my: float, dist: float, radius: float
                  ) -> tuple[float, float, float]:
    """The centre at `dist` from (mx, my) whose circle the path (x, y) stays farthest from."""
    best = (-math.inf, 0.0, 0.0)
    for k in range(16):
        a = 2 * math.pi * k / 16
        cx, cy = mx + dist * math.cos(a), my + dist * math.sin(a)
        gap = float(np.min(np.hypot(x - cx, y - cy))) - radius if x.shape[0] else math.inf
        if gap > best[0]:
            best = (gap, cx, cy)
    return best


def truth_path(raw: Track, t0: int, t1: int, lat0: float, lon0: float
               ) -> tuple[I64, F64, F64]:
    """The recorded (not resampled) track between t0 and t1, smoothed by a rolling median
    of `SMOOTH_FIXES` fixes: where the person went, for visits and zone placement."""
    a = int(np.searchsorted(raw.ts, t0))
    b = int(np.searchsorted(raw.ts, t1, side="right"))
    x, y = local_xy(raw.lat[a:b], raw.lon[a:b], lat0, lon0)
    return raw.ts[a:b], rolling_median(x), rolling_median(y)


def dwell_scenarios(t: Track, dwells: Sequence[tuple[int, int]], raw: Track
                    ) -> list[Scenario]:
    out = []
    for a, b in dwells:
        lo = int(np.searchsorted(t.ts, t.ts[a] - LEAD_IN_S * 1000))
        hi = int(np.searchsorted(t.ts, t.ts[b] + LEAD_OUT_S * 1000, side="right"))
        # never into another dwell's stay
        w = t.take(slice(lo, hi))
        lat0, lon0 = float(np.median(t.lat[a:b + 1])), float(np.median(t.lon[a:b + 1]))
        x, y = local_xy(w.lat, w.lon, lat0, lon0)
        tts, sx, sy = truth_path(raw, int(w.ts[0]), int(w.ts[-1]), lat0, lon0)
        outside = (tts < t.ts[a]) | (tts > t.ts[b])
        _, nx, ny = _bearing_away(sx[outside], sy[outside], 0.0, 0.0,
                                  NEAR_EDGE_M + ZONE_RADIUS_M, ZONE_RADIUS_M)
        home = ZoneSpec("home", "inclusion", 0.0, 0.0, HOME_RADIUS_M,
                        active_ms=(int(t.ts[a]), int(t.ts[b])))
        near = ZoneSpec("near", "exclusion", nx, ny, ZONE_RADIUS_M)
        around = ZoneSpec("around", "exclusion", 0.0, 0.0, ZONE_RADIUS_M)
        # the arrival: the visit of the smoothed path that holds the dwell
        vs = visits_of(tts, sx, sy, around) or [(int(t.ts[a]), int(t.ts[b]))]
        around.visits = vs
        around.second_inside_ms = [_second_inside(w.ts, x, y, around, v) for v in vs]
        # the near zone is on the side the path keeps away from; a smoothed visit to it is
        # still a visit (then it is no negative)
        near.visits = visits_of(tts, sx, sy, near)
        near.second_inside_ms = [_second_inside(w.ts, x, y, near, v) for v in near.visits]
        out.append(Scenario(t.source, t.track_id, "dwell", w, lat0, lon0, [home, near, around]))
    return out


def moving_scenarios(t: Track, taken: Sequence[tuple[int, int]], raw: Track
                     ) -> list[Scenario]:
    """40-minute windows outside the dwell windows with enough travel."""
    out: list[Scenario] = []
    if len(t) < 10:
        return out
    free = np.ones(len(t), dtype=bool)
    for lo_ms, hi_ms in taken:
        free &= ~((t.ts >= lo_ms) & (t.ts <= hi_ms))
    i = 0
    n = len(t)
    while i < n:
        if not free[i]:
            i += 1
            continue
        j = int(np.searchsorted(t.ts, t.ts[i] + MOVING_WINDOW_S * 1000))
        j = min(j, n)
        if not free[i:j].all():
            i = i + int(np.argmin(free[i:j]))  # jump to the taken fix
            continue
        if j - i < 20 or t.ts[j - 1] - t.ts[i] < MOVING_WINDOW_S * 1000 * 0.75:
            i = j if j > i else i + 1
            continue
        sc = _moving_window(t.take(slice(i, j)), raw)
        if sc is not None:
            out.append(sc)
        i = j
    return out


def _moving_window(w: Track, raw: Track) -> Scenario | None:
    lat0, lon0 = float(w.lat[0]), float(w.lon[0])
    x, y = local_xy(w.lat, w.lon, lat0, lon0)
    sx, sy = rolling_median(x), rolling_median(y)
    path = float(np.sum(np.hypot(np.diff(sx), np.diff(sy))))
    if path < MOVING_MIN_PATH_M:
        return None
    tts, tx, ty = truth_path(raw, int(w.ts[0]), int(w.ts[-1]), lat0, lon0)
    if tts.shape[0] < 2:
        return None
    n = len(w)
    mid = min(int(np.searchsorted(tts, w.ts[n // 2])), tts.shape[0] - 1)
    through = ZoneSpec("through", "exclusion", float(tx[mid]), float(ty[mid]), ZONE_RADIUS_M)
    through.visits = visits_of(tts, tx, ty, through)
    through.second_inside_ms = [_second_inside(w.ts, x, y, through, v) for v in through.visits]
    zones = [through]
    # passed by: a point a quarter in, 250 m to the side of the local direction
    for k in (n // 4, 3 * n // 4, n // 8, 7 * n // 8):
        k0, k1 = max(0, k - 2), min(n - 1, k + 2)
        dx, dy = float(sx[k1] - sx[k0]), float(sy[k1] - sy[k0])
        norm = math.hypot(dx, dy)
        if norm < 20:
            continue
        placed = False
        for side in (1.0, -1.0):
            cx = float(sx[k]) - side * dy / norm * (NEAR_EDGE_M + ZONE_RADIUS_M)
            cy = float(sy[k]) + side * dx / norm * (NEAR_EDGE_M + ZONE_RADIUS_M)
            gap = float(np.min(_segment_dist(tx, ty, cx, cy))) - ZONE_RADIUS_M
            if gap >= NEAR_EDGE_M - 10:
                zones.append(ZoneSpec("passby", "exclusion", cx, cy, ZONE_RADIUS_M))
                placed = True
                break
        if placed:
            break
    return Scenario(w.source, w.track_id, "moving", w, lat0, lon0, zones)


def split_at_gaps(t: Track, gap_s: float = MAX_GAP_S) -> list[Track]:
    """Pieces of a track between gaps longer than `gap_s` (a recording stopped)."""
    cut = np.flatnonzero(np.diff(t.ts) > gap_s * 1000) + 1
    bounds = [0, *cut.tolist(), len(t)]
    return [t.take(slice(a, b)) for a, b in itertools.pairwise(bounds) if b > a]


def build_scenarios(tracks: Iterable[Track]) -> list[Scenario]:
    out: list[Scenario] = []
    pieces = [(p, raw) for raw in tracks for p in split_at_gaps(resample(raw))]
    for t, raw in pieces:
        if len(t) < 2:
            continue
        dwells = find_dwells(t)
        ds = dwell_scenarios(t, dwells, raw)
        out += ds
        taken = [(int(s.fixes.ts[0]), int(s.fixes.ts[-1])) for s in ds]
        out += moving_scenarios(t, taken, raw)
    return out


# --------------------------------------------------------------------------- replay


@dataclass
class Replica:
    """One scenario at one accuracy assumption, as registered and published."""

    scenario: Scenario
    assumed_acc_m: float
    serial: str
    case_id: uuid.UUID
    device_id: uuid.UUID
    zone_ids: list[uuid.UUID]
    shift_ms: int  # data time + shift = replayed time
    lat: F64  # replayed coordinates (in Almaty)
    lon: F64
    acc: F64


def _to_almaty(sc: Scenario, x: F64, y: F64) -> tuple[F64, F64]:
    lat0, lon0 = ORIGIN
    return lat0 + y / M_PER_DEG, lon0 + x / (M_PER_DEG * math.cos(math.radians(lat0)))


def make_replicas(scenarios: Sequence[Scenario], now_ms: int, tag: str) -> list[Replica]:
    out = []
    k = 0
    for assumed in ASSUMED_ACC_M:
        for sc in scenarios:
            f = sc.fixes
            x, y = local_xy(f.lat, f.lon, sc.lat0, sc.lon0)
            lat, lon = _to_almaty(sc, x, y)
            acc = np.where(np.isnan(f.acc), assumed, f.acc)
            # end 30 minutes ago, on a whole second
            shift = (now_ms - 30 * 60_000 - int(f.ts[-1])) // 1000 * 1000
            out.append(Replica(sc, assumed, f"RG{tag}-{k:05d}", uuid.uuid4(), uuid.uuid4(),
                               [uuid.uuid4() for _ in sc.zones], shift, lat, lon, acc))
            k += 1
    return out


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def register(url: str, replicas: Sequence[Replica]) -> None:
    """Officer, subjects, cases, bracelets, assignments (from before the data), zones."""
    import psycopg
    from psycopg.types.json import Jsonb

    from db.engine import libpq_url

    officer = uuid.uuid4()
    rows: dict[str, list[tuple[Any, ...]]] = {k: [] for k in (
        "subjects", "cases", "devices", "device_assignments", "zones", "case_zones")}
    for n, r in enumerate(replicas):
        sid = uuid.uuid4()
        first = int(r.scenario.fixes.ts[0]) + r.shift_ms
        rows["subjects"].append((sid, f"{n:012d}", f"Real GPS {n}", "1990-01-01"))
        rows["cases"].append((r.case_id, sid, officer, f"RG-{r.serial}", "2020-01-01",
                              "2099-12-31", "medium"))
        rows["devices"].append((r.device_id, r.serial, "bracelet"))
        rows["device_assignments"].append(
            (uuid.uuid4(), r.device_id, r.case_id,
             datetime.fromtimestamp(first / 1000 - 86_400, UTC)))
        for z, zid in zip(r.scenario.zones, r.zone_ids, strict=True):
            zlat, zlon = _to_almaty(r.scenario, np.array([z.x]), np.array([z.y]))
            circle = {"center": [round(float(zlon[0]), 7), round(float(zlat[0]), 7)],
                      "radius_m": z.radius_m}
            exc: list[dict[str, str]] = []
            if z.active_ms is not None:
                a, b = z.active_ms[0] + r.shift_ms, z.active_ms[1] + r.shift_ms
                exc = [{"from": "2000-01-01T00:00:00+00:00", "to": _iso(a), "reason": "bench"},
                       {"from": _iso(b), "to": "2100-01-01T00:00:00+00:00", "reason": "bench"}]
            rows["zones"].append((zid, f"{z.role} {r.serial}", z.kind, None, Jsonb(circle),
                                  None, Jsonb(exc)))
            rows["case_zones"].append((r.case_id, zid))
    cols = {
        "subjects": "id, iin, full_name, birth_date",
        "cases": "id, subject_id, officer_id, court_order_ref, starts_on, ends_on, risk_level",
        "devices": "id, serial, kind",
        "device_assignments": "id, device_id, case_id, assigned_at",
        "zones": "id, name, kind, geometry, circle, schedule, exceptions",
        "case_zones": "case_id, zone_id",
    }
    with psycopg.connect(libpq_url(url)) as c:
        c.execute("INSERT INTO users (id, username, password_hash, role) VALUES"
                  " (%s, %s, 'x', 'officer')", (officer, f"rg-{officer.hex[:8]}"))
        for table, cs in cols.items():
            with c.cursor() as cur, cur.copy(f"COPY {table} ({cs}) FROM STDIN") as cp:
                for row in rows[table]:
                    cp.write_row(row)


def messages(prefix: str, replicas: Sequence[Replica]) -> list[tuple[int, str, bytes]]:
    """Uploads of `FIXES_PER_MESSAGE` fixes, all devices interleaved in replayed time."""
    import orjson

    out: list[tuple[int, str, bytes]] = []
    for r in replicas:
        f = r.scenario.fixes
        ts = f.ts + r.shift_ms
        topic = f"{prefix}/devices/{r.serial}/fixes"
        items = [{"seq": k + 1, "ts": int(ts[k]), "lat": round(float(r.lat[k]), 7),
                  "lon": round(float(r.lon[k]), 7), "acc": round(float(r.acc[k]), 1)}
                 for k in range(len(f))]
        for s in range(0, len(items), FIXES_PER_MESSAGE):
            chunk = items[s:s + FIXES_PER_MESSAGE]
            out.append((int(chunk[-1]["ts"]), topic, orjson.dumps({"fixes": chunk})))  # type: ignore[call-overload]
    out.sort(key=lambda m: m[0])
    return out


# --------------------------------------------------------------------------- scoring


@dataclass
class AlertRow:
    zone_id: uuid.UUID
    type: str
    started_ms: int
    raised_ms: int | None
    inferred: bool


def score_replica(r: Replica, alerts: Sequence[AlertRow]) -> dict[str, Any]:
    """False alarms, duplicates, detections and delays of one replica (data time)."""
    out: dict[str, Any] = {"false_alarms": 0, "duplicates": 0, "visits": 0, "detected": 0,
                           "visits_2in": 0, "detected_2in": 0, "delays_s": [],
                           "no_second_fix": 0, "events": []}
    by_zone: dict[uuid.UUID, list[AlertRow]] = {}
    for a in alerts:
        by_zone.setdefault(a.zone_id, []).append(a)
    for z, zid in zip(r.scenario.zones, r.zone_ids, strict=True):
        zal = sorted(by_zone.get(zid, []), key=lambda a: a.started_ms)
        visits = [(v0 + r.shift_ms, v1 + r.shift_ms) for v0, v1 in z.visits]
        seconds = [None if s is None else s + r.shift_ms for s in z.second_inside_ms]
        if z.role in ("around", "through"):
            out["visits"] += len(visits)
            out["visits_2in"] += sum(sec is not None for sec in seconds)
        matched: dict[int, int] = {}
        for a in zal:
            hit = next((k for k, (v0, v1) in enumerate(visits)
                        if v0 - MATCH_BEFORE_S * 1000 <= a.started_ms <= v1 + MATCH_AFTER_S * 1000),
                       None)
            verdict = "false_alarm"
            if hit is not None and z.role in ("around", "through", "near"):
                if hit in matched:
                    verdict = "duplicate"
                else:
                    matched[hit] = 1
                    verdict = "detected"
                    if z.role != "near":
                        out["detected"] += 1
                        sec = seconds[hit]
                        if sec is None:
                            out["no_second_fix"] += 1
                        else:
                            out["detected_2in"] += 1
                            if a.raised_ms is not None:
                                out["delays_s"].append((a.raised_ms - sec) / 1000)
            if verdict == "false_alarm":
                out["false_alarms"] += 1
            elif verdict == "duplicate":
                out["duplicates"] += 1
            out["events"].append({
                "verdict": verdict, "zone": z.role, "type": a.type, "inferred": a.inferred,
                "track": r.scenario.track_id, "kind": r.scenario.kind,
                "at_s": round((a.started_ms - r.shift_ms - int(r.scenario.fixes.ts[0])) / 1000),
            })
        if z.role in ("around", "through"):
            for k in range(len(visits)):
                if k not in matched:
                    out["events"].append({"verdict": "missed", "zone": z.role,
                                          "track": r.scenario.track_id,
                                          "kind": r.scenario.kind,
                                          "two_fixes_inside": seconds[k] is not None})
    return out


def _pct(v: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(v, q)), 1) if v else None


def summarise(replicas: Sequence[Replica], alerts: dict[uuid.UUID, list[AlertRow]]
              ) -> dict[str, Any]:
    """Per (source, assumed accuracy): the figures of the issue."""
    groups: dict[tuple[str, float], list[Replica]] = {}
    for r in replicas:
        groups.setdefault((r.scenario.source, r.assumed_acc_m), []).append(r)
    out: dict[str, Any] = {}
    for (source, assumed), rs in sorted(groups.items()):
        tot: dict[str, Any] = {"false_alarms": 0, "duplicates": 0, "visits": 0, "detected": 0,
                               "visits_2in": 0, "detected_2in": 0, "delays_s": [],
                               "no_second_fix": 0, "events": []}
        for r in rs:
            s = score_replica(r, alerts.get(r.case_id, []))
            for k in ("false_alarms", "duplicates", "visits", "detected", "no_second_fix",
                      "visits_2in", "detected_2in"):
                tot[k] += s[k]
            tot["delays_s"] += s["delays_s"]
            tot["events"] += [e for e in s["events"] if e["verdict"] != "detected"]
        days = sum(r.scenario.duration_s for r in rs) / 86_400
        own = [r.scenario.fixes.acc for r in rs]
        n_fix = sum(a.shape[0] for a in own)
        n_own = sum(int(np.count_nonzero(~np.isnan(a))) for a in own)
        out.setdefault(source, {})[f"acc_{int(assumed)}m_where_none"] = {
            "scenarios": {"dwell": sum(r.scenario.kind == "dwell" for r in rs),
                          "moving": sum(r.scenario.kind == "moving" for r in rs)},
            "fixes": n_fix,
            "fixes_with_own_acc": n_own,
            "person_days": round(days, 3),
            "false_alarms": tot["false_alarms"],
            "false_alarms_per_person_day": round(tot["false_alarms"] / days, 3) if days else None,
            "duplicate_alerts": tot["duplicates"],
            "visits": tot["visits"],
            "detected": tot["detected"],
            "recall": round(tot["detected"] / tot["visits"], 4) if tot["visits"] else None,
            "visits_with_two_fixes_inside": tot["visits_2in"],
            "detected_with_two_fixes_inside": tot["detected_2in"],
            "recall_two_fixes_inside": (round(tot["detected_2in"] / tot["visits_2in"], 4)
                                        if tot["visits_2in"] else None),
            "delay_p50_s": _pct(tot["delays_s"], 50),
            "delay_p95_s": _pct(tot["delays_s"], 95),
            "delay_target_s": 2 * FIX_INTERVAL_S,
            "events": tot["events"],
        }
    return out


def fetch_alerts(url: str, replicas: Sequence[Replica]) -> dict[uuid.UUID, list[AlertRow]]:
    import psycopg

    from db.engine import libpq_url

    out: dict[uuid.UUID, list[AlertRow]] = {}
    with psycopg.connect(libpq_url(url)) as c:
        for case_id, zone_id, typ, started, evidence, inferred in c.execute(
            "SELECT case_id, zone_id, type, started_at, evidence, inferred FROM alerts"
            " WHERE type = ANY(%s) AND case_id = ANY(%s)",
            (list(ZONE_TYPES), [r.case_id for r in replicas]),
        ):
            raised = (evidence or {}).get("raised_by") or {}
            raised_ms = (int(datetime.fromisoformat(raised["ts"]).timestamp() * 1000)
                         if "ts" in raised else None)
            out.setdefault(case_id, []).append(AlertRow(
                zone_id, typ, int(started.timestamp() * 1000), raised_ms, bool(inferred)))
    return out


# --------------------------------------------------------------------------- offline


def replay_offline(scenarios: Sequence[Scenario], assumed_acc_m: float = 20.0,
                   per_message: int = FIXES_PER_MESSAGE) -> dict[str, Any]:
    """The same scenarios and scoring through the engine alone, in this process (no
    broker, no database): for tests on the recordings the repository carries."""
    from geofence import CaseZones, EngineState, FixBatch, ZoneEntry, compile_zone
    from geofence.engine import advance_ex

    out: list[Replica] = []
    alerts: dict[uuid.UUID, list[AlertRow]] = {}
    for sc in scenarios:
        f = sc.fixes
        x, y = local_xy(f.lat, f.lon, sc.lat0, sc.lon0)
        lat, lon = _to_almaty(sc, x, y)
        r = Replica(sc, assumed_acc_m, "offline", uuid.uuid4(), uuid.uuid4(),
                    [uuid.uuid4() for _ in sc.zones], 0, lat, lon,
                    np.where(np.isnan(f.acc), assumed_acc_m, f.acc))
        entries = {}
        for z, zid in zip(sc.zones, r.zone_ids, strict=True):
            zlat, zlon = _to_almaty(sc, np.array([z.x]), np.array([z.y]))
            exc = [] if z.active_ms is None else [
                {"from": 0, "to": z.active_ms[0]}, {"from": z.active_ms[1], "to": 2**42}]
            entries[str(zid)] = ZoneEntry.make(compile_zone(
                zone_id=str(zid), kind=z.kind,
                circle={"center": [float(zlon[0]), float(zlat[0])], "radius_m": z.radius_m}),
                None, exc)
        reg = CaseZones({str(r.case_id): "Asia/Almaty"}, entries,
                        {z: [str(r.case_id)] for z in entries})
        state = EngineState.empty()
        for a in range(0, len(f), per_message):
            k = slice(a, a + per_message)
            n = f.ts[k].shape[0]
            batch = FixBatch.from_columns(reg, [str(r.case_id)] * n, ["d"] * n, f.ts[k],
                                          r.lat[k], r.lon[k], r.acc[k])
            state, trans, _ = advance_ex(state, batch, reg)
            for t in trans:
                if t.kind == "open":
                    alerts.setdefault(r.case_id, []).append(AlertRow(
                        uuid.UUID(t.zone_id), t.alert_type, t.started_at,
                        t.last_fix.ts, t.inferred))
        out.append(r)
    return summarise(out, alerts)


# --------------------------------------------------------------------------- the run


@dataclass
class RealGpsConfig:
    data: Path | None = None
    files: tuple[str, ...] = ()  # file names to use (default: every *.csv and *.csv.gz)
    work_dir: Path | None = None
    durable: bool = False


def _worker_child(conn: Any, kw: dict[str, Any]) -> None:
    """The real ingest worker (`build_ingestion`) in its own process."""
    logging.basicConfig(level=logging.WARNING)
    from probation.runtime.workers import build_ingestion
    from probation.settings import Settings

    settings = Settings(
        database_url=kw["database_url"], mqtt_url=kw["mqtt_url"], mqtt_prefix=kw["prefix"],
        mqtt_client_id=kw["client_id"], data_dir=Path(kw["data_dir"]),
        jwt_secret="bench-" + "x" * 40,
    )
    ing = build_ingestion(settings, database_url=kw["database_url"], mqtt_url=kw["mqtt_url"],
                          log_interval_s=3600)
    ing.start()
    conn.send(ing.worker.wait_ready(60))
    conn.recv()  # stop
    ing.stop()
    conn.send(True)


def _count(url: str, sql: str) -> int:
    import psycopg

    from db.engine import libpq_url

    with psycopg.connect(libpq_url(url)) as c:
        row = c.execute(sql).fetchone()
        return int(row[0]) if row else 0


def load_dev_set(data: Path, files: Sequence[str] = ()) -> dict[str, list[Track]]:
    paths = sorted(p for p in data.iterdir() if p.name.endswith((".csv", ".csv.gz")))
    if files:
        paths = [p for p in paths if p.name in files or p.name.split(".")[0] in files]
    return {p.name.split(".")[0]: load_csv(p) for p in paths}


def run_realgps_bench(cfg: RealGpsConfig, *, out: Callable[[str], None] = print
                      ) -> dict[str, Any]:
    import multiprocessing as mp

    from bench.harness import private_postgres, release_servers
    from db.migrate import upgrade
    from devices.broker import Mosquitto
    from simulator.publisher import Publisher

    data = cfg.data or default_data_dir()
    if not data.is_dir():
        raise FileNotFoundError(f"no development set at {data} (use --data)")
    t0 = time.monotonic()
    sources = load_dev_set(data, cfg.files)
    scenarios: list[Scenario] = []
    per_source: dict[str, dict[str, Any]] = {}
    for name, tracks in sources.items():
        scs = build_scenarios(tracks)
        scenarios += scs
        per_source[name] = {"tracks": len(tracks), "fixes": sum(len(t) for t in tracks),
                            "dwells": sum(s.kind == "dwell" for s in scs),
                            "moving_windows": sum(s.kind == "moving" for s in scs)}
        out(f"{name}: {len(tracks)} tracks, {per_source[name]['fixes']:,} fixes -> "
            f"{per_source[name]['dwells']} dwells, {per_source[name]['moving_windows']} "
            f"moving windows")
    work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="probation-bench-realgps-"))
    pg = broker = None
    ctx = mp.get_context("spawn")
    try:
        pg = private_postgres(work, database="bench", durable=cfg.durable,
                              settings={"shared_buffers": "256MB"})
        url = pg.url("bench")
        upgrade(url)
        broker = Mosquitto(data_dir=work / "mosquitto")
        broker.start()
        tag = uuid.uuid4().hex[:6]
        prefix = f"rg{tag}/v1"
        now_ms = int(time.time() * 1000)
        replicas = make_replicas(scenarios, now_ms, tag)
        register(url, replicas)
        msgs = messages(prefix, replicas)
        total = sum(len(r.scenario.fixes) for r in replicas)
        kw = {"database_url": url, "mqtt_url": broker.url, "prefix": prefix,
              "client_id": f"rg-ingest-{tag}", "data_dir": str(work / "data")}
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_child, args=(child, kw), daemon=True)
        proc.start()
        if not parent.recv():
            raise RuntimeError("the ingest worker did not connect")
        out(f"replaying {total:,} fixes of {len(replicas)} cases in {len(msgs):,} messages "
            f"through mosquitto into the ingest worker ...")
        with Publisher(broker.url) as pub:
            for _, topic, payload in msgs:
                pub.publish(topic, payload)
            pub.flush(600)
        deadline = time.monotonic() + 1_800
        stored = 0
        while time.monotonic() < deadline:
            stored = _count(url, "SELECT count(*) FROM fixes")
            if stored >= total:
                break
            time.sleep(1)
        parent.send("stop")
        parent.recv()
        proc.join(30)
        if stored < total:
            raise TimeoutError(f"only {stored} of {total} fixes stored")
        alerts = fetch_alerts(url, replicas)
        result: dict[str, Any] = {
            "data": str(data), "fix_interval_s": FIX_INTERVAL_S, "sources": per_source,
            "fixes_replayed": total, "cases": len(replicas),
            "results": summarise(replicas, alerts),
            "seconds": round(time.monotonic() - t0, 1),
            "dead_letters": _count(url, "SELECT count(*) FROM dead_letters"),
        }
        return result
    finally:
        release_servers(broker, pg, work if cfg.work_dir is None else None)


def table_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"{'source':<20} {'acc where none':>14} {'cases':>6} {'pers-days':>9} "
             f"{'FA':>4} {'FA/pd':>7} {'dup':>4} {'recall 2in all':>16} {'delay p50/p95 s':>16}"]
    for source, variants in result["results"].items():
        for v, r in variants.items():
            rec = (f"{r['detected_with_two_fixes_inside']}/{r['visits_with_two_fixes_inside']}"
                   f" {r['detected']}/{r['visits']}" if r["visits"] else "-")
            cases = r["scenarios"]["dwell"] + r["scenarios"]["moving"]
            lines.append(
                f"{source:<20} {v.split('_')[1]:>14} {cases:>6} {r['person_days']:>9.3f} "
                f"{r['false_alarms']:>4} "
                f"{(r['false_alarms_per_person_day'] if r['person_days'] else 0):>7} "
                f"{r['duplicate_alerts']:>4} {rec:>16} "
                f"{str(r['delay_p50_s']) + '/' + str(r['delay_p95_s']):>16}")
    for source, info in result["sources"].items():
        if source not in result["results"]:
            lines.append(f"{source:<20} no scenario: {info['tracks']} tracks, no dwell of 30 "
                         f"minutes and no 40-minute window with 800 m of travel")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from bench.harness import write_json

    p = argparse.ArgumentParser(prog="probation bench realgps")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--files", nargs="*", default=[])
    p.add_argument("--json", type=Path, default=Path("bench-results/realgps.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        result = run_realgps_bench(RealGpsConfig(data=args.data, files=tuple(args.files)))
    except FileNotFoundError as e:  # no development set: say where to point it, no traceback
        raise SystemExit(f"probation bench realgps: {e}; or set PROBATION_REALGPS_DATA") from None
    for line in table_lines(result):
        print(line)
    write_json(args.json, result)
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
