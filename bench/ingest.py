"""`probation bench ingest`: the ingest pipeline's throughput and latency through a real broker."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg

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
from devices.mqtt import Link
from simulator.publisher import Publisher

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- benchmark

FIXES_PER_MESSAGE = 50
DEVICES = 1000

Row = tuple[int, int, int, float, float, float, int]


def _fix_rows(n: int, *, devices: int, base_ms: int) -> list[Row]:
    """n fixes round-robin over `devices`: (device index, seq, ts ms, lat, lon, acc, bat)."""
    out = []
    for k in range(n):
        d, q = k % devices, k // devices
        out.append((d, q, base_ms + q * 1000 + d, 43.2 + (k % 997) * 1e-5,
                    76.9 + (k % 991) * 1e-5, float(3 + k % 40), k % 101))
    return out


def _messages(
    rows: list[Row], *, serials: list[str], prefix: str, per_message: int,
) -> list[tuple[str, bytes]]:
    """Group rows per device into messages of `per_message` fixes, devices interleaved."""
    by_dev: dict[int, list[dict[str, Any]]] = {}
    for d, q, ts, lat, lon, acc, bat in rows:
        by_dev.setdefault(d, []).append(
            {"seq": q, "ts": ts, "lat": lat, "lon": lon, "acc": acc, "bat": bat}
        )
    per_dev = [
        [(f"{prefix}/devices/{serials[d]}/fixes", items[i:i + per_message])
         for i in range(0, len(items), per_message)]
        for d, items in sorted(by_dev.items())
    ]
    chunks: list[tuple[str, bytes]] = []
    for i in range(max(len(p) for p in per_dev)):
        for p in per_dev:
            if i < len(p):
                topic, items = p[i]
                chunks.append((topic, orjson.dumps({"fixes": items})))
    return chunks


def _worker_child(conn: Connection, kw: dict[str, Any]) -> None:
    """A child process running the real IngestWorker; reports its commits over `conn`."""
    logging.basicConfig(level=logging.WARNING)
    from devices.ingest import CommitInfo, IngestWorker

    lock = threading.Lock()
    state: dict[str, Any] = {}

    def reset() -> None:
        state.update(fixes=0, messages=0, first_rx=0.0, last=0.0, lags=[])

    def on_commit(info: CommitInfo) -> None:
        with lock:
            state["fixes"] += info.result.stored.get("fixes", 0)
            state["messages"] += len(info.messages)
            rx = min(m.received_at for m in info.messages)
            if not state["first_rx"] or rx < state["first_rx"]:
                state["first_rx"] = rx
            state["last"] = info.committed_at
            state["lags"].extend(info.committed_at - ts for ts in info.result.newest_fix_ts)

    reset()
    worker = IngestWorker(**kw, log_interval_s=3600, on_commit=on_commit)
    worker.start()
    conn.send(worker.wait_ready(60))
    serve_child(conn, lock=lock, state=state, reset=reset, stop=worker.stop)


def _subscriber_child(conn: Connection, mqtt_url: str, topic_filter: str, client_id: str) -> None:
    """A trivial QoS 1 subscriber on a persistent session (paho acknowledges): counts."""
    lock = threading.Lock()
    state = {"count": 0, "first": 0.0, "last": 0.0}
    subscribed = threading.Event()

    def on_message(c: mqtt.Client, u: Any, m: mqtt.MQTTMessage) -> None:
        now = time.time()
        with lock:
            state["count"] += 1
            if not state["first"]:
                state["first"] = now
            state["last"] = now

    link = Link(mqtt_url, client_id, name="bench-subscriber", clean=False, keepalive=60)
    link.client.on_message = on_message
    link.client.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
    link.subscribe(topic_filter, qos=1)
    link.start(20)
    conn.send(subscribed.wait(20))
    while True:
        cmd = conn.recv()
        if cmd == "report":
            with lock:
                conn.send(dict(state))
        else:
            link.stop()
            conn.send(True)
            return


def _publish(mqtt_url: str, msgs: list[tuple[str, bytes]]) -> float:
    """Publish everything (capped in flight); returns the start time."""
    with Publisher(mqtt_url) as pub:
        t0 = time.time()
        pub.publish_many(msgs)
        pub.flush(600)
    return t0


@dataclass
class BenchConfig:
    database_url: str | None = None
    mqtt_url: str | None = None
    batched_fixes: int = 1_000_000
    single_messages: int = 100_000
    latency_rate: float = 2000.0
    latency_seconds: float = 20.0
    devices: int = DEVICES
    durable: bool = True
    work_dir: Path | None = None


class _Bench:
    def __init__(self, url: str, mqtt_url: str, prefix: str) -> None:
        self.url, self.mqtt_url, self.prefix = url, mqtt_url, prefix

    def truncate(self) -> None:
        with psycopg.connect(libpq_url(self.url), autocommit=True) as c:
            c.execute("TRUNCATE fixes")
            c.execute("CHECKPOINT")

    def copy_ceiling(self, ids: list[uuid.UUID], rows: list[Row], chunk: int = 10_000) -> float:
        """Raw binary COPY of the rows straight into the `fixes` hypertable (commit per chunk,
        best of two passes)."""
        from devices import service

        self.truncate()
        recs = [
            (ids[d], q, datetime.fromtimestamp(ts / 1000, UTC), lat, lon, acc, "gps", None, None,
             bat)
            for d, q, ts, lat, lon, acc, bat in rows
        ]
        best = 0.0
        for _ in range(2):  # the first pass also warms up (WAL segments, buffers, chunks)
            with psycopg.connect(libpq_url(self.url)) as conn:
                t0 = time.perf_counter()
                for i in range(0, len(recs), chunk):
                    service.copy_rows(conn, table="fixes", columns=service.FIX_COLUMNS,
                                      types=service.FIX_TYPES, rows=recs[i:i + chunk])
                    conn.commit()
                best = max(best, len(rows) / (time.perf_counter() - t0))
            self.truncate()
        return best

    def broker_drain(self, msgs: list[tuple[str, bytes]]) -> tuple[float, float]:
        """Messages/s the broker delivers from a backlog to a trivial persistent subscriber,
        and messages/s our publisher got accepted by the broker while filling it."""
        cid = f"bench-sub-{uuid.uuid4().hex[:8]}"
        topic_filter = f"{self.prefix}/devices/#"
        Child(_subscriber_child, self.mqtt_url, topic_filter, cid).close()  # the session
        t0 = _publish(self.mqtt_url, msgs)
        published = len(msgs) / (time.time() - t0)
        sub = Child(_subscriber_child, self.mqtt_url, topic_filter, cid)
        try:
            wait_until(lambda: sub.ask("report")["count"] >= len(msgs), 600, "broker delivery")
            rep = sub.ask("report")
        finally:
            sub.close()
            drop_session(self.mqtt_url, cid)
        return float(len(msgs) / (rep["last"] - rep["first"])), published

    def _worker(self, client_id: str) -> Child:
        return Child(_worker_child, {
            "database_url": self.url, "mqtt_url": self.mqtt_url, "prefix": self.prefix,
            "client_id": client_id,
        })

    def pipeline_drain(self, msgs: list[tuple[str, bytes]], fixes: int) -> float:
        """Fixes/s the worker commits from a backlog (published while it was stopped)."""
        self.truncate()
        cid = f"bench-ingest-{uuid.uuid4().hex[:8]}"
        self._worker(cid).close()  # the persistent session
        _publish(self.mqtt_url, msgs)
        worker = self._worker(cid)
        try:
            wait_until(lambda: worker.ask("report")["fixes"] >= fixes, 900, "the pipeline")
            rep = worker.ask("report")
        finally:
            worker.close()
            drop_session(self.mqtt_url, cid)
        return fixes / (rep["last"] - rep["first_rx"])

    def pipeline_live(self, worker: Child, msgs: list[tuple[str, bytes]], fixes: int) -> float:
        """Fixes/s from the first publish to the commit of the last fix, publishing live."""
        self.truncate()
        worker.ask("reset")
        t0 = _publish(self.mqtt_url, msgs)
        wait_until(lambda: worker.ask("report")["fixes"] >= fixes, 900, "the pipeline")
        return fixes / (worker.ask("report")["last"] - t0)

    def latency(self, worker: Child, serials: list[str], rate: float, seconds: float) -> list[float]:
        """Steady `rate` single-fix messages/s; each fix's ts is its publish time (ms)."""
        worker.ask("reset")
        n = int(rate * seconds)
        seqs = dict.fromkeys(serials, 10_000_000)
        with Publisher(self.mqtt_url) as pub:
            t0 = time.monotonic()
            for k in range(n):
                delay = t0 + k / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                s = serials[k % len(serials)]
                seqs[s] += 1
                ts = int(time.time() * 1000)
                pub.publish(f"{self.prefix}/devices/{s}/fixes", orjson.dumps({"fixes": [
                    {"seq": seqs[s], "ts": ts, "lat": 43.25, "lon": 76.95, "acc": 10.0}]}))
            pub.flush(60)
        wait_until(lambda: worker.ask("report")["messages"] >= n, 120, "latency run")
        lags: list[float] = worker.ask("lags")
        return lags[int(rate):]  # without the first second (warm-up)


def run_ingest_bench(cfg: BenchConfig, *, out: Any = print) -> dict[str, Any]:
    """Run the whole benchmark and return the flat result object."""
    import os
    import tempfile

    from db.migrate import upgrade
    from devices.broker import Mosquitto

    work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="probation-bench-"))
    pg = None
    broker: Mosquitto | None = None
    try:
        if cfg.database_url is None:
            pg = private_postgres(work, database="bench", durable=cfg.durable, settings={
                "shared_buffers": "512MB", "max_wal_size": "4GB", "checkpoint_timeout": "15min"})
            url = pg.url("bench")
        else:
            url = cfg.database_url
        upgrade(url)
        if cfg.mqtt_url is None:
            broker = Mosquitto(data_dir=work / "mosquitto")
            broker.start()
            mqtt_url = broker.url
        else:
            mqtt_url = cfg.mqtt_url
        bench = _Bench(url, mqtt_url, f"bench{uuid.uuid4().hex[:6]}/v1")
        serials = [f"BENCH-{i:06d}" for i in range(cfg.devices)]
        ids = [uuid.uuid4() for _ in serials]
        with psycopg.connect(libpq_url(url)) as c, c.cursor() as cur, \
                cur.copy("COPY devices (id, serial, kind) FROM STDIN") as cp:
            for i, s in zip(ids, serials, strict=True):
                cp.write_row((i, s, "bracelet"))
        timescale = has_timescaledb(url)
        base_ms = int((time.time() - 3600) * 1000)
        rows = _fix_rows(cfg.batched_fixes, devices=cfg.devices, base_ms=base_ms)
        batched = _messages(rows, serials=serials, prefix=bench.prefix,
                            per_message=FIXES_PER_MESSAGE)
        single = _messages(_fix_rows(cfg.single_messages, devices=cfg.devices, base_ms=base_ms),
                           serials=serials, prefix=bench.prefix, per_message=1)
        load = os.getloadavg()[0]
        out(f"benchmark: {os.cpu_count()} CPUs (load {load:.1f}), PostgreSQL "
            f"{'with' if timescale else 'without'} TimescaleDB "
            f"({'durable' if cfg.durable else 'fsync off'}), {cfg.devices} devices, "
            f"{len(batched):,} messages of {FIXES_PER_MESSAGE} fixes, {len(single):,} of 1 fix")

        copy_rate = bench.copy_ceiling(ids, rows)
        out(f"  ceiling  raw COPY into the fixes hypertable      {copy_rate:>10,.0f} fixes/s")
        broker_batched, _ = bench.broker_drain(batched)
        broker_batched *= FIXES_PER_MESSAGE
        out(f"  ceiling  broker → trivial subscriber, batched    {broker_batched:>10,.0f} fixes/s")
        broker_single, pub_single = bench.broker_drain(single)
        out(f"  ceiling  broker → trivial subscriber, 1 fix/msg  {broker_single:>10,.0f} msgs/s")
        out(f"  (our Python publisher alone, 1 fix/msg          {pub_single:>10,.0f} msgs/s)")
        fps = bench.pipeline_drain(batched, cfg.batched_fixes)
        out(f"  pipeline {FIXES_PER_MESSAGE} fixes per message (backlog)        {fps:>10,.0f} fixes/s")
        mps = bench.pipeline_drain(single, cfg.single_messages)
        out(f"  pipeline 1 fix per message (backlog)            {mps:>10,.0f} msgs/s")
        worker = bench._worker(f"bench-ingest-{uuid.uuid4().hex[:8]}")
        try:
            fps_live = bench.pipeline_live(worker, batched, cfg.batched_fixes)
            out(f"  pipeline {FIXES_PER_MESSAGE} fixes per message (live publisher) {fps_live:>10,.0f} fixes/s")
            mps_live = bench.pipeline_live(worker, single, cfg.single_messages)
            out(f"  pipeline 1 fix per message (live publisher)     {mps_live:>10,.0f} msgs/s")
            lags = bench.latency(worker, serials, cfg.latency_rate, cfg.latency_seconds)
        finally:
            worker.close()
        p50, p99, mx = (pct(lags, 0.50) * 1000, pct(lags, 0.99) * 1000, max(lags) * 1000)
        out(f"  latency  publish→commit at {cfg.latency_rate:,.0f} fixes/s (1 fix/msg): "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {mx:.1f} ms ({len(lags):,} messages)")
        ceiling = min(copy_rate, broker_batched)
        result: dict[str, Any] = {
            "batched_fixes_per_s": round(fps),
            "single_msgs_per_s": round(mps),
            "p50_commit_ms": round(p50, 1),
            "p99_commit_ms": round(p99, 1),
            "max_commit_ms": round(mx, 1),
            "ceiling_fixes_per_s": round(ceiling),
            "ratio_to_ceiling": round(fps / ceiling, 3),
            "copy_ceiling_fixes_per_s": round(copy_rate),
            "broker_ceiling_fixes_per_s": round(broker_batched),
            "broker_ceiling_single_msgs_per_s": round(broker_single),
            "single_ratio_to_broker": round(mps / broker_single, 3),
            "publisher_single_msgs_per_s": round(pub_single),
            "batched_live_fixes_per_s": round(fps_live),
            "single_live_msgs_per_s": round(mps_live),
            "fixes_per_message": FIXES_PER_MESSAGE,
            "batched_fixes": cfg.batched_fixes,
            "single_messages": cfg.single_messages,
            "latency_rate_per_s": cfg.latency_rate,
            "latency_messages": len(lags),
            "devices": cfg.devices,
            "timescaledb": timescale,
            "durable": cfg.durable,
            "cpus": os.cpu_count(),
            "load_before": round(load, 2),
        }
        out(f"  pipeline / ceiling (the lower of COPY and broker): "
            f"{result['ratio_to_ceiling']:.0%}")
        return result
    finally:
        release_servers(broker, pg, work if cfg.work_dir is None else None)
