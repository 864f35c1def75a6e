"""The two brokers the MQTT probes run against, both real mosquitto processes:

- `embedded`: `devices.broker.EmbeddedMosquitto`, as `probation serve` starts it;
- `shipped`: deploy/mosquitto as compose runs it: its run.sh, mosquitto.conf and acl, with
  only the listeners' ports and the container paths rewritten for a private instance, and
  the password file written by the API's `PasswordFileSync`.

Both hold a backend account and devices DEV_A and DEV_B; `set_account` adds or changes a
device's password the way registration and rotation do (database hash → password file →
reload), and `wait_accepts` waits until the broker takes it.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from db.server import free_port
from devices import mqtt_auth
from devices.broker import BrokerTls, EmbeddedMosquitto, mosquitto_exe, wait_port

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "pm/v1"
BACKEND = mqtt_auth.BACKEND_USER


@dataclass
class Broker:
    kind: str
    port: int
    tls_port: int
    ca: Path
    backend_password: str
    passwords: dict[str, str]
    hashes: dict[str, str] = field(default_factory=dict)
    sync: Any = None  # () -> None: rewrite the password file from `hashes` (and reload)

    def set_account(self, user: str, password: str) -> None:
        self.passwords[user] = password
        self.hashes[user] = mqtt_auth.hash_password(password)
        self.sync()


@contextlib.contextmanager
def private_dir() -> Iterator[Path]:
    """A work directory outside pytest's temp root: mosquitto, dropped from root to its own
    user, re-reads its files on reload, and any pytest session that starts on this machine
    (other checkouts' too) resets that root to 0700."""
    path = Path(tempfile.mkdtemp(prefix="probation-security-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def stable_port() -> int:
    """A free port below the ephemeral range: a port `free_port()` gives may be taken by
    an outgoing connection (the device reconnecting) while serve is down, and serve must
    come back on the same ports."""
    while True:
        port = random.randint(20000, 32000)
        if free_port(port) == port:
            return port


def make_certs(dir_: Path) -> Path:
    subprocess.run([str(ROOT / "scripts/make-local-ca.sh"), "-d", str(dir_), "localhost",
                    "127.0.0.1"], check=True, capture_output=True)
    return dir_


def _accounts() -> tuple[dict[str, str], dict[str, str]]:
    pw = {"DEV_A": mqtt_auth.new_password(), "DEV_B": mqtt_auth.new_password()}
    return pw, {u: mqtt_auth.hash_password(p) for u, p in pw.items()}


def embedded(tmp: Path, certs: Path) -> Iterator[Broker]:
    pw, hashes = _accounts()
    b = Broker("embedded", free_port(), free_port(), certs / "ca.crt", mqtt_auth.new_password(),
               pw, hashes)
    mq = EmbeddedMosquitto(
        data_dir=tmp / "embedded", backend_password=b.backend_password, port=b.port,
        prefix=PREFIX, accounts=lambda: list(b.hashes.items()),
        tls=BrokerTls(cert=certs / "server.crt", key=certs / "server.key", host="127.0.0.1",
                      port=b.tls_port),
    )
    b.sync = mq.sync
    mq.start()
    try:
        yield b
    finally:
        mq.stop()


def shipped(tmp: Path, certs: Path) -> Iterator[Broker]:
    """deploy/mosquitto/run.sh with the shipped config; the password file as the API keeps
    it (`PasswordFileSync` writes it from the accounts; here from `hashes`)."""
    pw, hashes = _accounts()
    b = Broker("shipped", free_port(), free_port(), certs / "ca.crt", mqtt_auth.new_password(),
               pw, hashes)
    base = tmp / "shipped"
    for d in ("auth", "run", "data"):
        (base / d).mkdir(parents=True)
    base.chmod(0o755)
    (base / "data").chmod(0o777)  # mosquitto drops root privileges to its own user
    auth = base / "auth" / "passwd"

    def sync() -> None:
        backend = mqtt_auth.reuse_or_hash(BACKEND, b.backend_password, auth)
        text = mqtt_auth.password_file_text([(BACKEND, backend), *b.hashes.items()])
        mqtt_auth.write_private(auth, text)

    b.sync = sync
    sync()
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    for old, new in (("listener 1883", f"listener {b.port} 127.0.0.1"),
                     ("listener 8883", f"listener {b.tls_port} 127.0.0.1"),
                     ("/mosquitto/run/", f"{base}/run/"),
                     ("/mosquitto/config/acl", str(base / "acl")),
                     ("/mosquitto/data/", f"{base}/data/"),
                     ("log_dest stdout", f"log_dest file {base}/data/log")):
        assert old in conf, old
        conf = conf.replace(old, new)
    (base / "mosquitto.conf").write_text(conf)
    shutil.copy(ROOT / "deploy/mosquitto/acl", base / "acl")  # compose mounts it likewise
    env = {**os.environ, "MOSQUITTO_CONF": str(base / "mosquitto.conf"),
           "AUTH_DIR": str(base / "auth"), "RUN_DIR": str(base / "run"),
           "CERTS_DIR": str(certs), "POLL_S": "0.3",
           "PATH": f"{Path(mosquitto_exe() or '/usr/sbin/mosquitto').parent}:"
                   f"{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(["/bin/sh", str(ROOT / "deploy/mosquitto/run.sh")], env=env,
                            start_new_session=True)
    try:
        wait_port("127.0.0.1", b.port)
        wait_port("127.0.0.1", b.tls_port)
        yield b
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --------------------------------------------------------------------------- clients


@dataclass
class Client:
    """A paho client that records what it received and whether it was disconnected."""

    c: mqtt.Client
    connack: Any = None
    received: list[tuple[str, int]] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)
    connected: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def connect(b: Broker, user: str | None, password: str | None, *, tls: bool = False,
            wait: bool = True, v5: bool = False) -> Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:10]}",
                    protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    cl = Client(c)
    if user is not None:
        c.username_pw_set(user, password)
    if tls:
        c.tls_set(ca_certs=str(b.ca))

    def on_connect(client: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        cl.connack = reason
        cl.connected.set()

    c.on_connect = on_connect
    c.on_disconnect = lambda *a: cl.disconnected.set()
    c.on_message = lambda client, u, m: cl.received.append((m.topic, len(m.payload)))
    c.connect("127.0.0.1", b.tls_port if tls else b.port)
    c.loop_start()
    if wait:
        assert cl.connected.wait(10), f"no CONNACK for {user}"
    return cl


def accepted(b: Broker, user: str | None, password: str | None, *, tls: bool = False) -> bool:
    cl = connect(b, user, password, tls=tls)
    ok = not cl.connack.is_failure
    cl.stop()
    return ok


def wait_accepts(b: Broker, user: str, password: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if accepted(b, user, password):
            return True
        time.sleep(0.2)
    return False


def subscribed(cl: Client, *filters: str) -> list[int]:
    """Subscribe and return the granted QoS / reason code per filter (0x80: refused)."""
    done = threading.Event()
    codes: list[int] = []

    def on_subscribe(client: Any, u: Any, mid: Any, reasons: Any, props: Any) -> None:
        codes.extend(int(r.value) for r in reasons)
        done.set()

    cl.c.on_subscribe = on_subscribe
    cl.c.subscribe([(f, 1) for f in filters])
    assert done.wait(10)
    return codes


def wait_for(pred: Any, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return bool(pred())
