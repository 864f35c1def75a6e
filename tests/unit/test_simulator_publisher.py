"""The simulator's publisher caps its unacknowledged QoS 1 messages (no broker needed)."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from simulator.publisher import Publisher


@dataclass
class _Info:
    mid: int


class _FakeClient:
    """Stands in for paho: hands out packet ids; acks come from the test."""

    def __init__(self, ack_at_once: bool = False) -> None:
        self.mids = itertools.count(1)
        self.sent: list[tuple[str, bytes, int]] = []
        self.ack_at_once = ack_at_once
        self.owner: Publisher | None = None

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> _Info:
        mid = next(self.mids)
        self.sent.append((topic, payload, mid))
        if self.ack_at_once and self.owner is not None:  # PUBACK before publish() returns
            _ack(self.owner, mid)
        return _Info(mid)


def _ack(pub: Publisher, mid: int) -> None:
    none: Any = None
    pub._on_publish(none, none, mid, none, none)


def _publisher(max_inflight: int, **kw: Any) -> tuple[Publisher, _FakeClient]:
    pub = Publisher("mqtt://127.0.0.1:1", max_inflight=max_inflight)
    fake = _FakeClient(**kw)
    fake.owner = pub
    pub.client = fake  # type: ignore[assignment]
    return pub, fake


def test_publish_blocks_when_the_window_is_full_until_an_ack() -> None:
    pub, fake = _publisher(3)
    for i in range(3):
        pub.publish("t", b"%d" % i)
    assert pub.outstanding == 3
    done = threading.Event()

    def fourth() -> None:
        pub.publish("t", b"4")
        done.set()

    t = threading.Thread(target=fourth)
    t.start()
    assert not done.wait(0.3)  # blocked: 3 in flight
    _ack(pub, fake.sent[0][2])
    assert done.wait(2)
    t.join()
    assert pub.outstanding == 3 and pub.stats.max_outstanding == 3
    assert pub.stats.blocked_s > 0.2


def test_acks_before_publish_returns_are_counted_and_flush_waits() -> None:
    pub, _ = _publisher(2, ack_at_once=True)
    for i in range(10):
        pub.publish("t", b"%d" % i)
    assert pub.outstanding == 0 and pub.stats.acked == 10
    assert pub.flush(0.1)
    pub2, fake2 = _publisher(5)
    pub2.publish("t", b"x")
    assert not pub2.flush(0.1)
    threading.Timer(0.1, lambda: _ack(pub2, fake2.sent[0][2])).start()
    t0 = time.monotonic()
    assert pub2.flush(2)
    assert time.monotonic() - t0 < 1.5


def test_the_window_stays_below_the_packet_id_space() -> None:
    with pytest.raises(ValueError):
        Publisher("mqtt://127.0.0.1:1", max_inflight=65_535)
