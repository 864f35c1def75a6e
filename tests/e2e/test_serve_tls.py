"""`probation serve --tls-cert --tls-key` with a pilot's local CA (scripts/make-local-ca.sh):
HTTPS for the API, MQTT over TLS for devices with the credentials the API issued, plain
MQTT on loopback only, and the same broker ports after a restart."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.security.brokers import ROOT, private_dir, stable_port

PROBATION = str(Path(sys.executable).parent / "probation")


def _start(env: dict[str, str], port: int, log: Path, ca: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [PROBATION, "serve", "--port", str(port), "--tls-cert", env["CERT"], "--tls-key",
         env["KEY"]], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"https://localhost:{port}/ready", verify=ssl.create_default_context(cafile=str(ca)),
                         timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(log.read_text()[-3000:])


def _publish_fix_over_tls(port: int, ca: Path, serial: str, password: str, seq: int) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tls-{serial}-{seq}")
    c.username_pw_set(serial, password)
    c.tls_set(ca_certs=str(ca))
    ok = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: ok.set() if not rc.is_failure else None
    c.connect("localhost", port)
    c.loop_start()
    try:
        assert ok.wait(10), "refused over TLS"
        payload = orjson.dumps({"fixes": [{"seq": seq, "ts": int(time.time() * 1000),
                                           "lat": 43.2, "lon": 76.9, "acc": 5}]})
        c.publish(f"pm/v1/devices/{serial}/fixes", payload, qos=1).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def test_serve_with_tls() -> None:
    with private_dir() as tmp:
        certs = tmp / "certs"
        subprocess.run([str(ROOT / "scripts/make-local-ca.sh"), "-d", str(certs), "localhost",
                        "127.0.0.1"], check=True, capture_output=True)
        ca = certs / "ca.crt"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROBATION_")}
        tls_port = stable_port()
        env.update(PROBATION_DATA_DIR=str(tmp / "data"), PROBATION_ADMIN_PASSWORD="admin-pw-1",
                   PROBATION_MQTT_PORT=str(stable_port()), PROBATION_MQTT_TLS_PORT=str(tls_port),
                   CERT=str(certs / "server.crt"), KEY=str(certs / "server.key"),
                   # about TLS: the admin's second factor is tested in tests/security
                   PROBATION_TOTP_REQUIRED_ROLES="[]")
        port, log = stable_port(), tmp / "serve.log"
        proc = _start(env, port, log, ca)
        try:
            with pytest.raises(httpx.HTTPError):  # no plain HTTP on the API port
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=3)
            base = f"https://localhost:{port}/api/v1"
            token = httpx.post(f"{base}/auth/token", verify=ssl.create_default_context(cafile=str(ca)), data={
                "username": "admin", "password": "admin-pw-1"}).json()["access_token"]
            r = httpx.post(f"{base}/devices", verify=ssl.create_default_context(cafile=str(ca)), json={
                "serial": "TLS-1", "kind": "bracelet"}, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 201, r.text
            password = r.json()["credentials"]["mqtt_password"]
            _publish_fix_over_tls(tls_port, ca, "TLS-1", password, 1)
            conf = (tmp / "data" / "mosquitto" / "mosquitto.conf").read_text()
            plain_port = int((tmp / "data" / "mosquitto" / "port").read_text())
            assert f"listener {plain_port} 127.0.0.1\n" in conf  # plain: loopback only
            assert f"listener {tls_port} 127.0.0.1\n" in conf  # --mqtt-host's default
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        proc = _start(env, port, log, ca)  # a restart: same ports, same credentials
        try:
            assert int((tmp / "data" / "mosquitto" / "port").read_text()) == plain_port
            _publish_fix_over_tls(tls_port, ca, "TLS-1", password, 2)
            db_pw = (tmp / "data" / "postgres" / "password").read_text().strip()
            url = [line.split("Database: ")[1] for line in log.read_text().splitlines()
                   if line.startswith("Database: ")][-1].replace("***", db_pw)
            deadline = time.monotonic() + 30
            seqs: list[int] = []
            while time.monotonic() < deadline and len(seqs) < 2:
                with psycopg.connect(url) as c:
                    seqs = [r[0] for r in c.execute("SELECT seq FROM fixes ORDER BY seq")]
                time.sleep(0.2)
            assert seqs == [1, 2]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
