"""The simulator's MQTT connection: capped in-flight QoS 1 publishing, downlink subscription.

One connection carries the traffic of all simulated devices, like a gateway that
translates a vendor protocol (`docs/device-protocol.md` allows that). Publishing is QoS 1
with at most `max_inflight` unacknowledged messages: `publish` blocks while the window
is full. paho's own window is set to the same value (`max_inflight_messages_set`) and its
queue is unbounded, so nothing is dropped; the cap keeps the number of outstanding packet
ids far below 65,535, where paho would wrap around and stall.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from devices.ingest import broker_address, mqtt_client

log = logging.getLogger(__name__)

MAX_INFLIGHT_LIMIT = 60_000  # well below the 65,535 packet ids


@dataclass
class PublishStats:
    messages: int = 0
    acked: int = 0
    bytes: int = 0
    max_outstanding: int = 0
    blocked_s: float = 0.0  # time spent waiting for the window
    ack_latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=2_000))


class Publisher:
    """A paho client for the simulator (thread-safe `publish`)."""

    def __init__(self, mqtt_url: str, *, client_id: str | None = None, max_inflight: int = 1_000,
                 on_message: Callable[[str, bytes], None] | None = None) -> None:
        if not 1 <= max_inflight <= MAX_INFLIGHT_LIMIT:
            raise ValueError(f"max_inflight must be 1..{MAX_INFLIGHT_LIMIT}")
        self.mqtt_url = mqtt_url
        self.max_inflight = max_inflight
        self.stats = PublishStats()
        self._cond = threading.Condition()
        self._inflight = 0  # published (or being published) and not acknowledged
        self._outstanding: dict[int, float] = {}  # mid -> publish time
        self._early: set[int] = set()  # acks that arrived before publish() recorded the mid
        self._connected = threading.Event()
        self._subscriptions: list[str] = []
        self._closing = False
        self._on_message = on_message
        self.client = mqtt_client(mqtt_url, client_id or f"probation-sim-{uuid.uuid4().hex[:8]}",
                                  clean=True)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_msg

    # -- paho callbacks ----------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the simulator's connection: %s", reason)
            return
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._connected.clear()
        if not self._closing:
            log.warning("simulator disconnected from the broker (%s); paho reconnects", reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        now = time.monotonic()
        with self._cond:
            t0 = self._outstanding.pop(mid, None)
            if t0 is None:
                self._early.add(mid)
                return
            self._inflight -= 1
            self.stats.acked += 1
            self.stats.ack_latency_s.append(now - t0)
            self._cond.notify_all()

    def _on_msg(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._on_message is not None:
            try:
                self._on_message(msg.topic, bytes(msg.payload))
            except Exception:
                log.exception("simulator: handling a downlink message failed")

    # -- API ---------------------------------------------------------------------

    def subscribe(self, topic: str) -> None:
        """Subscribe (QoS 1) now and after every reconnect."""
        self._subscriptions.append(topic)
        if self._connected.is_set():
            self.client.subscribe(topic, qos=1)

    def connect(self, timeout: float = 15) -> Publisher:
        host, port = broker_address(self.mqtt_url)
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.client.loop_stop()
            raise TimeoutError(f"the simulator could not connect to {self.mqtt_url}")
        return self

    @property
    def outstanding(self) -> int:
        with self._cond:
            return self._inflight

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1; blocks while `max_inflight` messages are unacknowledged.

        paho calls `on_publish` holding its own lock, which `client.publish` also takes:
        our lock is therefore never held across `client.publish`.
        """
        with self._cond:
            if self._inflight >= self.max_inflight:
                t0 = time.monotonic()
                while self._inflight >= self.max_inflight:
                    self._cond.wait(1.0)
                self.stats.blocked_s += time.monotonic() - t0
            self._inflight += 1
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        now = time.monotonic()
        with self._cond:
            if info.mid in self._early:
                self._early.discard(info.mid)
                self._inflight -= 1
                self.stats.acked += 1
                self._cond.notify_all()
            else:
                self._outstanding[info.mid] = now
            self.stats.messages += 1
            self.stats.bytes += len(payload)
            self.stats.max_outstanding = max(self.stats.max_outstanding, self._inflight)

    def flush(self, timeout: float = 60) -> bool:
        """Wait until the broker acknowledged everything published so far."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 1.0))
        return True

    def close(self, timeout: float = 30) -> None:
        if not self.flush(timeout):
            log.warning("simulator: %d messages still unacknowledged at close", self.outstanding)
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()
