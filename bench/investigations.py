"""Benchmark of proximity searches on a week of fixes, checked against a brute-force scan.

Run: ``uv run probation bench investigations [--cases 2000] [--interval-s 240] [--json P]``.

Workload (fixed seed): N cases, each with one bracelet assigned for the whole week, in a
private PostgreSQL with TimescaleDB (1-day chunks, the project's migrations). Each
person has a home and a work place around Almaty (43.24 N, 76.92 E, +-12 km); one fix
every ``--interval-s`` seconds for 7 days: home at night, work 09-18 on weekdays,
elsewhere an errand point, plus a random walk of a few hundred metres; acc 5-30 m (85 %),
30-80 m (12 %), cell fixes of 500-2500 m (3 %). Fixes are generated with numpy and
bulk-loaded with binary COPY.

Queries: places centred on a random fix's position (so that people are there) at a
random time: ``small`` = a 500 m circle x 1 hour, ``large`` = a 2 km circle x 24 hours.
Each query is the service's own `search` (near fixes, pruning and its probes, the kept
cases' tracks, the probability model, the answer objects), timed end to end on a warm
cache; p50/p99 over ``--queries`` of each kind, once without and once with an extra
btree index on ``fixes (lat, lon)`` (the spatial index option; the default schema has
only the time and per-device indexes).

``--keep DIR`` keeps the private PostgreSQL (and the world loaded into it) in ``DIR``
for the next run with the same ``--cases``, ``--interval-s`` and ``--seed``: loading 5 M
fixes takes minutes, a reused world seconds.

Reference: for ``--check`` queries of each kind, a brute-force scan: every fix of the
table read once into memory, each query answered from all of them (window by time in
numpy, every device, no spatial prefilter) case by case with `service.from_full_track`
and `service.match` (the search answers its kept cases all at once, `answer_all`); the
case ids, probabilities, closest approaches and gaps must be identical.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from bench.harness import has_timescaledb, pct, private_postgres, release_servers, write_json
from db.engine import libpq_url
from geofence import compile_zone
from probation.investigations import service
from probation.tracks.service import from_array_send

F64 = npt.NDArray[np.float64]
LAT0, LON0 = 43.24, 76.92
M_LAT = 111_195.0
M_LON = M_LAT * math.cos(math.radians(LAT0))
WEEK_START = datetime(2026, 11, 16, tzinfo=UTC)
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
KINDS = {"small": (500.0, timedelta(hours=1)), "large": (2000.0, timedelta(hours=24))}


@dataclass
class World:
    cases: list[uuid.UUID]
    devices: list[uuid.UUID]
    fixes: int


def _people(rng: np.random.Generator, n: int) -> dict[str, F64]:
    def spot(spread: float) -> tuple[F64, F64]:
        return (LAT0 + rng.normal(0, spread, n) / M_LAT, LON0 + rng.normal(0, spread, n) / M_LON)

    home, work, errand = spot(6000.0), spot(4000.0), spot(5000.0)
    return {"home_lat": home[0], "home_lon": home[1], "work_lat": work[0], "work_lon": work[1],
            "err_lat": errand[0], "err_lon": errand[1]}


def _track(rng: np.random.Generator, p: dict[str, F64], i: int, t_s: F64) -> tuple[F64, F64, F64]:
    """One person's positions and accuracies at times `t_s` (seconds from WEEK_START, UTC)."""
    local_h = ((t_s / 3600.0) + 5.0) % 24.0  # Asia/Almaty is UTC+5
    day = ((t_s / 86400.0) + 0.2083).astype(np.int64) % 7  # 2026-11-16 is a Monday
    at_work = (local_h >= 9) & (local_h < 18) & (day < 5)
    out = ((local_h >= 18) & (local_h < 21)) | ((day >= 5) & (local_h >= 11) & (local_h < 16))
    lat = np.where(at_work, p["work_lat"][i], np.where(out, p["err_lat"][i], p["home_lat"][i]))
    lon = np.where(at_work, p["work_lon"][i], np.where(out, p["err_lon"][i], p["home_lon"][i]))
    walk = np.cumsum(rng.normal(0, 25.0, (2, t_s.size)), axis=1)
    drift = walk - np.repeat(walk[:, ::60], 60, axis=1)[:, : t_s.size]  # re-anchored every 60
    u = rng.random(t_s.size)
    acc = np.where(u < 0.85, rng.uniform(5, 30, t_s.size),
                   np.where(u < 0.97, rng.uniform(30, 80, t_s.size),
                            rng.uniform(500, 2500, t_s.size)))
    lat = lat + (drift[0] + rng.normal(0, 1, t_s.size) * acc / 1.5) / M_LAT
    lon = lon + (drift[1] + rng.normal(0, 1, t_s.size) * acc / 1.5) / M_LON
    return lat, lon, acc


def _copy_binary(dev: uuid.UUID, seq0: int, t_s: F64, lat: F64, lon: F64, acc: F64,
                 cell: npt.NDArray[np.bool_]) -> bytes:
    """Rows of `fixes` (device_id, seq, ts, lat, lon, acc, src) in COPY's binary tuple format."""
    parts = []
    for is_cell, src in ((False, b"gps"), (True, b"cell")):
        m = cell == is_cell
        n = int(m.sum())
        if n == 0:
            continue
        dt = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("dev", "S16"), ("l2", ">i4"), ("seq", ">i8"),
                       ("l3", ">i4"), ("ts", ">i8"), ("l4", ">i4"), ("lat", ">f8"),
                       ("l5", ">i4"), ("lon", ">f8"), ("l6", ">i4"), ("acc", ">f4"),
                       ("l7", ">i4"), ("src", f"S{len(src)}")])
        a = np.zeros(n, dtype=dt)
        a["nf"] = 7
        a["l1"], a["l2"], a["l3"], a["l4"], a["l5"], a["l6"], a["l7"] = 16, 8, 8, 8, 8, 4, len(src)
        a["dev"] = dev.bytes
        a["seq"] = seq0 + np.flatnonzero(m)
        offset = (WEEK_START - PG_EPOCH).total_seconds()
        a["ts"] = np.round((t_s[m] + offset) * 1e6).astype(np.int64)
        a["lat"], a["lon"], a["acc"], a["src"] = lat[m], lon[m], acc[m], src
        parts.append(a.tobytes())
    return b"".join(parts)


def build(url: str, cases: int, interval_s: float, seed: int) -> World:
    rng = np.random.default_rng(seed)
    people = _people(rng, cases)
    case_ids = [uuid.uuid4() for _ in range(cases)]
    dev_ids = [uuid.uuid4() for _ in range(cases)]
    officer = uuid.uuid4()
    t_s = np.arange(0.0, 7 * 86400.0, interval_s)
    with psycopg.connect(libpq_url(url), autocommit=True) as c:
        c.execute("INSERT INTO users (id, username, password_hash, role) VALUES "
                  "(%s, 'bench-officer', 'x', 'officer')", (officer,))
        with c.cursor() as cur:
            cur.executemany("INSERT INTO subjects (id, iin, full_name, birth_date) "
                            "VALUES (%s, %s, %s, %s)",
                            [(cid, f"{i:012d}", f"P{i}", date(1990, 1, 1))
                             for i, cid in enumerate(case_ids)])
            cur.executemany("INSERT INTO cases (id, subject_id, officer_id, court_order_ref, "
                            "starts_on, ends_on, risk_level) VALUES (%s, %s, %s, 'B', "
                            "'2026-01-01', '2027-01-01', 'low')",
                            [(cid, cid, officer) for cid in case_ids])
            cur.executemany("INSERT INTO devices (id, serial, kind) VALUES (%s, %s, 'bracelet')",
                            [(d, f"B{i}") for i, d in enumerate(dev_ids)])
            cur.executemany("INSERT INTO device_assignments (id, device_id, case_id, assigned_at)"
                            " VALUES (%s, %s, %s, %s)",
                            [(uuid.uuid4(), d, cid, WEEK_START - timedelta(days=1))
                             for d, cid in zip(dev_ids, case_ids, strict=True)])
        with c.cursor() as cur, cur.copy("COPY fixes (device_id, seq, ts, lat, lon, acc, src) "
                                         "FROM STDIN (FORMAT binary)") as cp:
            cp.write(b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big"))
            for i, dev in enumerate(dev_ids):
                lat, lon, acc = _track(rng, people, i, t_s)
                cp.write(_copy_binary(dev, 1, t_s, lat, lon, acc, acc >= 500))
            cp.write((-1).to_bytes(2, "big", signed=True))
        c.execute("ANALYZE fixes")
    return World(case_ids, dev_ids, cases * t_s.size)


def _kept_world(url: str, cases: int, interval_s: float, seed: int) -> World | None:
    """The world an earlier run with the same parameters loaded and kept (``--keep``)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS bench_world (cases int, interval_s float8, "
                  "seed int, fixes int8)")
        row = c.execute("SELECT cases, interval_s, seed, fixes FROM bench_world").fetchone()
        if row is None:
            return None
        if row[:3] != (cases, interval_s, seed):
            raise SystemExit(f"the kept database holds another world {row[:3]}: use another "
                             "--keep directory")
        pairs = c.execute("SELECT case_id, device_id FROM device_assignments "
                          "ORDER BY case_id").fetchall()
    return World([p[0] for p in pairs], [p[1] for p in pairs], int(row[3]))


def _queries(url: str, rng: np.random.Generator, kind: str, n: int) -> list[dict[str, Any]]:
    radius, window = KINDS[kind]
    out = []
    with psycopg.connect(libpq_url(url)) as c:
        for _ in range(n):
            start = WEEK_START + timedelta(seconds=float(rng.uniform(0, 7 * 86400 - window.total_seconds())))
            row = c.execute("SELECT lat, lon FROM fixes WHERE ts >= %s AND acc < 50 LIMIT 1 "
                            "OFFSET %s", (start, int(rng.integers(0, 500)))).fetchone()
            assert row is not None
            out.append({"circle": {"center": [row[1], row[0]], "radius_m": radius},
                        "start": start, "end": start + window})
    return out


def _run(conn: psycopg.Connection[Any], q: dict[str, Any]) -> list[Any]:
    place = compile_zone(zone_id="place", kind="exclusion", circle=q["circle"])
    return service.search(conn, place=place, start=q["start"], end=q["end"])


def _time(url: str, queries: list[dict[str, Any]]) -> tuple[list[float], list[int]]:
    ms, found = [], []
    with psycopg.connect(libpq_url(url)) as conn:
        _run(conn, queries[0])  # warm-up
        for q in queries:
            t = time.perf_counter()
            res = _run(conn, q)
            ms.append((time.perf_counter() - t) * 1000)
            found.append(len(res))
            conn.rollback()
    return ms, found


def _all_fixes(url: str) -> dict[uuid.UUID, tuple[F64, F64, F64, F64]]:
    """Every fix of the table, per device, time-ordered (the brute-force side's input)."""
    out = {}
    with psycopg.connect(libpq_url(url)) as c, c.cursor(binary=True) as cur:
        cur.execute("""
            SELECT device_id,
              array_send(array_agg((extract(epoch FROM ts) * 1000000)::int8 ORDER BY ts)),
              array_send(array_agg(lat ORDER BY ts)), array_send(array_agg(lon ORDER BY ts)),
              array_send(array_agg(acc::float8 ORDER BY ts))
            FROM fixes GROUP BY device_id""")
        for dev, ts, lat, lon, acc in cur:
            out[dev] = (from_array_send(ts, "int8").astype(np.float64) / 1e6,
                        from_array_send(lat, "float8"), from_array_send(lon, "float8"),
                        from_array_send(acc, "float8"))
    return out


def _brute(world: World, every: dict[uuid.UUID, tuple[F64, F64, F64, F64]],
           q: dict[str, Any]) -> list[Any]:
    place = compile_zone(zone_id="place", kind="exclusion", circle=q["circle"])
    t0, t1 = q["start"].timestamp(), q["end"].timestamp()
    found = []
    for cid, dev in zip(world.cases, world.devices, strict=True):
        ts, lat, lon, acc = every[dev]
        m = (ts >= t0) & (ts < t1)
        if not m.any():
            continue
        track = service.from_full_track(cid, cid, ts[m], lat[m], lon[m], acc[m])
        res = service.match(place, track, q["start"], q["end"], 0.01)
        if res is not None:
            found.append(res)
    found.sort(key=lambda r: (-r.probability, r.closest.distance_m, str(r.case_id)))
    return found


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(ms, 0.5), 1), "p99_ms": round(pct(ms, 0.99), 1),
            "max_ms": round(max(ms), 1)}


def run(cases: int, interval_s: float, n_queries: int, n_check: int, seed: int,
        database_url: str | None, keep: Path | None = None) -> dict[str, Any]:
    work = pg = None
    if database_url is None:
        work = keep or Path(tempfile.mkdtemp(prefix="bench-inv-"))
        pg = private_postgres(work, database="bench", settings={
            "shared_buffers": "1GB", "work_mem": "64MB", "max_wal_size": "4GB",
            "maintenance_work_mem": "512MB"}, durable=False)
        database_url = pg.url("bench")
    try:
        from db.migrate import upgrade

        upgrade(database_url)
        with psycopg.connect(libpq_url(database_url), autocommit=True) as c:
            c.execute("DROP INDEX IF EXISTS bench_fixes_lat_lon")  # left by an interrupted run
        t = time.perf_counter()
        kept = _kept_world(database_url, cases, interval_s, seed) if keep else None
        world = kept or build(database_url, cases, interval_s, seed)
        load_s = time.perf_counter() - t
        if keep and kept is None:
            with psycopg.connect(libpq_url(database_url), autocommit=True) as c:
                c.execute("INSERT INTO bench_world VALUES (%s, %s, %s, %s)",
                          (cases, interval_s, seed, world.fixes))
        _say(f"{'reused' if kept else 'loaded'} {world.fixes:,} fixes in {load_s:.0f} s")
        rng = np.random.default_rng(seed + 1)
        queries = {k: _queries(database_url, rng, k, n_queries) for k in KINDS}
        res: dict[str, Any] = {"cases": cases, "fixes": world.fixes, "interval_s": interval_s,
                               "timescaledb": has_timescaledb(database_url),
                               "load_s": round(load_s, 1), "queries_per_kind": n_queries}
        for variant in ("no_spatial_index", "btree_lat_lon"):
            if variant == "btree_lat_lon":
                with psycopg.connect(libpq_url(database_url), autocommit=True) as c:
                    t = time.perf_counter()
                    c.execute("CREATE INDEX bench_fixes_lat_lon ON fixes (lat, lon)")
                    c.execute("ANALYZE fixes")
                    res["btree_build_s"] = round(time.perf_counter() - t, 1)
            for kind, qs in queries.items():
                ms, found = _time(database_url, qs)
                _say(f"{variant} {kind}: p50 {pct(ms, 0.5):.0f} ms, p99 {pct(ms, 0.99):.0f} ms")
                res[f"{variant}.{kind}"] = _summary(ms) | {
                    "matches_median": float(np.median(found))}
        every = _all_fixes(database_url)
        same = checked = 0
        brute_ms = []
        with psycopg.connect(libpq_url(database_url)) as conn:
            for qs in queries.values():
                for q in qs[:n_check]:
                    got = _run(conn, q)
                    conn.rollback()
                    t = time.perf_counter()
                    want = _brute(world, every, q)
                    brute_ms.append((time.perf_counter() - t) * 1000)
                    checked += 1
                    same += int([m.model_dump() for m in got] == [m.model_dump() for m in want])
        res["checked_against_brute_force"] = checked
        res["identical_answers"] = same
        res["brute_force_p50_ms_in_memory"] = round(pct(brute_ms, 0.5), 1)
        return res
    finally:
        if keep is not None and pg is not None:
            with psycopg.connect(libpq_url(database_url), autocommit=True) as c:
                c.execute("DROP INDEX IF EXISTS bench_fixes_lat_lon")
            pg.stop()
        else:
            release_servers(None, pg, work)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--cases", type=int, default=2000)
    p.add_argument("--interval-s", type=float, default=240.0, help="seconds between fixes")
    p.add_argument("--queries", type=int, default=50, help="timed queries of each kind")
    p.add_argument("--check", type=int, default=5, help="queries of each kind checked")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--database-url", default=None, help="a throwaway database (default: a "
                   "private PostgreSQL with TimescaleDB when installed)")
    p.add_argument("--keep", type=Path, default=None, help="keep the private PostgreSQL in "
                   "this directory and reuse the world it holds on the next run (same "
                   "--cases, --interval-s, --seed): no reload")
    p.add_argument("--json", dest="json_path", default=None)
    a = p.parse_args(argv)
    res = run(a.cases, a.interval_s, a.queries, a.check, a.seed, a.database_url, a.keep)
    for k, v in res.items():
        print(f"{k:>34}: {v}")
    if a.json_path:
        write_json(Path(a.json_path), res)
    small, large = res["no_spatial_index.small"], res["no_spatial_index.large"]
    for what, key in (("p50", "p50_ms"), ("p99", "p99_ms")):
        met = small[key] <= 200 and large[key] <= 1000
        print(f"targets at {what} (500 m x 1 h <= 200 ms: {small[key]} ms; 2 km x 24 h <= 1 s: "
              f"{large[key]} ms; default schema): {'met' if met else 'NOT met'}")
    print(f"brute-force agreement {res['identical_answers']}/{res['checked_against_brute_force']}")


if __name__ == "__main__":
    main()
