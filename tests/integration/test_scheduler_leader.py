"""Two `probation scheduler` processes against one database: one leads, one stands by;
each job runs once per due time; kill -9 the leader and the other takes over (< 30 s)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from db.engine import connect
from tests.integration.scheduler_world import World

JOBS = {"audit_anchor", "silence", "curfew", "escalation", "checkins", "checkin_plan", "downlink_resend",
        "notify", "retention"}


def _wait(what: str, cond: Callable[[], Any], timeout: float) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def spawn(database_url: str, mqtt_url: str, mqtt_prefix: str,
          tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "PROBATION_DATABASE_URL": database_url, "PROBATION_MQTT_URL": mqtt_url,
        "PROBATION_MQTT_PREFIX": mqtt_prefix, "PROBATION_DATA_DIR": str(tmp_path / "data"),
        "PROBATION_SCHEDULER_INTERVAL_S": "1", "PROBATION_NOTIFY_INTERVAL_S": "1",
        "PROBATION_SCHEDULER_LOCK_RETRY_S": "1", "PROBATION_LOG_LEVEL": "INFO",
    }

    def start(name: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
        p = subprocess.Popen([sys.executable, "-m", "probation.cli", "scheduler"], env=env,
                             stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        yield start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


def _subscribe(mqtt_url: str, topic: str, got: list[bytes]) -> Any:
    from devices.mqtt import broker_address, mqtt_client

    ready = threading.Event()
    c = mqtt_client(mqtt_url, f"t-{uuid.uuid4().hex[:8]}")

    def on_connect(cl: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
        cl.subscribe(topic, qos=1)
        ready.set()

    def on_message(cl: Any, u: Any, m: Any) -> None:
        got.append(bytes(m.payload))

    c.on_connect = on_connect
    c.on_message = on_message
    c.connect(*broker_address(mqtt_url))
    c.loop_start()
    assert ready.wait(10)
    time.sleep(0.3)
    return c


def test_two_schedulers_one_leader_and_takeover(
    database_url: str, mqtt_url: str, mqtt_prefix: str,
    spawn: Callable[[str], subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    host = socket.gethostname()
    with connect(database_url, autocommit=True) as conn:
        # a check-in request due now: the leader's check-ins job sends it over MQTT
        world = World(conn)
        case = world.case()
        phone = world.device(kind="phone")
        world.assign(phone, case, datetime.now(UTC) - timedelta(days=1))
        rid = uuid.uuid4()
        conn.execute(
            "INSERT INTO checkin_requests (id, case_id, source, due_at, deadline)"
            " VALUES (%s, %s, 'officer', now(), now() + interval '10 minutes')", (rid, case))
        got: list[bytes] = []
        sub = _subscribe(mqtt_url, f"{mqtt_prefix}/devices/{world.serial(phone)}/commands", got)

        def runs(pid: int) -> int:
            return conn.execute("SELECT count(*) FROM scheduler_runs WHERE runner = %s",
                                (f"{host}:{pid}",)).fetchone()[0]  # type: ignore[index]

        a = spawn("a")
        _wait("the first scheduler to run jobs", lambda: runs(a.pid) >= 3, 30)
        _wait("the request_checkin command", lambda: got, 20)
        sub.loop_stop()
        cmd = orjson.loads(got[0])
        assert (cmd["id"], cmd["type"]) == (str(rid), "request_checkin")
        assert 590 <= cmd["params"]["deadline_s"] <= 600
        b = spawn("b")
        # b is up (it logs its standby start) but runs nothing while a leads
        _wait("the second scheduler to start", lambda: b"standby" in
              (tmp_path / "b.log").read_bytes(), 20)
        time.sleep(3)
        assert runs(b.pid) == 0, (tmp_path / "b.log").read_text()
        stored: dict[str, Any] = dict(conn.execute(
            "SELECT id, next_run_time FROM apscheduler_jobs").fetchall())
        assert set(stored) == JOBS

        # each job ran once per due time, consecutive seconds for the 1 s jobs
        dues = [r[0] for r in conn.execute(
            "SELECT due_at FROM scheduler_runs WHERE job_id = 'silence' ORDER BY due_at")]
        assert len(dues) == len(set(dues)) >= 3
        assert all(d.microsecond == 0 for d in dues)

        a.send_signal(signal.SIGKILL)
        a.wait(10)
        killed = time.monotonic()
        _wait("the standby to take over", lambda: runs(b.pid) >= 1, 30)
        takeover = time.monotonic() - killed
        assert takeover < 30, takeover
        # a's jobs and their stored next run times carried over (unchanged jobs kept)
        after: dict[str, Any] = dict(conn.execute(
            "SELECT id, next_run_time FROM apscheduler_jobs").fetchall())
        assert after["retention"] == stored["retention"]
        _wait("b to run several times", lambda: runs(b.pid) >= 8, 20)

        dup = conn.execute(
            "SELECT job_id, due_at, count(*) FROM scheduler_runs GROUP BY 1, 2 HAVING count(*) > 1"
        ).fetchall()
        assert dup == []
        by_runner: dict[str, int] = dict(conn.execute(
            "SELECT runner, count(DISTINCT job_id) FROM scheduler_runs GROUP BY 1").fetchall())
        assert set(by_runner) == {f"{host}:{a.pid}", f"{host}:{b.pid}"}
        failed = conn.execute(
            "SELECT count(*) FROM scheduler_runs WHERE finished_at IS NULL AND runner = %s",
            (f"{host}:{b.pid}",)).fetchone()[0]  # type: ignore[index]
        assert failed <= 1  # at most the run in progress right now

    b.send_signal(signal.SIGTERM)
    assert b.wait(20) == 0
    log = (tmp_path / "b.log").read_text()
    assert "is the leader" in log and "Traceback" not in log, log
    print(f"takeover after kill -9: {takeover:.1f} s")


def test_lost_lock_connection_steps_down(database_url: str) -> None:
    """If the leader's lock session is killed (network loss), it stops running jobs."""
    from probation.runtime.scheduler import LEADER_KEY, SchedulerService
    from probation.settings import Settings

    svc = SchedulerService(
        database_url=database_url,
        settings=Settings(database_url=database_url, scheduler_lock_retry_s=0.5,
                          scheduler_interval_s=3600),
        mqtt_url="", jobs=["silence"],
    )
    svc.start()
    try:
        _wait("leadership", svc.leader.is_set, 15)
        with psycopg.connect(database_url, autocommit=True) as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid::bigint = %s AND objid::bigint = %s AND granted",
                (LEADER_KEY >> 32, LEADER_KEY & 0xFFFFFFFF))
        # it notices, steps down and (no other process competes) leads again
        _wait("a second term", lambda: svc.terms == 2 and svc.leader.is_set(), 15)
    finally:
        svc.stop()
