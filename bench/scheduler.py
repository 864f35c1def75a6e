"""Benchmark of the scheduler's set-based passes at 100,000 assigned devices.

Generates, set-based with `generate_series`, N cases each with a bracelet, a circular
home zone with a 22:00-06:00 curfew (Asia/Almaty) and a few fixes before 22:00, then
times (median of `repeat` runs, each rolled back so every run sees the same data;
the JSON keys add `_s`):

* `silence_steady`: the silence pass when nothing changes (the common case);
* `silence_transitions`: the pass in which `silent_pct` % of devices go silent and
  `nofix_pct` % lose their fixes at once (each opens an alert through `open_episode`);
* `curfew`: the curfew pass at 22:00 for all N zones (window starts, last fixes, signed
  distances), with `outside_pct` % outside (alerts opened);
* `curfew_idle`: the curfew pass at a time when no window starts (every 30 s).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from alerts.scheduled import GroupCache, PolygonCache, curfew_starts
from bench.harness import has_timescaledb, private_postgres, release_servers
from db.engine import libpq_url
from db.server import LocalPostgres
from devices.scheduled import evaluate_silence

TZ = "Asia/Almaty"
CURFEW = '{"windows": [{"days": ["mon","tue","wed","thu","fri","sat","sun"], "start": "22:00", "end": "06:00"}]}'


@dataclass(frozen=True, slots=True)
class SchedulerBenchConfig:
    devices: int = 100_000
    fixes_per_device: int = 5
    silent_pct: float = 0.2
    nofix_pct: float = 0.2
    outside_pct: float = 0.2
    repeat: int = 3
    database_url: str | None = None
    work_dir: Path | None = None


def _generate(conn: psycopg.Connection[Any], cfg: SchedulerBenchConfig, start: datetime) -> None:
    """All rows set-based; `start` is 22:00 local on the bench day."""
    n = cfg.devices
    p = {"n": n, "start": start, "silent": cfg.silent_pct / 100, "nofix": cfg.nofix_pct / 100,
         "outside": cfg.outside_pct / 100, "k": cfg.fixes_per_device, "tz": TZ}
    stmts = [
        "INSERT INTO users (id, username, password_hash, role) VALUES"
        " ('00000000-0000-0000-0000-00000000b001', 'bench-officer', 'x', 'officer')",
        """INSERT INTO subjects (id, iin, full_name, birth_date)
           SELECT md5('s' || i)::uuid, lpad(i::text, 12, '0'), 'P ' || i, '1990-01-01'
           FROM generate_series(1, %(n)s) i""",
        """INSERT INTO cases (id, subject_id, officer_id, court_order_ref, starts_on, ends_on,
                              risk_level, timezone)
           SELECT md5('c' || i)::uuid, md5('s' || i)::uuid,
                  '00000000-0000-0000-0000-00000000b001', 'B-' || i, '2026-01-01', '2027-01-01',
                  (ARRAY['low','medium','high'])[1 + i %% 3], %(tz)s
           FROM generate_series(1, %(n)s) i""",
        # device i is silent / without good fixes / outside by its position in [0, 1)
        """INSERT INTO devices (id, serial, kind, last_seen, last_fix_at, last_good_fix_at)
           SELECT md5('d' || i)::uuid, 'B' || lpad(i::text, 7, '0'), 'bracelet',
                  %(start)s - interval '1 minute', %(start)s - interval '2 minutes',
                  %(start)s - interval '2 minutes'
           FROM generate_series(1, %(n)s) i""",
        """INSERT INTO device_assignments (id, device_id, case_id, assigned_at)
           SELECT md5('a' || i)::uuid, md5('d' || i)::uuid, md5('c' || i)::uuid,
                  %(start)s - interval '30 days'
           FROM generate_series(1, %(n)s) i""",
        f"""INSERT INTO zones (id, name, kind, circle, schedule)
           SELECT md5('z' || i)::uuid, 'home', 'inclusion',
                  jsonb_build_object('center', jsonb_build_array(76.80 + (i %% 400) * 0.001,
                                                                 43.20 + (i / 400) * 0.0005),
                                     'radius_m', 60 + i %% 80),
                  '{CURFEW}'::jsonb
           FROM generate_series(1, %(n)s) i""",
        """INSERT INTO case_zones (case_id, zone_id)
           SELECT md5('c' || i)::uuid, md5('z' || i)::uuid FROM generate_series(1, %(n)s) i""",
        # k fixes per device in the 40 minutes before 22:00, the newest 2 minutes before;
        # `outside` of them far from home, the others within 20 m of the centre
        """INSERT INTO fixes (device_id, seq, ts, lat, lon, acc)
           SELECT md5('d' || i)::uuid, j, %(start)s - interval '2 minutes' * (1 + 4 * (%(k)s - j)),
                  43.20 + (i / 400) * 0.0005
                    + CASE WHEN (i::bigint * 7919 %% 10000) < %(outside)s * 10000 THEN 0.01 ELSE 0.0001 END,
                  76.80 + (i %% 400) * 0.001, 10
           FROM generate_series(1, %(n)s) i, generate_series(1, %(k)s) j""",
    ]
    for s in stmts:
        conn.execute(s, p)
    conn.execute("ANALYZE")
    conn.commit()


def _mark_transitions(conn: psycopg.Connection[Any], cfg: SchedulerBenchConfig,
                      start: datetime) -> None:
    """Make `silent_pct` % of devices silent and `nofix_pct` % talk without good fixes."""
    p = {"n": cfg.devices, "start": start, "silent": cfg.silent_pct / 100,
         "nofix": cfg.nofix_pct / 100}
    conn.execute(
        """UPDATE devices d SET last_seen = %(start)s - interval '2 hours'
           FROM generate_series(1, %(n)s) i
           WHERE d.id = md5('d' || i)::uuid AND (i::bigint * 104729 %% 10000) < %(silent)s * 10000""", p)
    conn.execute(
        """UPDATE devices d SET last_good_fix_at = %(start)s - interval '3 hours'
           FROM generate_series(1, %(n)s) i
           WHERE d.id = md5('d' || i)::uuid
             AND (i::bigint * 104729 %% 10000) >= 10000 - %(nofix)s * 10000""", p)


def _timed(conn: psycopg.Connection[Any], repeat: int, setup: Callable[[], None] | None,
           body: Callable[[], Any]) -> tuple[float, Any]:
    """Median seconds of `repeat` runs of `body`, each rolled back after timing."""
    times: list[float] = []
    out: Any = None
    for _ in range(repeat):
        if setup is not None:
            setup()
        t = time.perf_counter()
        out = body()
        times.append(time.perf_counter() - t)
        conn.rollback()
    return statistics.median(times), out


def run_scheduler_bench(cfg: SchedulerBenchConfig, *, out: Any = print) -> dict[str, Any]:
    """Build the data set, time the passes, return a flat result object."""
    from db.migrate import upgrade

    work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="probation-sched-bench-"))
    pg: LocalPostgres | None = None
    try:
        url = cfg.database_url
        if url is None:
            pg = private_postgres(work, database="schedbench",
                                  settings={"shared_buffers": "512MB", "max_wal_size": "4GB"},
                                  timescale_settings={"timescaledb.max_background_workers": "0"})
            url = pg.url("schedbench")
        upgrade(url)
        start = datetime(2026, 11, 25, 22, 0, tzinfo=ZoneInfo(TZ)).astimezone(UTC)
        timescale = has_timescaledb(url)
        with psycopg.connect(libpq_url(url)) as conn:
            t = time.perf_counter()
            _generate(conn, cfg, start)
            gen_s = time.perf_counter() - t
            out(f"scheduler benchmark: {os.cpu_count()} CPUs, PostgreSQL "
                f"{'with' if timescale else 'without'} TimescaleDB, {cfg.devices:,} assigned "
                f"devices/cases/zones, {cfg.devices * cfg.fixes_per_device:,} fixes "
                f"(generated in {gen_s:.1f} s)")
            now = start - timedelta(seconds=30)

            steady_s, steady = _timed(conn, cfg.repeat, None,
                                      lambda: evaluate_silence(conn, now=now))
            out(f"  silence pass, steady (no change)      {steady_s * 1000:8.1f} ms  "
                f"{steady.as_dict()}")
            trans_s, trans = _timed(conn, cfg.repeat, lambda: _mark_transitions(conn, cfg, start),
                                    lambda: evaluate_silence(conn, now=now))
            out(f"  silence pass, with transitions        {trans_s * 1000:8.1f} ms  "
                f"{trans.as_dict()}")
            # the service keeps these caches across passes; the first pass fills them
            groups, polygons = GroupCache(), PolygonCache()
            t = time.perf_counter()
            curfew_starts(conn, since=start - timedelta(seconds=60),
                          now=start - timedelta(seconds=30), groups=groups, polygons=polygons)
            cold_s = time.perf_counter() - t
            conn.rollback()
            out(f"  curfew pass, first after start (cold) {cold_s * 1000:8.1f} ms")
            idle_s, _ = _timed(conn, cfg.repeat, None, lambda: curfew_starts(
                conn, since=start - timedelta(seconds=60), now=start - timedelta(seconds=30),
                groups=groups, polygons=polygons))
            out(f"  curfew pass, no window start          {idle_s * 1000:8.1f} ms")
            curfew_s, cur = _timed(conn, cfg.repeat, None, lambda: curfew_starts(
                conn, since=start - timedelta(seconds=30), now=start, groups=groups,
                polygons=polygons))
            out(f"  curfew pass at 22:00, all zones start {curfew_s * 1000:8.1f} ms  "
                f"{cur.as_dict()}")
        result = {
            "devices": cfg.devices, "fixes": cfg.devices * cfg.fixes_per_device,
            "timescaledb": timescale, "cpus": os.cpu_count(), "repeat": cfg.repeat,
            "generate_s": round(gen_s, 2),
            "silence_steady_s": round(steady_s, 4),
            "silence_transitions_s": round(trans_s, 4),
            "silence_transitions_opened": len(trans.opened),
            "silence_transitions_evaluate_s": round(trans.evaluate_s, 4),
            "silence_transitions_alerts_s": round(trans.alerts_s, 4),
            "curfew_s": round(curfew_s, 4),
            "curfew_evaluated": cur.evaluated, "curfew_outside": cur.outside,
            "curfew_opened": len(cur.opened),
            "curfew_evaluate_s": round(cur.evaluate_s, 4),
            "curfew_alerts_s": round(cur.alerts_s, 4),
            "curfew_idle_s": round(idle_s, 4),
            "curfew_cold_s": round(cold_s, 4),
        }
        result["ok"] = max(steady_s, trans_s, curfew_s) <= 1.0
        return result
    finally:
        release_servers(None, pg, work if cfg.work_dir is None else None)
