"""`probation bench ingest --alert-latency`: publish of a violating fix → committed alert.

The worker is the one `probation ingest` runs (`probation.runtime.workers.build_ingestion`),
in this process, against a private PostgreSQL (TimescaleDB when installed) and mosquitto,
at idle. Per repetition a new case with its bracelet and a 150 m exclusion circle; the
bracelet publishes one fix 300 m away, one 50 m inside, then (timed) one fix at the centre
30 s later: the QoS 1 message whose fix confirms the entry (2 fixes over 30 s, see
docs/monitoring-rules.md) and opens the `exclusion_zone_entered` alert.

Measured in the same run, the same way (poll every 2 ms for the row):

* `alert`: publish → the alert committed (the geofence after-store stage's path);
* `stored` (the reference): publish → a fix outside every zone committed (the path
  without an alert: decode, COPY, commit).

Target: alert p99 <= 300 ms. `alert_minus_stored_p50_ms` is what opening the alert adds.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from bench.harness import has_timescaledb, pct, private_postgres, release_servers
from db.engine import libpq_url

TARGETS = {"alert_p99_ms": 300.0}
CENTER = (76.9000, 43.2400)  # lon, lat of the exclusion circle
M_PER_DEG_LAT = 111_320.0


@dataclass(frozen=True, slots=True)
class AlertLatencyConfig:
    repetitions: int = 100
    durable: bool = True
    work_dir: Path | None = None


def _east(m: float) -> tuple[float, float]:
    """lat, lon `m` metres east of CENTER."""
    return CENTER[1], CENTER[0] + m / (M_PER_DEG_LAT * math.cos(math.radians(CENTER[1])))


def _setup_case(conn: psycopg.Connection[Any], serial: str) -> tuple[uuid.UUID, uuid.UUID]:
    """Officer, subject, high-risk case, assigned bracelet, exclusion circle; (case, device)."""
    officer, subject, case, dev, zone = (uuid.uuid4() for _ in range(5))
    conn.execute("INSERT INTO users (id, username, password_hash, role)"
                 " VALUES (%s, %s, 'x', 'officer')", (officer, f"o{officer.hex[:8]}"))
    conn.execute("INSERT INTO subjects (id, iin, full_name, birth_date)"
                 " VALUES (%s, %s, 'S', '1990-01-01')", (subject, str(uuid.uuid4().int)[:12]))
    conn.execute(
        "INSERT INTO cases (id, subject_id, officer_id, court_order_ref, starts_on, ends_on,"
        " risk_level) VALUES (%s, %s, %s, 'B-1', '2020-01-01', '2099-12-31', 'high')",
        (case, subject, officer))
    conn.execute("INSERT INTO devices (id, serial, kind) VALUES (%s, %s, 'bracelet')",
                 (dev, serial))
    conn.execute("INSERT INTO device_assignments (id, device_id, case_id) VALUES (%s, %s, %s)",
                 (uuid.uuid4(), dev, case))
    conn.execute("INSERT INTO zones (id, name, kind, circle) VALUES (%s, 'x', 'exclusion', %s)",
                 (zone, Jsonb({"center": list(CENTER), "radius_m": 150})))
    conn.execute("INSERT INTO case_zones (case_id, zone_id) VALUES (%s, %s)", (case, zone))
    conn.commit()
    return case, dev


def _fix_message(seq: int, ts: datetime, east_m: float) -> bytes:
    lat, lon = _east(east_m)
    iso = ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return orjson.dumps({"fixes": [{"seq": seq, "ts": iso, "lat": lat, "lon": lon, "acc": 8.0}]})


def _wait_row(conn: psycopg.Connection[Any], sql: str, args: tuple[Any, ...]) -> None:
    deadline = time.monotonic() + 15
    while conn.execute(sql, args).fetchone() is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: no row for {sql!r}")
        time.sleep(0.002)


def _summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": round(pct(ms, 0.5), 1), "p99_ms": round(pct(ms, 0.99), 1),
            "max_ms": round(max(ms), 1)}


def run_alert_latency_bench(
    cfg: AlertLatencyConfig, *, out: Callable[[str], None] = print
) -> dict[str, Any]:
    """Start the servers and the worker, measure both paths; returns the result object."""
    from db.migrate import upgrade
    from devices.broker import Mosquitto
    from devices.mqtt import broker_address, mqtt_client
    from probation.runtime.workers import build_ingestion
    from probation.settings import Settings

    work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="probation-bench-alert-"))
    pg = broker = ing = None
    try:
        pg = private_postgres(work, database="bench", durable=cfg.durable, settings={})
        url = pg.url("bench")
        upgrade(url)
        broker = Mosquitto(data_dir=work / "mosquitto")
        broker.start()
        prefix = f"bench{uuid.uuid4().hex[:6]}/v1"
        settings = Settings(database_url=url, mqtt_url=broker.url, mqtt_prefix=prefix,
                            data_dir=work / "data")
        ing = build_ingestion(settings, database_url=url, mqtt_url=broker.url, flush_ms=5)
        ing.start()
        client = mqtt_client(broker.url, f"bench-gw-{uuid.uuid4().hex[:6]}")
        client.connect(*broker_address(broker.url))
        client.loop_start()
        timescale = has_timescaledb(url)
        out(f"alert latency benchmark: {os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f}), "
            f"PostgreSQL {'with' if timescale else 'without'} TimescaleDB "
            f"({'durable' if cfg.durable else 'fsync off'}), {cfg.repetitions} repetitions")
        alert_ms: list[float] = []
        stored_ms: list[float] = []
        base = datetime.now(UTC) - timedelta(hours=3)
        with psycopg.connect(libpq_url(url)) as conn:
            conn.autocommit = True
            for i in range(cfg.repetitions):
                serial = f"LAT-{i}"
                case, dev = _setup_case(conn, serial)
                topic = f"{prefix}/devices/{serial}/fixes"
                t = base + timedelta(minutes=i)

                def publish(seq: int, ts: datetime, east_m: float, topic: str = topic) -> float:
                    t0 = time.perf_counter()
                    client.publish(topic, _fix_message(seq, ts, east_m), qos=1).wait_for_publish(5)
                    return t0

                # The reference: a fix outside the zone, publish → stored.
                t0 = publish(1, t, 300)
                _wait_row(conn, "SELECT 1 FROM fixes WHERE device_id = %s AND seq = 1", (dev,))
                stored_ms.append((time.perf_counter() - t0) * 1000)
                # A first fix inside (50 m deep) opens nothing on its own (2 fixes over 30 s).
                publish(2, t + timedelta(seconds=30), 100)
                _wait_row(conn, "SELECT 1 FROM fixes WHERE device_id = %s AND seq = 2", (dev,))
                # Timed: the centre, 30 s later: the confirming fix opens the alert.
                t0 = publish(3, t + timedelta(seconds=60), 0)
                _wait_row(conn, "SELECT 1 FROM alerts WHERE case_id = %s", (case,))
                alert_ms.append((time.perf_counter() - t0) * 1000)
        client.disconnect()
        client.loop_stop()
        alert, stored = _summary(alert_ms), _summary(stored_ms)
        ok = alert["p99_ms"] <= TARGETS["alert_p99_ms"]
        out(f"  publish → alert committed: p50 {alert['p50_ms']} ms, p99 {alert['p99_ms']} ms "
            f"(target <= {TARGETS['alert_p99_ms']:.0f} ms)")
        out(f"  publish → fix stored (reference, same run): p50 {stored['p50_ms']} ms, "
            f"p99 {stored['p99_ms']} ms")
        out(f"  {'PASS' if ok else 'FAIL'}")
        return {
            "benchmark": "alert_latency", "cpus": os.cpu_count(), "timescaledb": timescale,
            "durable": cfg.durable, "repetitions": cfg.repetitions,
            "alert": alert, "stored": stored,
            "alert_minus_stored_p50_ms": round(alert["p50_ms"] - stored["p50_ms"], 1),
            "targets": TARGETS, "pass": ok,
        }
    finally:
        if ing is not None:
            ing.stop()
        release_servers(broker, pg, work if cfg.work_dir is None else None)
