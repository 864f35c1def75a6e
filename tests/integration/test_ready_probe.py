"""`/ready`'s broker probe: a real MQTT CONNECT/DISCONNECT that leaves the broker's log clean."""

from __future__ import annotations

import logging
import time

import pytest

from db.server import free_port
from devices.broker import EmbeddedBroker
from probation.app import broker_reachable


def test_probe_answers_for_the_session_broker(mqtt_url: str) -> None:
    assert broker_reachable(mqtt_url) is True


def test_probe_says_no_when_nothing_listens() -> None:
    t0 = time.monotonic()
    assert broker_reachable(f"mqtt://127.0.0.1:{free_port()}") is False
    assert time.monotonic() - t0 < 2


def test_probe_makes_the_embedded_broker_log_no_error(caplog: pytest.LogCaptureFixture) -> None:
    broker = EmbeddedBroker(port=free_port())
    broker.start()
    try:
        with caplog.at_level(logging.INFO, logger="amqtt"):
            for _ in range(3):
                assert broker_reachable(broker.url) is True
            time.sleep(0.3)  # the broker handles the disconnects in its own thread
    finally:
        broker.stop()
    noisy = [r for r in caplog.records
             if r.name.startswith("amqtt") and r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]
