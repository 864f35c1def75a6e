"""Benchmark of the geofence engine against a shapely 2 reference (inside/outside only).

Run: ``uv run python -m bench.geofence [--cases N] [--fixes N] [--json PATH]``.

Workload (fixed seed): N cases around Almaty (43.24 N, 76.92 E, +-10 km), each with
a 12-vertex home inclusion polygon scheduled 22:00-06:00 Asia/Almaty, two 30-vertex
exclusion polygons (one with a hole), one exclusion circle (with a buffer), and 200
shared exclusion zones (schools) attached to every case; zones 100 m to 2 km. Fixes
over one day: near home, near own zones, near schools or anywhere in the city
(daytime mix 30/10/10/50 %; during curfew hours 90/3/2/5 %, or the daytime mix all
day with ``--uniform-mix``); a fix within 10 minutes of its device's previous one
moves at most 10 m/s from it; acc 5-80 m, 1 % cell-tower fixes of 1-3 km.

Engine timing: `advance` (distances + schedules + state machine + transitions) in
steady state: from the state left by the previous day's fixes. Engine and reference
each run once to warm up, then alternate ``--repeats`` times (so that both see the
same machine); the best time of each counts. Reference timing: shapely
prepared geometries, ``contains_xy`` per case for its own zones and an STRtree
``within`` query for the shared zones (no schedules, no distances, no state).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.harness import write_json
from geofence.engine import FixBatch, advance
from geofence.episodes import EngineState
from geofence.geometry import M_PER_DEG, compile_zone
from geofence.registry import CaseZones, ZoneEntry

F64 = npt.NDArray[np.float64]

LAT_C, LON_C = 43.24, 76.92
KX = M_PER_DEG * math.cos(math.radians(LAT_C))
CURFEW = {
    "windows": [
        {
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "start": "22:00",
            "end": "06:00",
        }
    ]
}
DAY_MIX = [0.3, 0.1, 0.1, 0.5]
NIGHT_MIX = [0.9, 0.03, 0.02, 0.05]
DAY0 = int(datetime(2026, 5, 14, 19, 0, tzinfo=UTC).timestamp() * 1000)  # 00:00 Almaty


def _star(rng: np.random.Generator, cx: float, cy: float, r: float, k: int) -> F64:
    """Random star-shaped (hence simple, often concave) polygon, counter-clockwise, metres."""
    ang = np.sort((np.arange(k) + rng.uniform(0.1, 0.9, k)) * (2 * math.pi / k))
    rad = r * rng.uniform(0.6, 1.0, k)
    return np.column_stack((cx + rad * np.cos(ang), cy + rad * np.sin(ang)))


def _ring(xy: F64) -> list[list[float]]:
    lon = LON_C + xy[:, 0] / KX
    lat = LAT_C + xy[:, 1] / M_PER_DEG
    pts = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    return [*pts, pts[0]]


def build_workload(cases: int, fixes: int, seed: int, uniform_mix: bool = False) -> dict[str, Any]:
    """Zones (GeoJSON + compiled), registry and the fix batch."""
    rng = np.random.default_rng(seed)
    half = 10_000.0
    zones: dict[str, ZoneEntry] = {}
    geo: dict[str, dict[str, Any]] = {}
    att: dict[str, list[str] | None] = {}
    case_ids = [f"case-{i:05d}" for i in range(cases)]
    homes = rng.uniform(-half, half, (cases, 2))
    own_centres = np.zeros((cases, 3, 2))
    own_r = np.zeros((cases, 3))
    for i, cid in enumerate(case_ids):
        hx, hy = homes[i]
        hr = rng.uniform(50, 150)
        g = {"type": "Polygon", "coordinates": [_ring(_star(rng, hx, hy, hr, 12))]}
        zid = f"{cid}-home"
        zones[zid] = ZoneEntry.make(
            compile_zone(zone_id=zid, kind="inclusion", geometry=g), CURFEW, None
        )
        geo[zid] = {"kind": "inclusion", "geometry": g}
        att[zid] = [cid]
        for j in range(2):
            r = float(np.exp(rng.uniform(math.log(50), math.log(1000))))
            c = homes[i] + rng.normal(0, 3000, 2)
            own_centres[i, j] = c
            own_r[i, j] = r
            rings = [_ring(_star(rng, c[0], c[1], r, 30))]
            if j == 1:
                rings.append(_ring(_star(rng, c[0], c[1], 0.25 * r, 8)[::-1]))
            g = {"type": "Polygon", "coordinates": rings}
            zid = f"{cid}-excl{j}"
            zones[zid] = ZoneEntry.make(compile_zone(zone_id=zid, kind="exclusion", geometry=g))
            geo[zid] = {"kind": "exclusion", "geometry": g}
            att[zid] = [cid]
        c = homes[i] + rng.normal(0, 3000, 2)
        r = float(rng.uniform(50, 1000))
        own_centres[i, 2] = c
        own_r[i, 2] = r
        circle = {"center": [LON_C + c[0] / KX, LAT_C + c[1] / M_PER_DEG], "radius_m": r}
        zid = f"{cid}-circle"
        zones[zid] = ZoneEntry.make(
            compile_zone(zone_id=zid, kind="exclusion", circle=circle, buffer_m=200.0)
        )
        geo[zid] = {"kind": "exclusion", "circle": circle}
        att[zid] = [cid]
    schools = rng.uniform(-half, half, (200, 2))
    school_r = np.exp(rng.uniform(math.log(50), math.log(300), 200))
    for s in range(200):
        g = {
            "type": "Polygon",
            "coordinates": [_ring(_star(rng, schools[s, 0], schools[s, 1], school_r[s], 16))],
        }
        zid = f"school-{s:03d}"
        zones[zid] = ZoneEntry.make(compile_zone(zone_id=zid, kind="exclusion", geometry=g))
        geo[zid] = {"kind": "exclusion", "geometry": g}
        att[zid] = None
    reg = CaseZones({c: "Asia/Almaty" for c in case_ids}, zones, att)
    places = {
        "homes": homes,
        "own_centres": own_centres,
        "own_r": own_r,
        "schools": schools,
        "school_r": school_r,
    }
    batch = make_fixes(rng, cases, fixes, DAY0, places, uniform_mix)
    previous = make_fixes(rng, cases, fixes, DAY0 - 86_400_000, places, uniform_mix)
    return {
        "registry": reg,
        "batch": batch,
        "previous": previous,
        "geo": geo,
        "att": att,
        "case_ids": case_ids,
    }


def make_fixes(
    rng: np.random.Generator,
    cases: int,
    fixes: int,
    day0: int,
    places: dict[str, F64],
    uniform_mix: bool,
) -> FixBatch:
    """One day of fixes (from local midnight ``day0``) spread over all cases."""
    half = 10_000.0
    homes, schools = places["homes"], places["schools"]
    case = rng.integers(0, cases, fixes)
    ts = day0 + rng.integers(0, 86_400_000, fixes)
    order = np.lexsort((ts, case))
    case, ts = case[order], ts[order]
    # Position kinds: 0 near home, 1 near an own zone, 2 near a school, 3 anywhere.
    kind = rng.choice(4, fixes, p=DAY_MIX)
    if not uniform_mix:  # most people under curfew are at home at night
        hour = ((ts - day0) // 3_600_000) % 24
        night = (hour >= 22) | (hour < 6)
        kind[night] = rng.choice(4, int(night.sum()), p=NIGHT_MIX)
    xy = np.empty((fixes, 2))
    home_m = kind == 0
    xy[home_m] = homes[case[home_m]] + rng.normal(0, 80, (int(home_m.sum()), 2))
    own_m = np.flatnonzero(kind == 1)
    zi = rng.integers(0, 3, own_m.size)
    spread = places["own_r"][case[own_m], zi][:, None]
    xy[own_m] = places["own_centres"][case[own_m], zi] + rng.normal(0, 1, (own_m.size, 2)) * spread
    sch_m = np.flatnonzero(kind == 2)
    si = rng.integers(0, schools.shape[0], sch_m.size)
    spread = 1.5 * places["school_r"][si][:, None]
    xy[sch_m] = schools[si] + rng.normal(0, 1, (sch_m.size, 2)) * spread
    city = kind == 3
    xy[city] = rng.uniform(-half, half, (int(city.sum()), 2))
    # Consecutive fixes of a device within 10 minutes move at most 10 m/s.
    same = np.zeros(fixes, dtype=bool)
    same[1:] = (case[1:] == case[:-1]) & (ts[1:] - ts[:-1] <= 600_000)
    for k in np.flatnonzero(same).tolist():
        dt = (ts[k] - ts[k - 1]) / 1000.0
        step = rng.uniform(0, 10) * dt
        ang = rng.uniform(0, 2 * math.pi)
        xy[k] = xy[k - 1] + step * np.array([math.cos(ang), math.sin(ang)])
    acc = rng.uniform(5, 80, fixes)
    cell = rng.random(fixes) < 0.01
    acc[cell] = rng.uniform(1000, 3000, int(cell.sum()))
    lat = LAT_C + xy[:, 1] / M_PER_DEG
    lon = LON_C + xy[:, 0] / KX
    # Arrival order: by time across devices (one device per case).
    o = np.argsort(ts, kind="stable")
    dev_ids = np.empty(cases, dtype=object)
    dev_ids[:] = [f"dev-{i:05d}" for i in range(cases)]
    idx = case[o].astype(np.int32)
    return FixBatch(idx, idx, dev_ids, ts[o], lat[o], lon[o], acc[o])


def _reference(work: dict[str, Any]) -> Callable[[], int]:
    """Shapely 2 inside/outside for every fix against its case's zones: a run -> hits."""
    import shapely

    geo = work["geo"]
    case_ids: list[str] = work["case_ids"]
    batch: FixBatch = work["batch"]
    own: list[list[Any]] = [[] for _ in case_ids]
    cidx = {c: i for i, c in enumerate(case_ids)}
    shared = []
    for zid, z in geo.items():
        if "circle" in z:
            c = z["circle"]
            g = _scaled_circle(c["center"][0], c["center"][1], c["radius_m"])
        else:
            g = shapely.geometry.shape(z["geometry"])
        shapely.prepare(g)
        lst = work["att"][zid]
        if lst is None:
            shared.append(g)
        else:
            for cid in lst:
                own[cidx[cid]].append(g)
    tree = shapely.STRtree(shared)
    shapely.prepare(np.array(shared, dtype=object))

    def run() -> int:
        order = np.argsort(batch.case, kind="stable")
        cs = batch.case[order]
        bounds = np.flatnonzero(np.diff(cs)) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [cs.size]))
        lon = batch.lon[order]
        lat = batch.lat[order]
        hits = 0
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            for g in own[int(cs[s])]:
                hits += int(np.count_nonzero(shapely.contains_xy(g, lon[s:e], lat[s:e])))
        pts = shapely.points(batch.lon, batch.lat)
        pairs = tree.query(pts, predicate="within")
        hits += int(pairs.shape[1])
        return hits

    return run


def _scaled_circle(lon0: float, lat0: float, r: float) -> Any:
    import shapely

    kx = M_PER_DEG * math.cos(math.radians(lat0))
    a = np.linspace(0, 2 * math.pi, 65)[:-1]
    return shapely.Polygon(
        np.column_stack((lon0 + r * np.cos(a) / kx, lat0 + r * np.sin(a) / M_PER_DEG))
    )


def run(
    cases: int = 10000,
    fixes: int = 100000,
    seed: int = 1,
    uniform_mix: bool = False,
    repeats: int = 5,
) -> dict[str, Any]:
    """Build the workload, time engine and reference; returns a flat dict of figures."""
    t0 = time.perf_counter()
    work = build_workload(cases, fixes, seed, uniform_mix)
    build_s = time.perf_counter() - t0
    reg: CaseZones = work["registry"]
    batch: FixBatch = work["batch"]
    # Steady state: the state after the previous day's fixes (device table, open
    # episodes), then the timed day.
    start, _ = advance(EngineState.empty(), work["previous"], reg)
    advance(start, batch, reg)  # warm-up (also fills the schedule cache)
    reference = _reference(work)
    reference()  # warm-up
    # Engine and reference alternate, so that both see the same machine; best of each.
    best = ref_s = math.inf
    out_state, trans = start, None
    ref_hits = 0
    for _ in range(repeats):
        t1 = time.perf_counter()
        out_state, trans = advance(start, batch, reg)
        best = min(best, time.perf_counter() - t1)
        t1 = time.perf_counter()
        ref_hits = reference()
        ref_s = min(ref_s, time.perf_counter() - t1)
    assert trans is not None
    kinds = np.bincount(trans.cols["kind"], minlength=3)
    res = {
        "cases": cases,
        "fixes": fixes,
        "seed": seed,
        "uniform_mix": uniform_mix,
        "zones_total": len(reg.zone_ids),
        "shared_zones": int(reg.shared_zones.size),
        "own_zones_per_case": 4,
        "build_s": round(build_s, 3),
        "repeats": repeats,
        "engine_s": round(best, 4),
        "engine_fixes_per_s": round(fixes / best),
        "reference_s": round(ref_s, 4),
        "reference_fixes_per_s": round(fixes / ref_s),
        "ratio": round(ref_s / best, 2),
        "transitions": len(trans),
        "opens": int(kinds[0]),
        "updates": int(kinds[1]),
        "closes": int(kinds[2]),
        "inferred_opens": int(np.count_nonzero(trans.cols["inferred"] & (trans.cols["kind"] == 0))),
        "start_episode_states": start.n_episodes,
        "episode_states": out_state.n_episodes,
        "reference_inside_hits": ref_hits,
    }
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--cases", type=int, default=10000)
    p.add_argument("--fixes", type=int, default=100000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--uniform-mix", action="store_true", help="daytime position mix all day")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each (best counts)")
    p.add_argument("--json", dest="json_path", default=None)
    a = p.parse_args(argv)
    res = run(a.cases, a.fixes, a.seed, a.uniform_mix, a.repeats)
    for k, v in res.items():
        print(f"{k:>24}: {v}")
    if a.json_path:
        write_json(Path(a.json_path), res)


if __name__ == "__main__":
    main()
