"""The MQTT publisher of simulated devices: capped in-flight QoS 1, downlink subscription.

In the simulator, one connection carries the traffic of all simulated devices, like a gateway that
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from devices.mqtt import Link

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
    """A device-side QoS 1 publisher (thread-safe `publish`): the simulator's, the
    benchmarks' and the tests'.

    `publish` blocks while `max_inflight` messages are unacknowledged; `flush` waits
    until the broker acknowledged everything; messages not acknowledged before a
    reconnect are resent by paho. `on_message` receives what `subscribe` topics bring
    (the simulator's downlink commands).
    """

    def __init__(self, mqtt_url: str, *, client_id: str | None = None, max_inflight: int = 1_000,
                 v5: bool = False,
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
        self.link = Link(mqtt_url, client_id or f"probation-pub-{uuid.uuid4().hex[:8]}",
                         name="publisher", v5=v5, session_expiry_s=0 if v5 else None,
                         reconnect_s=(1, 5), on_message=on_message)
        self.client = self.link.client
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish

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

    def subscribe(self, topic: str) -> None:
        """Subscribe (QoS 1) now and after every reconnect."""
        self.link.subscribe(topic, qos=1)

    def connect(self, timeout: float = 15) -> Publisher:
        if not self.link.start(timeout):
            self.client.loop_stop()
            raise TimeoutError(f"the publisher could not connect to {self.mqtt_url}")
        return self

    @property
    def outstanding(self) -> int:
        with self._cond:
            return self._inflight

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish; at QoS 1, blocks while `max_inflight` messages are unacknowledged.

        paho calls `on_publish` holding its own lock, which `client.publish` also takes:
        our lock is therefore never held across `client.publish`.
        """
        if qos == 0:
            self.client.publish(topic, payload, qos=0, retain=retain)
            return
        with self._cond:
            if self._inflight >= self.max_inflight:
                t0 = time.monotonic()
                while self._inflight >= self.max_inflight:
                    self._cond.wait(1.0)
                self.stats.blocked_s += time.monotonic() - t0
            self._inflight += 1
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
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

    def publish_many(self, messages: Iterable[tuple[str, bytes]]) -> int:
        n = 0
        for topic, payload in messages:
            self.publish(topic, payload)
            n += 1
        return n

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
            log.warning("publisher: %d messages still unacknowledged at close", self.outstanding)
        self.link.stop()

    def __enter__(self) -> Publisher:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()
