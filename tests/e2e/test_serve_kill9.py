"""kill -9 of `probation serve` mid-stream (issue 14, item 10): nothing a device published at
QoS 1 is lost or stored twice.

The device is a real paho client with its own broker credentials (issued by the API) and
a persistent session; it keeps publishing while `serve` is dead, and resends whatever the
broker did not acknowledge. The embedded broker and database run in their own sessions,
so the kill takes `serve` (API, ingest worker, scheduler: its whole process group) and the
restarted `serve` adopts them: the broker kept what it acknowledged and redelivers what
the dead worker had not acknowledged (only after commit), the database deduplicates.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from db.server import LocalPostgres, embedded_bin_dir
from tests.integration.test_ingest_faults import assert_exactly, stream_messages
from tests.security.brokers import private_dir, stable_port

PROBATION = str(Path(sys.executable).parent / "probation")


def _start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([PROBATION, "serve", "--port", str(port)], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"serve not ready in 90 s:\n{log.read_text()[-3000:]}")


class Device:
    """A bracelet: QoS 1, persistent session, tracks which publishes the broker acked."""

    def __init__(self, port: int, serial: str, password: str) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{serial}",
                             clean_session=False)
        self.c.username_pw_set(serial, password)
        self.c.max_inflight_messages_set(100)
        self.c.reconnect_delay_set(min_delay=1, max_delay=2)
        self.ok = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: self.ok.set() if not rc.is_failure else None
        self.disconnects = 0

        def on_disconnect(*args: Any) -> None:
            self.disconnects += 1

        self.c.on_disconnect = on_disconnect
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ok.wait(10), "the device's credentials were refused"
        self.sent: list[tuple[str, bytes, Any]] = []

    def publish(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, payload, self.c.publish(topic, payload, qos=1)))

    def acked(self) -> int:
        return sum(1 for *_, info in self.sent if _acked(info))

    def resend_unacknowledged(self, timeout: float = 20) -> int:
        """The device side of "nothing lost": what the broker did not acknowledge in time
        (or what could not even be sent while it was away) is published again until it is
        acknowledged (the backend drops the duplicates)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.acked() < len(self.sent):
            time.sleep(0.1)
        again = [(t, p) for t, p, info in self.sent if not _acked(info)]
        for t, p in again:
            while True:
                assert time.monotonic() < deadline + 60, "the broker never took a resend"
                if _acked(info := self.c.publish(t, p, qos=1)):
                    break
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(5)
                if _acked(info):
                    break
                time.sleep(0.5)
        return len(again)

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _acked(info: Any) -> bool:
    try:
        return bool(info.is_published())
    except (RuntimeError, ValueError):  # published while disconnected: never acknowledged
        return False


def _fixes(url: str, serial: str) -> int:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT count(*) FROM fixes f JOIN devices d ON d.id = f.device_id "
                        "WHERE d.serial = %s", (serial,)).fetchone()
    return int(row[0]) if row else 0


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBATION_")}
    env.update(PROBATION_DATA_DIR=str(tmp / "data"), PROBATION_ADMIN_PASSWORD="admin-pw-1",
               PROBATION_MQTT_PORT=str(stable_port()), PROBATION_LOG_LEVEL="INFO",
               # about durability: the admin's second factor is tested in tests/security
               PROBATION_TOTP_REQUIRED_ROLES="[]")
    return env


def _register(tmp: Path, api_port: int, log: Path, serial: str) -> tuple[str, int, str]:
    """The device's password (from the API), the broker's port, the database URL."""
    base = f"http://127.0.0.1:{api_port}/api/v1"
    token = httpx.post(f"{base}/auth/token", data={"username": "admin",
                                                   "password": "admin-pw-1"}).json()
    reg = httpx.post(f"{base}/devices", json={"serial": serial, "kind": "bracelet"},
                     headers={"Authorization": f"Bearer {token['access_token']}"})
    assert reg.status_code == 201, reg.text
    mqtt_port = int((tmp / "data" / "mosquitto" / "port").read_text())
    return reg.json()["credentials"]["mqtt_password"], mqtt_port, _db_url(tmp, log)


def _db_url(tmp: Path, log: Path) -> str:
    """The database URL the last start printed (its port may change across restarts)."""
    db_pw = (tmp / "data" / "postgres" / "password").read_text().strip()
    return re.findall(r"Database: (postgresql://\S+)", log.read_text())[-1].replace(
        "***", db_pw)


def test_kill9_of_serve_mid_stream_loses_and_duplicates_nothing() -> None:
    with private_dir() as tmp:
        env = _env(tmp)
        api_port, log = stable_port(), tmp / "serve.log"
        proc = _start(env, api_port, log)
        password, mqtt_port, db_url = _register(tmp, api_port, log, "K9-1")
        msgs, expected = stream_messages("pm/v1", ["K9-1"], per_device=4000, per_message=10)
        device = Device(mqtt_port, "K9-1", password)
        killed_at = restarted = None
        try:
            for i, (topic, payload) in enumerate(msgs):
                device.publish(topic, payload)
                time.sleep(0.01)
                if killed_at is None and i >= 100 and _fixes(db_url, "K9-1") > 0:
                    os.killpg(proc.pid, signal.SIGKILL)  # serve mid-stream, its whole group
                    proc.wait(10)
                    killed_at = i
            stored_when_killed = _fixes(db_url, "K9-1")
            assert killed_at is not None and 0 < stored_when_killed < len(expected)
            proc = restarted = _start(env, api_port, log)
            db_url = _db_url(tmp, log)
            resent = device.resend_unacknowledged()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _fixes(db_url, "K9-1") < len(expected):
                time.sleep(0.2)
            assert_exactly(db_url, set(expected))
            print(f"kill -9 after message {killed_at} of {len(msgs)} ({stored_when_killed} of "
                  f"{len(expected)} fixes stored); device resent {resent}; all "
                  f"{len(expected)} stored once after the restart")
        finally:
            device.stop()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
            # the restarted serve adopted the database the killed one started, and stopped it
            pg = LocalPostgres(bin_dir=embedded_bin_dir(), data_dir=tmp / "data" / "postgres")
            left_running = pg.running()
            pg.stop()
            assert not left_running
            assert restarted is not None, log.read_text()[-3000:]
        assert "adopted" in log.read_text()  # the same broker, with what it acknowledged


def test_restart_of_serve_and_its_broker_mid_stream_loses_and_duplicates_nothing() -> None:
    """A clean stop of `serve` stops its broker too (which saves its store): the device,
    cut off, resends what was not acknowledged; the broker's store brings back what it
    had acknowledged but the worker had not taken."""
    with private_dir() as tmp:
        env = _env(tmp)
        api_port, log = stable_port(), tmp / "serve.log"
        proc = _start(env, api_port, log)
        password, mqtt_port, db_url = _register(tmp, api_port, log, "RS-1")
        msgs, expected = stream_messages("pm/v1", ["RS-1"], per_device=3000, per_message=10)
        device = Device(mqtt_port, "RS-1", password)
        try:
            stopped_at, restarted = None, False
            for i, (topic, payload) in enumerate(msgs):
                device.publish(topic, payload)
                time.sleep(0.01)
                if stopped_at is None and i >= 100:
                    proc.send_signal(signal.SIGTERM)
                    assert proc.wait(30) == 0
                    stopped_at = i
                if stopped_at is not None and not restarted and i >= stopped_at + 50:
                    proc = _start(env, api_port, log)
                    db_url = _db_url(tmp, log)
                    restarted = True
            assert int((tmp / "data" / "mosquitto" / "port").read_text()) == mqtt_port
            assert device.disconnects >= 1  # the broker went away with serve
            resent = device.resend_unacknowledged(timeout=30)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _fixes(db_url, "RS-1") < len(expected):
                time.sleep(0.2)
            assert_exactly(db_url, set(expected))
            print(f"serve and its broker stopped after message {stopped_at} of {len(msgs)}; "
                  f"the device resent {resent}; all {len(expected)} stored once")
        finally:
            device.stop()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
