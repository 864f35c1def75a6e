"""Ingestion under faults: a crashed worker, a database outage, a broker restart, a burst
while the worker is down, two workers sharing a subscription. Nothing lost, nothing twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from db.server import LocalPostgres
from devices.broker import Mosquitto
from devices.ingest import CommitInfo, IngestWorker
from simulator.publisher import Publisher
from tests.integration.test_ingest import add_device, metric, scalar, wait_for

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def stream_messages(
    prefix: str, serials: list[str], per_device: int, per_message: int
) -> tuple[list[tuple[str, bytes]], set[tuple[str, int, datetime, float, float, float]]]:
    """Fix messages round-robin over the devices, and the rows they must become."""
    msgs: list[tuple[str, bytes]] = []
    expected: set[tuple[str, int, datetime, float, float, float]] = set()
    for start in range(0, per_device, per_message):
        for i, s in enumerate(serials):
            items = []
            for q in range(start, min(start + per_message, per_device)):
                ts = BASE + timedelta(seconds=q, milliseconds=i)
                lat, lon, acc = 43.0 + q * 1e-5, 76.0 + i * 1e-4, float(5 + q % 90)
                items.append({"seq": q, "ts": int(ts.timestamp() * 1000), "lat": lat, "lon": lon,
                              "acc": acc, "bat": q % 101})
                expected.add((s, q, ts, lat, lon, acc))
            msgs.append((f"{prefix}/devices/{s}/fixes", orjson.dumps({"fixes": items})))
    return msgs, expected


def stored_rows(url: str) -> list[tuple[str, int, datetime, float, float, float]]:
    with psycopg.connect(url) as c:
        return c.execute(
            "SELECT d.serial, f.seq, f.ts, f.lat, f.lon, f.acc FROM fixes f "
            "JOIN devices d ON d.id = f.device_id"
        ).fetchall()


def assert_exactly(url: str, expected: set[tuple[str, int, datetime, float, float, float]]) -> None:
    rows = stored_rows(url)
    assert len(rows) == len(expected), (len(rows), len(expected))
    assert set(rows) == expected
    assert scalar(url, "SELECT count(*) FROM dead_letters") == 0


def count_fixes(url: str) -> int:
    try:
        return int(scalar(url, "SELECT count(*) FROM fixes"))
    except psycopg.OperationalError:
        return -1


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class BackgroundPublisher(threading.Thread):
    """Publishes messages at about `rate` per second (0: as fast as the window allows)."""

    def __init__(self, pub: Publisher, msgs: list[tuple[str, bytes]], rate: float = 0) -> None:
        super().__init__(daemon=True)
        self.pub, self.msgs, self.rate = pub, msgs, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            t0 = time.monotonic()
            for topic, payload in self.msgs:
                if self.rate:
                    delay = t0 + self.sent / self.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                self.pub.publish(topic, payload)
                self.sent += 1
        except BaseException as e:
            self.error = e


def _ingest_env(database_url: str, mqtt_url: str, prefix: str, client_id: str,
                tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBATION_")}
    env.update(
        PROBATION_DATABASE_URL=database_url, PROBATION_MQTT_URL=mqtt_url,
        PROBATION_MQTT_PREFIX=prefix, PROBATION_MQTT_CLIENT_ID=client_id,
        PROBATION_DATA_DIR=str(tmp / "data"), PROBATION_LOG_LEVEL="INFO",
    )
    return env


def _spawn_ingest(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_file = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "probation.cli", "ingest"], env=env, stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    return proc


def _wait_log(log_path: Path, text: str, count: int = 1, timeout: float = 30) -> None:
    wait_for(lambda: log_path.read_text(errors="replace").count(text) >= count, timeout,
             what=f"{text!r} in the worker log")


def test_kill_9_mid_stream_then_restart_stores_everything_exactly_once(
    database_url: str, mqtt_url: str, mqtt_prefix: str, tmp_path: Path,
) -> None:
    serials = [f"K9-{i}" for i in range(20)]
    for s in serials:
        add_device(database_url, s)
    msgs, expected = stream_messages(mqtt_prefix, serials, per_device=1000, per_message=10)
    env = _ingest_env(database_url, mqtt_url, mqtt_prefix, f"ingest-k9-{uuid.uuid4().hex[:6]}",
                      tmp_path)
    log_path = tmp_path / "ingest.log"
    proc = _spawn_ingest(env, log_path)
    try:
        _wait_log(log_path, "subscribed to")
        with Publisher(mqtt_url) as pub:
            bg = BackgroundPublisher(pub, msgs, rate=400)
            bg.start()
            wait_for(lambda: count_fixes(database_url) >= len(expected) // 4, 60,
                     what="a quarter stored")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            killed_at = count_fixes(database_url)
            assert killed_at < len(expected), "the kill came too late to prove anything"
            time.sleep(0.5)
            proc = _spawn_ingest(env, log_path)
            bg.join(120)
            assert bg.error is None and bg.sent == len(msgs)
            assert pub.flush(60)
        wait_for(lambda: count_fixes(database_url) == len(expected), 120, what="everything stored")
        time.sleep(0.5)  # anything redelivered late must not add rows
        assert_exactly(database_url, expected)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert "Traceback" not in log_path.read_text(errors="replace")


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[tuple[LocalPostgres, str]]:
    """A PostgreSQL of this test's own (stopped and started by it), migrated."""
    from db.migrate import upgrade
    from tests.conftest import _choose_postgres

    pg = _choose_postgres(tmp_path / "pg")
    pg.start()
    with psycopg.connect(pg.url(), autocommit=True) as c:
        c.execute('CREATE DATABASE "outage"')
    url = pg.url("outage")
    upgrade(url)
    try:
        yield pg, url
    finally:
        pg.destroy()


def test_database_outage_of_20s_loses_nothing_and_the_worker_recovers(
    private_postgres: tuple[LocalPostgres, str], mqtt_url: str, mqtt_prefix: str,
) -> None:
    pg, url = private_postgres
    serials = [f"DB-{i}" for i in range(50)]
    for s in serials:
        add_device(url, s)
    msgs, expected = stream_messages(mqtt_prefix, serials, per_device=300, per_message=10)
    worker = IngestWorker(database_url=url, mqtt_url=mqtt_url, prefix=mqtt_prefix,
                          client_id=f"ingest-db-{uuid.uuid4().hex[:6]}", flush_ms=20)
    worker.start()
    max_queue = 0
    try:
        assert worker.wait_ready(20)
        with Publisher(mqtt_url) as pub:
            bg = BackgroundPublisher(pub, msgs, rate=100)  # 1,500 messages over ~15 s...
            bg.start()
            wait_for(lambda: count_fixes(url) >= 2000, 30, what="the stream flowing")
            rss_before = rss_mb()
            db_errors = metric("probation_ingest_db_errors_total")
            pg.stop()  # ...mid-stream: the database is gone for 20 s
            t_down = time.monotonic()
            while time.monotonic() - t_down < 20:
                max_queue = max(max_queue, worker.queue_depth)
                time.sleep(0.2)
            rss_during = rss_mb()
            assert metric("probation_ingest_db_errors_total") > db_errors
            pg.start()
            bg.join(60)
            assert bg.error is None and bg.sent == len(msgs)
            assert pub.flush(60)
        wait_for(lambda: count_fixes(url) == len(expected), 90, what="everything stored")
        time.sleep(0.5)
        assert_exactly(url, expected)
        # Memory stayed flat: the broker kept the backlog, the worker a bounded window.
        assert max_queue <= 1000
        assert rss_during - rss_before < 100, (rss_before, rss_during)
    finally:
        worker.stop()


def test_broker_restart_mid_stream_loses_nothing(
    database_url: str, mqtt_prefix: str, tmp_path: Path,
) -> None:
    broker = Mosquitto(data_dir=tmp_path / "mosquitto")
    broker.start()
    serials = [f"MQ-{i}" for i in range(20)]
    for s in serials:
        add_device(database_url, s)
    msgs, expected = stream_messages(mqtt_prefix, serials, per_device=500, per_message=10)
    worker = IngestWorker(database_url=database_url, mqtt_url=broker.url, prefix=mqtt_prefix,
                          client_id=f"ingest-mq-{uuid.uuid4().hex[:6]}", flush_ms=20)
    worker.start()
    try:
        assert worker.wait_ready(20)
        pub = Publisher(broker.url).connect()
        bg = BackgroundPublisher(pub, msgs, rate=500)
        bg.start()
        wait_for(lambda: count_fixes(database_url) >= 2000, 30, what="the stream flowing")
        broker.stop()  # a clean restart: the broker saves its queues and sessions
        time.sleep(2)
        broker.start()
        bg.join(90)
        assert bg.error is None and bg.sent == len(msgs)
        assert pub.flush(60)
        pub.close()
        wait_for(lambda: count_fixes(database_url) == len(expected), 90, what="everything stored")
        time.sleep(0.5)
        assert_exactly(database_url, expected)
    finally:
        worker.stop()
        broker.stop()


def test_two_workers_on_a_shared_subscription_store_everything_exactly_once(
    database_url: str, mqtt_url: str, mqtt_prefix: str,
) -> None:
    serials = [f"SH-{i}" for i in range(50)]
    for s in serials:
        add_device(database_url, s)
    msgs, expected = stream_messages(mqtt_prefix, serials, per_device=400, per_message=10)
    committed: dict[str, int] = {"a": 0, "b": 0}
    group = f"g{uuid.uuid4().hex[:6]}"
    workers = []
    for name in committed:
        def count(info: CommitInfo, name: str = name) -> None:
            committed[name] += len(info.messages)

        w = IngestWorker(database_url=database_url, mqtt_url=mqtt_url, prefix=mqtt_prefix,
                         client_id=f"ingest-{name}-{group}", share_group=group, protocol="5",
                         flush_ms=20, on_commit=count)
        w.start()
        workers.append(w)
    try:
        for w in workers:
            assert w.wait_ready(20)
        with Publisher(mqtt_url) as pub:
            pub.publish_many(msgs)
            assert pub.flush(60)
        wait_for(lambda: count_fixes(database_url) == len(expected), 90, what="everything stored")
        time.sleep(0.5)
        assert_exactly(database_url, expected)
        assert committed["a"] > 0 and committed["b"] > 0, committed
        assert committed["a"] + committed["b"] == len(msgs)
    finally:
        for w in workers:
            w.stop()


def test_100000_messages_published_while_the_worker_is_stopped_are_all_stored(
    database_url: str, mqtt_url: str, mqtt_prefix: str,
) -> None:
    """The contract's broker requirement, over MQTT 5: a persistent session with an expiry."""
    serials = [f"BU-{i}" for i in range(100)]
    for s in serials:
        add_device(database_url, s)
    msgs, expected = stream_messages(mqtt_prefix, serials, per_device=1000, per_message=1)
    assert len(msgs) == 100_000
    kw: dict[str, Any] = dict(database_url=database_url, mqtt_url=mqtt_url, prefix=mqtt_prefix,
                              client_id=f"ingest-bu-{uuid.uuid4().hex[:6]}", protocol="5")
    first = IngestWorker(**kw)
    first.start()
    assert first.wait_ready(20)  # the session and its subscription exist...
    first.stop()  # ...and outlive the worker
    with Publisher(mqtt_url) as pub:
        pub.publish_many(msgs)
        assert pub.flush(120)
    worker = IngestWorker(**kw)
    worker.start()
    try:
        wait_for(lambda: count_fixes(database_url) == len(expected), 150,
                 what="100,000 fixes stored")
        assert_exactly(database_url, expected)
    finally:
        worker.stop()


def test_a_stalled_writer_does_not_cost_the_broker_connection_and_loses_nothing(
    database_url: str, mqtt_url: str, mqtt_prefix: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """The database blocks the writer for 4x the keep-alive while messages keep arriving
    and the broker sends more than the worker's queue holds (mosquitto's in-flight window
    here is 1,000 over MQTT 3.1.1; the queue 50): the paho network thread must keep
    taking them and answering pings, not block on the full queue until the broker drops
    the connection (it does after 1.5x the keep-alive of silence)."""
    import logging

    caplog.set_level(logging.INFO, logger="devices.ingest")
    serials = [f"KA-{i}" for i in range(20)]
    for s in serials:
        add_device(database_url, s)
    msgs, expected = stream_messages(mqtt_prefix, serials, per_device=60, per_message=2)
    keepalive = 2
    worker = IngestWorker(database_url=database_url, mqtt_url=mqtt_url, prefix=mqtt_prefix,
                          client_id=f"ingest-ka-{uuid.uuid4().hex[:6]}", flush_ms=20,
                          batch_messages=20, queue_messages=50, keepalive=keepalive)
    worker.start()
    max_queue = 0
    try:
        assert worker.wait_ready(20)
        with Publisher(mqtt_url) as pub, psycopg.connect(database_url) as blocker:
            bg = BackgroundPublisher(pub, msgs, rate=60)  # 600 messages over ~10 s
            bg.start()
            wait_for(lambda: count_fixes(database_url) >= 100, 30, what="the stream flowing")
            # The writer's next COPY waits for this lock (reads go on): a database that
            # hangs, not one that fails (no error, no reconnect, nothing acknowledged).
            blocker.execute("LOCK TABLE fixes IN EXCLUSIVE MODE")
            locked_at = count_fixes(database_url)
            t_stall = time.monotonic()
            while time.monotonic() - t_stall < 4 * keepalive:
                max_queue = max(max_queue, worker.queue_depth)
                time.sleep(0.05)
            assert count_fixes(database_url) == locked_at, "the writer was not stalled"
            blocker.rollback()
            bg.join(60)
            assert bg.error is None and bg.sent == len(msgs)
            assert pub.flush(60)
        wait_for(lambda: count_fixes(database_url) == len(expected), 60, what="everything stored")
        time.sleep(0.5)
        assert_exactly(database_url, expected)
        assert locked_at < len(expected)
        assert max_queue > 50, "the broker never sent more than the queue holds: proves nothing"
        texts = [r.getMessage() for r in caplog.records if r.name == "devices.ingest"]
        assert not [t for t in texts if t.startswith("disconnected from the broker")], texts
        assert len([t for t in texts if t.startswith("connected to the broker")]) == 1, texts
    finally:
        worker.stop()
