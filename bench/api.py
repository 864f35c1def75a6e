"""Load benchmark of the supervision API: the caseload page and alert acknowledgement.

Generates, set-based with `generate_series`, `cases` active cases (officers with 50 cases
each, supervisors with several officers, an admin), one bracelet, zone and device
assignment per case, `fixes` fixes spread evenly over the devices (one every 2 minutes,
ending now), and 10 alerts per case (2 unresolved). Then serves the real app with uvicorn
in a separate process and measures, one request at a time over keep-alive HTTP:

* `caseload`: `GET /api/v1/cases?limit=50` as officers (their 50 cases), supervisors
  (first page and the next via the cursor) and the admin (first page of all cases);
* `ack`: `POST /api/v1/alerts/{id}/acknowledge` of open alerts by their officers;
* `track_week`: `GET /api/v1/cases/{id}/track` of a week at one fix per 30 s (20,160
  fixes, laps in and out of a zone) thinned to 2,000 points, against the reference
  `track_hour` (the first hour of the same week: 120 fixes, nothing to thin), same run.

Targets: caseload p99 <= 50 ms, acknowledgement p99 <= 30 ms, week track median <= 150 ms.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import (
    CASELOAD_SQL,
    has_timescaledb,
    private_postgres,
    release_servers,
)

# `app_from_env` stays importable here: `bench login --source` serves older trees by this path
from bench.harness import app_from_env as app_from_env
from db.engine import libpq_url

TARGETS = {"caseload_p99_ms": 50.0, "ack_p99_ms": 30.0, "track_week_p50_ms": 150.0}
TRACK_SEQ0 = 10_000_000  # the week's fixes: seq from here, on case 1's bracelet
TRACK_REQUESTS = 20
ALERT_TYPES = ["exclusion_zone_entered", "inclusion_zone_left", "strap_tamper", "battery_low",
               "communication_lost", "location_lost", "gps_jamming", "beacon_lost",
               "checkin_missed", "checkin_failed"]


@dataclass(frozen=True, slots=True)
class ApiBenchConfig:
    cases: int = 2000
    fixes: int = 5_000_000
    cases_per_officer: int = 50
    officers_per_supervisor: int = 4
    caseload_requests: int = 1000
    acks: int = 1000
    warmup: int = 50
    database_url: str | None = None
    work_dir: Path | None = None
    durable: bool = True


def _generate(conn: psycopg.Connection[Any], cfg: ApiBenchConfig, out: Callable[[str], None]) -> None:
    n = cfg.cases
    officers = max(1, n // cfg.cases_per_officer)
    sups = max(1, officers // cfg.officers_per_supervisor)
    per_device = max(1, cfg.fixes // n)
    p: dict[str, Any] = {"n": n, "officers": officers, "sups": sups, "per": per_device,
                         "types": ALERT_TYPES, "tag": ""}
    stmts = [
        "INSERT INTO users (id, username, password_hash, role) VALUES "
        "(md5('u-admin')::uuid, 'bench-admin', 'x', 'admin')",
        """INSERT INTO users (id, username, password_hash, role)
           SELECT md5('s' || i)::uuid, 'bench-sup-' || i, 'x', 'supervisor'
           FROM generate_series(1, %(sups)s) i""",
        """INSERT INTO users (id, username, password_hash, role, supervisor_id)
           SELECT md5('o' || i)::uuid, 'bench-off-' || i, 'x', 'officer',
                  md5('s' || (1 + (i - 1) %% %(sups)s))::uuid
           FROM generate_series(1, %(officers)s) i""",
        *CASELOAD_SQL,
        """INSERT INTO devices (id, serial, kind, battery, online, last_seen)
           SELECT md5('d' || i)::uuid, 'BENCH-' || lpad(i::text, 6, '0'), 'bracelet',
                  20 + i %% 80, i %% 10 <> 0, now() - (i %% 300) * interval '1 second'
           FROM generate_series(1, %(n)s) i""",
        """INSERT INTO device_assignments (id, device_id, case_id, assigned_at)
           SELECT md5('a' || i)::uuid, md5('d' || i)::uuid, md5('c' || i)::uuid,
                  now() - interval '60 days'
           FROM generate_series(1, %(n)s) i""",
        """INSERT INTO zones (id, name, kind, circle, buffer_m)
           SELECT md5('z' || i)::uuid, 'victim home', 'exclusion',
                  jsonb_build_object('center', jsonb_build_array(76.8 + (i %% 50) * 0.01,
                                                                 43.2 + (i / 50) * 0.005),
                                     'radius_m', 200), 100
           FROM generate_series(1, %(n)s) i""",
        """INSERT INTO case_zones (case_id, zone_id)
           SELECT md5('c' || i)::uuid, md5('z' || i)::uuid FROM generate_series(1, %(n)s) i""",
        # 10 alerts per case: k = 0, 1 unresolved (k = 0 an open episode), the rest resolved
        """INSERT INTO alerts (id, case_id, device_id, zone_id, type, severity, status,
                               episode_key, episode_open, started_at, ended_at, evidence,
                               created_at, resolved_at, resolution)
           SELECT md5('al' || i || '-' || k)::uuid, md5('c' || i)::uuid, md5('d' || i)::uuid,
                  md5('z' || i)::uuid, (%(types)s::text[])[1 + k], 'high',
                  CASE WHEN k < 2 THEN 'open' ELSE 'resolved' END, 'bench-' || k, k = 0,
                  now() - k * interval '7 hours' - i * interval '1 second',
                  CASE WHEN k = 0 THEN NULL ELSE now() - k * interval '6 hours' END,
                  '{"max_depth_m": 25}',
                  now() - k * interval '7 hours' - i * interval '1 second',
                  CASE WHEN k < 2 THEN NULL ELSE now() END,
                  CASE WHEN k < 2 THEN NULL ELSE 'false_alarm' END
           FROM generate_series(1, %(n)s) i, generate_series(0, 9) k""",
        """INSERT INTO alert_events (alert_id, at, kind, data)
           SELECT id, created_at, 'opened', '{}' FROM alerts""",
    ]
    for sql in stmts:
        conn.execute(sql, p)
    conn.commit()
    out(f"  generated {n} cases, {officers} officers, {sups} supervisors, {n * 10} alerts")
    t0 = time.monotonic()
    step = max(1, 500_000 // per_device)
    for lo in range(1, n + 1, step):
        hi = min(n, lo + step - 1)
        conn.execute(
            """INSERT INTO fixes (device_id, seq, ts, lat, lon, acc, bat)
               SELECT md5('d' || i)::uuid, k, now() - k * interval '2 minutes',
                      43.2 + (i / 50) * 0.005 + 0.002 * sin(k / 30.0),
                      76.8 + (i %% 50) * 0.01 + 0.002 * cos(k / 30.0), 5 + (k %% 20), 80
               FROM generate_series(%(lo)s::int, %(hi)s::int) i, generate_series(0, %(per)s::int - 1) k""",
            {"lo": lo, "hi": hi, "per": per_device},
        )
        conn.commit()
        out(f"  fixes: devices {lo}-{hi} ({hi * per_device:,} fixes, "
            f"{time.monotonic() - t0:.0f} s)")
    conn.commit()
    # settle the bulk load before measuring: visibility maps and statistics (no autovacuum
    # in the middle of the run) and a checkpoint (no flush of 5M rows' pages competing
    # with the requests' commits)
    t1 = time.monotonic()
    conn.autocommit = True
    conn.execute("VACUUM (ANALYZE)")
    conn.execute("CHECKPOINT")
    conn.autocommit = False
    out(f"  vacuum, analyze and checkpoint: {time.monotonic() - t1:.0f} s")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 2), "p95_ms": round(_pct(ms, 95), 2),
            "p99_ms": round(_pct(ms, 99), 2), "max_ms": round(max(ms), 2),
            "mean_ms": round(statistics.fmean(ms), 2)}


def _week_track(conn: psycopg.Connection[Any]) -> tuple[uuid.UUID, uuid.UUID, datetime]:
    """Case 1's id, its officer and the start of its week of 20,160 fixes (added once:
    laps of a ~2 km ellipse around its zone's centre, crossing the zone's edge)."""
    case_id, officer_id, dev = conn.execute(
        "SELECT c.id, c.officer_id, a.device_id FROM cases c JOIN device_assignments a"
        " ON a.case_id = c.id WHERE c.id = md5('c1')::uuid").fetchone() or (None, None, None)
    assert case_id is not None and officer_id is not None
    row = conn.execute("SELECT min(ts) FROM fixes WHERE device_id = %s AND seq >= %s",
                       (dev, TRACK_SEQ0)).fetchone()
    if row is None or row[0] is None:
        conn.execute(
            """INSERT INTO fixes (device_id, seq, ts, lat, lon, acc)
               SELECT %(dev)s, %(seq0)s + g,
                      date_trunc('day', now()) - interval '17 days' + g * interval '30 seconds',
                      z.lat + 0.008 * sin(g / 480.0 * 2 * pi()) + 0.00005 * sin(g * 7.1),
                      z.lon + 0.012 * cos(g / 480.0 * 2 * pi()) + 0.00005 * cos(g * 3.3),
                      5 + (g %% 20)
               FROM generate_series(0, 20159) AS g, (
                   SELECT (z.circle->'center'->>1)::float8 AS lat,
                          (z.circle->'center'->>0)::float8 AS lon
                   FROM zones z JOIN case_zones cz ON cz.zone_id = z.id
                   WHERE cz.case_id = %(case)s LIMIT 1) AS z""",
            {"dev": dev, "seq0": TRACK_SEQ0, "case": case_id})
        conn.commit()
        row = conn.execute("SELECT min(ts) FROM fixes WHERE device_id = %s AND seq >= %s",
                           (dev, TRACK_SEQ0)).fetchone()
    assert row is not None and row[0] is not None
    return uuid.UUID(str(case_id)), uuid.UUID(str(officer_id)), row[0]


def _serve(url: str, work: Path, secret: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PROBATION_DATABASE_URL": url, "PROBATION_MQTT_URL": "mqtt://127.0.0.1:1",
           "PROBATION_JWT_SECRET": secret, "PROBATION_DATA_DIR": str(work / "data"),
           "PROBATION_LOG_LEVEL": "WARNING"}
    env.pop("PROBATION_ADMIN_PASSWORD", None)
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.harness:app_from_env", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env,
    )


def _track_requests(
    http: Any, case_id: uuid.UUID, week_start: datetime, headers: dict[str, str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Latency of the week's track and of its first hour (the reference), interleaved."""

    def get(until: datetime, points: int) -> float:
        q = (f"/api/v1/cases/{case_id}/track?from={_iso(week_start)}&to={_iso(until)}")
        t = time.perf_counter()
        r = http.get(q, headers=headers)
        dt = (time.perf_counter() - t) * 1000
        if r.status_code != 200 or r.json()["features"][0]["properties"]["points"] != points:
            raise RuntimeError(f"track request failed: {r.status_code} {r.text[:200]}")
        return dt

    week, hour = week_start + timedelta(days=7), week_start + timedelta(hours=1)
    for _ in range(3):
        get(week, 2000), get(hour, 120)
    week_ms, hour_ms = [], []
    for _ in range(TRACK_REQUESTS):
        week_ms.append(get(week, 2000))
        hour_ms.append(get(hour, 120))
    return _summary(week_ms), _summary(hour_ms)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def run_api_bench(cfg: ApiBenchConfig, *, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate the data, start the server, measure; returns the result object."""
    import httpx

    from db.migrate import upgrade
    from db.server import LocalPostgres, free_port
    from probation.settings import Settings
    from probation.users.auth import create_access_token
    from probation.users.models import Role, User

    work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="probation-bench-api-"))
    pg: LocalPostgres | None = None
    server: subprocess.Popen[bytes] | None = None
    try:
        url = cfg.database_url
        if url is None:
            pg = private_postgres(work, database="bench", durable=cfg.durable, settings={
                "shared_buffers": "1GB", "max_wal_size": "8GB", "work_mem": "16MB",
                "checkpoint_timeout": "30min"})
            url = pg.url("bench")
        upgrade(url)
        timescale = has_timescaledb(url)
        with psycopg.connect(libpq_url(url)) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            out(f"API benchmark: {os.cpu_count()} CPUs, PostgreSQL {version[0] if version else '?'} "
                f"{'with' if timescale else 'without'} TimescaleDB "
                f"({'durable' if cfg.durable else 'fsync off'})")
            t0 = time.monotonic()
            existing = conn.execute("SELECT count(*) FROM cases").fetchone()
            if existing and existing[0] == cfg.cases:  # a database of an earlier run: reuse it
                out("  reusing the data of an earlier run (acknowledged alerts reopened)")
                conn.execute("UPDATE alerts SET status = 'open', acknowledged_at = NULL, "
                             "acknowledged_by = NULL WHERE status = 'acknowledged'")
                conn.commit()
            else:
                _generate(conn, cfg, out)
            generate_s = time.monotonic() - t0
            fixes = conn.execute("SELECT count(*) FROM fixes").fetchone()
            n_fixes = int(fixes[0]) if fixes else 0
            generations: dict[uuid.UUID, Any] = dict(
                conn.execute("SELECT id, tokens_valid_after FROM users").fetchall())
            officers = [r[0] for r in conn.execute(
                "SELECT id FROM users WHERE role = 'officer' ORDER BY username")]
            sups = [r[0] for r in conn.execute(
                "SELECT id FROM users WHERE role = 'supervisor' ORDER BY username")]
            admin = conn.execute("SELECT id FROM users WHERE role = 'admin'").fetchone()
            open_alerts = conn.execute(
                "SELECT a.id, c.officer_id FROM alerts a JOIN cases c ON c.id = a.case_id "
                "WHERE a.status = 'open' ORDER BY a.created_at DESC LIMIT %s",
                (cfg.acks + cfg.warmup,)).fetchall()
            track_case, track_officer, week_start = _week_track(conn)
        out(f"  data ready in {generate_s:.0f} s: {cfg.cases} active cases, {n_fixes:,} fixes")

        secret = "bench-" + uuid.uuid4().hex * 2
        s = Settings(jwt_secret=secret)

        def token(uid: uuid.UUID, role: Role) -> str:
            user = User(id=uid, username="b", password_hash="", role=role,
                        tokens_valid_after=generations[uid])
            return create_access_token(user, s)[0]

        tokens = {uid: token(uid, Role.OFFICER) for uid in officers}
        tokens.update({uid: token(uid, Role.SUPERVISOR) for uid in sups})
        assert admin is not None
        tokens[admin[0]] = token(admin[0], Role.ADMIN)

        port = free_port()
        server = _serve(url, work, secret, port)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the API server did not start")
                time.sleep(0.1)

            def caseload_request(i: int) -> tuple[str, float]:
                kind = ("officer", "officer", "officer", "supervisor", "supervisor_next",
                        "admin")[i % 6]
                if kind == "officer":
                    who = officers[i % len(officers)]
                elif kind == "admin":
                    who = admin[0]
                else:
                    who = sups[i % len(sups)]
                h = {"Authorization": f"Bearer {tokens[who]}"}
                q = "/api/v1/cases?limit=50"
                if kind == "supervisor_next":
                    first = http.get(q, headers=h).json()
                    q += f"&cursor={first['next_cursor']}"
                t = time.perf_counter()
                r = http.get(q, headers=h)
                dt = (time.perf_counter() - t) * 1000
                if r.status_code != 200 or len(r.json()["items"]) != 50:
                    raise RuntimeError(f"caseload request failed: {r.status_code} {r.text[:200]}")
                return kind, dt

            def ack_request(alert_id: uuid.UUID, officer: uuid.UUID) -> float:
                t = time.perf_counter()
                r = http.post(f"/api/v1/alerts/{alert_id}/acknowledge",
                              headers={"Authorization": f"Bearer {tokens[officer]}"})
                dt = (time.perf_counter() - t) * 1000
                if r.status_code != 200:
                    raise RuntimeError(f"acknowledge failed: {r.status_code} {r.text[:200]}")
                return dt

            load_before = os.getloadavg()[0]
            for i in range(cfg.warmup):
                caseload_request(i)
            samples = [caseload_request(i) for i in range(cfg.caseload_requests)]
            caseload = _summary([dt for _, dt in samples])
            by_kind = {k: _summary([dt for kk, dt in samples if kk == k])
                       for k in sorted({k for k, _ in samples})}
            out(f"  caseload page of 50: p50 {caseload['p50_ms']} ms, p95 {caseload['p95_ms']} ms, "
                f"p99 {caseload['p99_ms']} ms (target <= {TARGETS['caseload_p99_ms']:.0f} ms)")
            for k, v in by_kind.items():
                out(f"    {k:<16} p50 {v['p50_ms']:>6} ms  p99 {v['p99_ms']:>6} ms  (n={v['n']})")
            for alert_id, officer in open_alerts[: cfg.warmup]:
                ack_request(alert_id, officer)
            acks = _summary([ack_request(a, o) for a, o in open_alerts[cfg.warmup:]])
            out(f"  alert acknowledgement: p50 {acks['p50_ms']} ms, p95 {acks['p95_ms']} ms, "
                f"p99 {acks['p99_ms']} ms (target <= {TARGETS['ack_p99_ms']:.0f} ms)")
            track_week, track_hour = _track_requests(
                http, track_case, week_start, {"Authorization": f"Bearer {tokens[track_officer]}"})
            out(f"  week track (20,160 fixes → 2,000 points): p50 {track_week['p50_ms']} ms, "
                f"p99 {track_week['p99_ms']} ms (target median <= "
                f"{TARGETS['track_week_p50_ms']:.0f} ms); reference, an hour of it (120 fixes): "
                f"p50 {track_hour['p50_ms']} ms")
            load_after = os.getloadavg()[0]
            verify = http.get("/api/v1/audit/verify",
                              headers={"Authorization": f"Bearer {tokens[admin[0]]}"}).json()
        ok = (caseload["p99_ms"] <= TARGETS["caseload_p99_ms"]
              and acks["p99_ms"] <= TARGETS["ack_p99_ms"]
              and track_week["p50_ms"] <= TARGETS["track_week_p50_ms"])
        out(f"  audit chain after the run: {verify}")
        out(f"  machine load average (1 min) before/after the measurements: "
            f"{load_before:.2f}/{load_after:.2f} on {os.cpu_count()} CPUs")
        out(f"  {'PASS' if ok else 'FAIL'}")
        return {
            "benchmark": "api", "cpus": os.cpu_count(), "timescaledb": timescale,
            "durable": cfg.durable, "cases": cfg.cases, "fixes": n_fixes,
            "generate_s": round(generate_s, 1), "config": {k: str(v) if isinstance(v, Path) else v
                                                           for k, v in asdict(cfg).items()
                                                           if k != "database_url"},
            "caseload": {**caseload, "by_kind": by_kind}, "ack": acks,
            "track_week": track_week, "track_hour": track_hour, "targets": TARGETS,
            "audit_verify": verify, "load_avg_1m": [round(load_before, 2), round(load_after, 2)],
            "pass": ok,
        }
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        release_servers(None, pg, work if cfg.work_dir is None else None)
