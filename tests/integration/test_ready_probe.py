"""`/ready`'s broker probe: a real MQTT CONNECT/DISCONNECT that leaves the broker's log clean."""

from __future__ import annotations

import time

from db.server import free_port
from devices.broker import EmbeddedMosquitto, Mosquitto
from probation.app import broker_reachable


def test_probe_answers_for_the_session_broker(mqtt_url: str) -> None:
    assert broker_reachable(mqtt_url) is True


def test_probe_says_no_when_nothing_listens() -> None:
    t0 = time.monotonic()
    assert broker_reachable(f"mqtt://127.0.0.1:{free_port()}") is False
    assert time.monotonic() - t0 < 2


def test_probe_makes_the_embedded_broker_log_no_error() -> None:
    """The embedded broker of `serve` (mosquitto, authenticated): the probe logs in with
    the backend's account and leaves no error in the broker's log; a wrong password is a
    'not ready'."""
    from tests.security.brokers import private_dir

    assert Mosquitto.available(), "mosquitto is required (Debian package mosquitto)"
    with private_dir() as tmp:
        broker = EmbeddedMosquitto(data_dir=tmp / "mq", backend_password="backend-pw",
                                   port=free_port())
        broker.start()
        try:
            for _ in range(3):
                assert broker_reachable(broker.url) is True
            assert broker_reachable(broker.url.replace("backend-pw", "wrong")) is False
            time.sleep(0.3)
            log = (tmp / "mq" / "mosquitto.log").read_text()
        finally:
            broker.stop()
    errors = [line for line in log.splitlines()
              if "error" in line.lower() and "message_size_limit" not in line]
    assert errors == [], errors
