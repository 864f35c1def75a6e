"""`probation bench ingest --geofence`: the whole ingest worker under soak-like traffic.

The worker is the one `probation ingest` runs (`probation.runtime.workers.build_ingestion`: the
geofence engine, the check-in outcomes, rapid-mode commands), in a child process of its
own, against a private PostgreSQL (TimescaleDB when installed) and mosquitto.

The world is the simulator's (`simulator.people.make_people`), written straight
into the database (the API would take minutes for 5,000 people): per person a subject,
a case, an assigned bracelet, a home inclusion zone with the 22:00-06:00 curfew and an
exclusion zone (circle or polygon). The traffic is one fix per message per device every
60 simulated seconds, devices interleaved, starting at 21:50 Asia/Almaty so that the
curfew starts during the run: most people stay at home, some are out (curfew breaks),
some walk into their exclusion zone (alerts and rapid-mode commands).

Two measurements:

- drain: every message published while the worker is stopped (its persistent session
  keeps them), then the worker started: messages/s from its first receive to its last
  commit. The capacity, without a publisher competing for the CPU.
- live (`--live-rate`): messages published at that rate from this process while the
  worker runs: the rate it keeps up with and the receive → commit lag.

The child reports where the writer's time went (stage timers around the batch, the
after-store stages and the commit).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import psycopg
from psycopg.types.json import Jsonb

from bench.harness import (
    Child,
    drop_session,
    has_timescaledb,
    pct,
    private_postgres,
    release_servers,
    serve_child,
    wait_until,
)
from db.engine import libpq_url
from simulator.publisher import Publisher

log = logging.getLogger(__name__)

M_PER_DEG = 111_320.0
FIX_INTERVAL_S = 60
TZ = ZoneInfo("Asia/Almaty")


@dataclass
class GeofenceBenchConfig:
    people: int = 5_000
    fixes_per_device: int = 20  # drain: messages per device (one fix each)
    live_rate: float = 0.0  # messages/s of the live run (0: no live run)
    live_seconds: float = 30.0
    seed: int = 1
    durable: bool = True
    work_dir: Path | None = None
    worker_kwargs: dict[str, Any] | None = None


# --------------------------------------------------------------------------- the world


@dataclass
class _Mover:
    """Where one device is over the run: at home, out (beyond the home zone), or walking
    from 1.5 km away into its exclusion zone."""

    lat0: float
    lon0: float
    dlat: float  # degrees per fix
    dlon: float
    noise_m: float


def setup_world(url: str, n: int, seed: int, tag: str) -> tuple[list[str], list[_Mover]]:
    """Officers, subjects, cases, bracelets, assignments, home and exclusion zones (COPY)."""
    from simulator.people import make_people
    from simulator.setup import CURFEW_SCHEDULE

    rng = np.random.default_rng(seed)
    people = make_people(n, rng)
    officers = [uuid.uuid4() for _ in range(max(1, math.ceil(n / 100)))]
    serials: list[str] = []
    movers: list[_Mover] = []
    rows: dict[str, list[tuple[Any, ...]]] = {k: [] for k in (
        "subjects", "cases", "devices", "device_assignments", "zones", "case_zones")}
    for p in people:
        sid, cid, did, home, excl = (uuid.uuid4() for _ in range(5))
        serial = f"GB{tag}-{p.index:05d}"
        serials.append(serial)
        rows["subjects"].append((sid, f"{p.index:012d}", f"Bench {p.index}", "1990-01-01"))
        rows["cases"].append((cid, sid, officers[p.index // 100], f"GB-{tag}-{p.index}",
                              "2020-01-01", "2099-12-31", p.risk_level))
        rows["devices"].append((did, serial, "bracelet"))
        rows["device_assignments"].append((uuid.uuid4(), did, cid))
        circle = {"center": [p.home.lon, p.home.lat], "radius_m": p.home_radius_m}
        rows["zones"].append((home, "Home (curfew)", "inclusion", None, Jsonb(circle),
                              Jsonb(CURFEW_SCHEDULE)))
        g = p.exclusion.geojson()
        rows["zones"].append((excl, "Victim's home", "exclusion",
                              Jsonb(g["geometry"]) if "geometry" in g else None,
                              Jsonb(g["circle"]) if "circle" in g else None, None))
        rows["case_zones"] += [(cid, home), (cid, excl)]
        coslat = math.cos(math.radians(p.home.lat))
        r = rng.random()
        if r < 0.05:  # walks into the exclusion zone during the run
            e = p.exclusion
            ang = rng.uniform(0, 2 * math.pi)
            lat0 = e.lat + 1500 * math.sin(ang) / M_PER_DEG
            lon0 = e.lon + 1500 * math.cos(ang) / (M_PER_DEG * coslat)
            movers.append(_Mover(lat0, lon0, (e.lat - lat0) / 12, (e.lon - lon0) / 12, 10))
        elif r < 0.15:  # out, walking away from home (a curfew break once it starts)
            ang = rng.uniform(0, 2 * math.pi)
            lat0 = p.home.lat + 600 * math.sin(ang) / M_PER_DEG
            lon0 = p.home.lon + 600 * math.cos(ang) / (M_PER_DEG * coslat)
            step = 70 / M_PER_DEG  # ~1.2 m/s
            movers.append(_Mover(lat0, lon0, step * math.sin(ang), step * math.cos(ang) / coslat,
                                 15))
        else:  # at home
            movers.append(_Mover(p.home.lat, p.home.lon, 0.0, 0.0, 12))
    cols = {
        "subjects": "id, iin, full_name, birth_date",
        "cases": "id, subject_id, officer_id, court_order_ref, starts_on, ends_on, risk_level",
        "devices": "id, serial, kind",
        "device_assignments": "id, device_id, case_id",
        "zones": "id, name, kind, geometry, circle, schedule",
        "case_zones": "case_id, zone_id",
    }
    with psycopg.connect(libpq_url(url)) as c:
        with c.cursor() as cur, cur.copy("COPY users (id, username, password_hash, role) "
                                         "FROM STDIN") as cp:
            for o in officers:
                cp.write_row((o, f"gb-{tag}-{o.hex[:8]}", "x", "officer"))
        for table in ("subjects", "cases", "devices", "device_assignments", "zones",
                      "case_zones"):
            with c.cursor() as cur, cur.copy(f"COPY {table} ({cols[table]}) FROM STDIN") as cp:
                for row in rows[table]:
                    cp.write_row(row)
    return serials, movers


def sim_start(fixes: int) -> datetime:
    """The latest 21:50 Asia/Almaty from which `fixes` minutes of fixes stay in the past."""
    latest = datetime.now(TZ) - timedelta(seconds=(fixes + 2) * FIX_INTERVAL_S)
    start = latest.replace(hour=21, minute=50, second=0, microsecond=0)
    if start > latest:
        start -= timedelta(days=1)
    return start.astimezone(UTC)


def traffic(
    prefix: str, serials: list[str], movers: list[_Mover], start: datetime, first: int,
    count: int, seed: int,
) -> list[tuple[str, bytes]]:
    """Fixes `first` .. `first + count - 1` of every device, one per message, interleaved."""
    rng = np.random.default_rng(seed + first)
    n = len(serials)
    base_ms = int(start.timestamp() * 1000)
    out: list[tuple[str, bytes]] = []
    topics = [f"{prefix}/devices/{s}/fixes" for s in serials]
    for k in range(first, first + count):
        noise = rng.standard_normal((n, 2)).tolist()
        for d in range(n):
            m = movers[d]
            lat = m.lat0 + m.dlat * min(k, 14) + noise[d][0] * m.noise_m / M_PER_DEG
            lon = m.lon0 + m.dlon * min(k, 14) + noise[d][1] * m.noise_m / M_PER_DEG
            ts = base_ms + k * FIX_INTERVAL_S * 1000 + d * FIX_INTERVAL_S * 1000 // n
            out.append((topics[d], orjson.dumps({"fixes": [{
                "seq": k + 1, "ts": ts, "lat": round(lat, 7), "lon": round(lon, 7),
                "acc": round(5 + m.noise_m, 1), "bat": 90 - k % 50}]})))
    return out


# --------------------------------------------------------------------------- the worker


def _worker_child(conn: Connection, kw: dict[str, Any]) -> None:
    """The real `build_ingestion` worker with stage timers; reports over `conn`."""
    logging.basicConfig(level=logging.WARNING)
    from devices.ingest import CommitInfo
    from probation.runtime.workers import build_ingestion
    from probation.settings import Settings

    settings = Settings(
        database_url=kw["database_url"], mqtt_url=kw["mqtt_url"], mqtt_prefix=kw["prefix"],
        mqtt_client_id=kw["client_id"], data_dir=Path(kw["data_dir"]),
        jwt_secret="bench-" + "x" * 40,
    )
    ing = build_ingestion(settings, database_url=kw["database_url"], mqtt_url=kw["mqtt_url"],
                          log_interval_s=3600, **kw.get("worker_kwargs") or {})
    worker = ing.worker
    lock = threading.Lock()
    state: dict[str, Any] = {}
    timers: dict[str, float] = {}

    def reset() -> None:
        state.update(fixes=0, messages=0, batches=0, first_rx=0.0, last=0.0, lags=[])
        timers.update(write=0.0, geofence=0.0, commit=0.0)

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timers[name] += time.perf_counter() - t0
        return wrapper

    writer = worker.writer
    writer.write = timed("write", writer.write)  # type: ignore[method-assign]
    assert writer.after_store
    for stage in writer.after_store:  # the after-store stages together: "geofence"
        stage.on_batch = timed("geofence", stage.on_batch)  # type: ignore[method-assign]
    chained = worker.on_commit

    def on_commit(info: CommitInfo) -> None:
        if chained is not None:
            chained(info)
        with lock:
            state["fixes"] += info.result.stored.get("fixes", 0)
            state["messages"] += len(info.messages)
            state["batches"] += 1
            timers["commit"] += info.commit_s
            rx = min(m.received_at for m in info.messages)
            if not state["first_rx"] or rx < state["first_rx"]:
                state["first_rx"] = rx
            state["last"] = info.committed_at
            step = max(1, len(info.messages) // 16)
            state["lags"].extend(info.committed_at - m.received_at
                                 for m in info.messages[::step])

    worker.on_commit = on_commit
    reset()
    ing.start()
    conn.send(worker.wait_ready(60))
    serve_child(conn, lock=lock, state=state, reset=reset, stop=ing.stop,
                extra=lambda: {"timers": dict(timers), "queue": worker.queue_depth})


def _publish(mqtt_url: str, msgs: list[tuple[str, bytes]], rate: float = 0.0) -> float:
    with Publisher(mqtt_url) as pub:
        t0 = time.monotonic()
        for k, (topic, payload) in enumerate(msgs):
            if rate:
                delay = t0 + k / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            pub.publish(topic, payload)
        pub.flush(600)
        return len(msgs) / (time.monotonic() - t0)


def _stage_line(rep: dict[str, Any]) -> str:
    t = rep["timers"]
    b = max(1, rep["batches"])
    other = t["write"] - t["geofence"]
    return (f"{rep['batches']:,} batches of {rep['messages'] / b:,.0f} messages; per batch: "
            f"store+inventory {other / b * 1000:.1f} ms, after-store stages "
            f"{t['geofence'] / b * 1000:.1f} ms, write+commit {t['commit'] / b * 1000:.1f} ms")


def run_geofence_bench(cfg: GeofenceBenchConfig, *, out: Any = print) -> dict[str, Any]:
    from db.migrate import upgrade
    from devices.broker import Mosquitto

    work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="probation-bench-gf-"))
    pg = broker = None
    try:
        pg = private_postgres(work, database="bench", durable=cfg.durable, settings={
            "shared_buffers": "512MB", "max_wal_size": "4GB", "checkpoint_timeout": "15min"})
        url = pg.url("bench")
        upgrade(url)
        broker = Mosquitto(data_dir=work / "mosquitto")
        broker.start()
        tag = uuid.uuid4().hex[:6]
        prefix = f"gb{tag}/v1"
        t0 = time.monotonic()
        serials, movers = setup_world(url, cfg.people, cfg.seed, tag)
        timescale = has_timescaledb(url)
        start = sim_start(cfg.fixes_per_device + 2 * max(1, int(cfg.live_rate * cfg.live_seconds
                                                                 / cfg.people) + 1))
        drain_msgs = traffic(prefix, serials, movers, start, 0, cfg.fixes_per_device, cfg.seed)
        load = os.getloadavg()[0]
        out(f"benchmark (geofence): {os.cpu_count()} CPUs (load {load:.1f}), PostgreSQL "
            f"{'with' if timescale else 'without'} TimescaleDB "
            f"({'durable' if cfg.durable else 'fsync off'}); {cfg.people:,} people set up in "
            f"{time.monotonic() - t0:.1f} s; {len(drain_msgs):,} single-fix messages from "
            f"{start.astimezone(TZ):%Y-%m-%d %H:%M} Asia/Almaty")
        kw: dict[str, Any] = {"database_url": url, "mqtt_url": broker.url, "prefix": prefix,
              "client_id": f"gb-ingest-{tag}", "data_dir": str(work / "data"),
              "worker_kwargs": cfg.worker_kwargs or {}}
        Child(_worker_child, kw).close()  # the persistent session
        pub_rate = _publish(broker.url, drain_msgs)
        worker = Child(_worker_child, kw)
        result: dict[str, Any] = {}
        try:
            wait_until(lambda: worker.ask("report")["messages"] >= len(drain_msgs), 1800,
                        "the drain")
            rep = worker.ask("report")
            drain = rep["messages"] / (rep["last"] - rep["first_rx"])
            out(f"  drain  {len(drain_msgs):,} messages of 1 fix (backlog)   {drain:>10,.0f} msgs/s")
            out(f"         {_stage_line(rep)}")
            result.update(drain_msgs_per_s=round(drain), drain_messages=len(drain_msgs),
                          drain_batches=rep["batches"], drain_timers_s={
                              k: round(v, 2) for k, v in rep["timers"].items()},
                          publisher_msgs_per_s=round(pub_rate))
            if cfg.live_rate:
                per_dev = max(1, round(cfg.live_rate * cfg.live_seconds / cfg.people))
                live_msgs = traffic(prefix, serials, movers, start, cfg.fixes_per_device,
                                    per_dev, cfg.seed)
                worker.ask("reset")
                t_pub = time.time()
                sent_rate = _publish(broker.url, live_msgs, cfg.live_rate)
                t_sent = time.time()
                wait_until(lambda: worker.ask("report")["messages"] >= len(live_msgs), 1800,
                            "the live run")
                rep = worker.ask("report")
                lags = worker.ask("lags")
                kept = len(live_msgs) / (rep["last"] - t_pub)
                p50, p95, mx = pct(lags, 0.5), pct(lags, 0.95), max(lags)
                out(f"  live   {len(live_msgs):,} messages published at {sent_rate:,.0f}/s: "
                    f"committed at {kept:,.0f} msgs/s, done {rep['last'] - t_sent:.1f} s after "
                    f"the last publish; receive→commit p50 {p50 * 1000:.0f} ms, p95 "
                    f"{p95 * 1000:.0f} ms, max {mx * 1000:.0f} ms")
                out(f"         {_stage_line(rep)}")
                result.update(live_target_per_s=cfg.live_rate, live_published_per_s=round(sent_rate),
                              live_committed_per_s=round(kept), live_messages=len(live_msgs),
                              live_tail_s=round(rep["last"] - t_sent, 2),
                              live_p50_ms=round(p50 * 1000, 1), live_p95_ms=round(p95 * 1000, 1),
                              live_max_ms=round(mx * 1000, 1))
        finally:
            worker.close()
            drop_session(broker.url, kw["client_id"])
        with psycopg.connect(libpq_url(url)) as c:
            counts = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                      for t in ("fixes", "alerts", "geofence_states", "geofence_snapshots",
                                "commands", "dead_letters")}
        out("  stored: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        result.update(people=cfg.people, stored=counts, timescaledb=timescale,
                      durable=cfg.durable, cpus=os.cpu_count(), load_before=round(load, 2))
        return result
    finally:
        release_servers(broker, pg, work if cfg.work_dir is None else None)
