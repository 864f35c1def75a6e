"""compose.yaml and the broker's production configuration (no Docker engine here).

The ACL is proven on a real mosquitto: the shipped mosquitto.conf and acl, with paths
and the port rewritten for a private instance.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from db.server import free_port, make_traversable
from devices.broker import wait_port
from probation.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_services_and_images() -> None:
    services = _compose()["services"]
    assert services["db"]["image"].startswith("timescale/timescaledb:") and "pg17" in services["db"]["image"]
    assert services["mqtt"]["image"] == "eclipse-mosquitto:2"
    for name in ("api", "ingest", "scheduler"):
        assert services[name]["build"] == "."
        assert "healthcheck" in services["db"] and "healthcheck" in services["mqtt"]
    assert services["api"]["command"][0] == "api"
    assert services["ingest"]["command"] == ["ingest"]
    assert services["scheduler"]["command"] == ["scheduler"]
    assert set(_compose()["volumes"]) >= {"pgdata", "mqttdata"}


def test_compose_env_names_are_settings() -> None:
    fields = {f"PROBATION_{name.upper()}" for name in Settings.model_fields}
    for name, svc in _compose()["services"].items():
        for key in (svc.get("environment") or {}):
            if key.startswith("PROBATION_"):
                assert key in fields, f"{name}: {key} is not a setting"


def test_compose_holds_no_secret() -> None:
    text = (ROOT / "compose.yaml").read_text()
    for m in re.finditer(r"(PASSWORD|SECRET|KEY)[A-Z_]*:\s*(\S+)", text):
        value = m.group(2)
        assert value.startswith("${") or value.startswith("postgresql://") is False, m.group(0)
    for url in re.findall(r"(?:postgresql|mqtt)://[^\s]+", text):
        assert "${" in url, url


def _private_broker(tmp: Path, users: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o777)
    make_traversable(tmp)  # mosquitto drops root privileges to its own user
    passwd = tmp / "passwd"
    passwd.touch()
    for user, pw in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, capture_output=True)
    passwd.chmod(0o644)
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    conf = conf.replace("/mosquitto/auth/passwd", str(passwd))
    conf = conf.replace("/mosquitto/config/acl", str(ROOT / "deploy/mosquitto/acl"))
    conf = conf.replace("/mosquitto/data/", f"{tmp}/")
    conf = conf.replace("log_dest stdout", f"log_dest file {tmp}/log")
    (tmp / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen([shutil.which("mosquitto") or "mosquitto", "-c", str(tmp / "mosquitto.conf")])
    wait_port("127.0.0.1", port)
    return proc, port


def _client(port: int, user: str, pw: str) -> mqtt.Client:
    """A connected client: returns only once the broker's CONNACK accepted it."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}")
    c.username_pw_set(user, pw)
    accepted = threading.Event()
    c.on_connect = lambda cl, u, f, reason, p: accepted.set() if not reason.is_failure else None
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert accepted.wait(10), f"{user} not accepted by the broker"
    return c


def test_acl_confines_each_device_to_its_own_topics(tmp_path: Path) -> None:
    proc, port = _private_broker(
        tmp_path / "mq", {"probation-backend": "backend-pw", "DEV1": "dev1-pw", "DEV2": "dev2-pw"}
    )
    try:
        got: list[str] = []
        ready = threading.Event()
        backend = _client(port, "probation-backend", "backend-pw")
        backend.on_message = lambda c, u, m: got.append(m.topic)
        backend.on_subscribe = lambda *a: ready.set()
        backend.subscribe([("pm/v1/devices/#", 1), ("pm/v1/ingest/+/probe", 1)])
        assert ready.wait(5)
        dev1 = _client(port, "DEV1", "dev1-pw")
        dev1.publish("pm/v1/devices/DEV1/fixes", b"{}", qos=1).wait_for_publish(5)
        for denied in ("pm/v1/devices/DEV2/fixes", "pm/v1/devices/DEV1/commands",
                       "pm/v1/ingest/w1/probe"):
            # A denied publish is dropped; the broker may also drop the connection.
            other = _client(port, "DEV1", "dev1-pw")
            with contextlib.suppress(RuntimeError):
                other.publish(denied, b"{}", qos=1).wait_for_publish(2)
            other.loop_stop()
        backend.publish("pm/v1/devices/DEV2/commands", b"{}", qos=1).wait_for_publish(5)
        backend.publish("pm/v1/ingest/w1/probe", b"1.0", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(got) < 3:
            time.sleep(0.05)
        time.sleep(0.3)
        assert sorted(got) == ["pm/v1/devices/DEV1/fixes", "pm/v1/devices/DEV2/commands",
                               "pm/v1/ingest/w1/probe"]
        anon = mqtt.Client(CallbackAPIVersion.VERSION2)
        assert anon.connect("127.0.0.1", port) == 0
        rc: list[object] = []
        anon.on_connect = lambda c, u, f, reason, p: rc.append(reason)
        anon.loop_start()
        deadline = time.monotonic() + 3
        while not rc and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rc and rc[0].is_failure  # type: ignore[attr-defined]
        for c in (backend, dev1, anon):
            c.loop_stop()
    finally:
        proc.terminate()
        proc.wait(10)


def test_broker_config_meets_the_contract() -> None:
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    assert re.search(r"^persistence true$", conf, re.M)
    assert re.search(r"^max_queued_messages 0$", conf, re.M)
    assert re.search(r"^max_inflight_messages 1000$", conf, re.M)
    assert re.search(r"^allow_anonymous false$", conf, re.M)
