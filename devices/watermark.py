"""The ingest watermark: how far an ingest worker has drained the broker.

The scheduler's clock rules (silence, curfew starts, missed check-ins) judge by what is
stored. Under an ingest backlog the broker still holds uplink that was sent in time, so
"nothing stored" is not "nothing sent". The watermark tells the scheduler up to which
instant the stored data is complete.

How: every `interval_s` the worker publishes a probe (its wall-clock time, QoS 1) to
``{prefix}/ingest/{worker}/probe``, on its own persistent session, which subscribes to
that topic without a share group (so the probe always comes back to the worker that sent
it). A broker delivers one session's QoS 1 messages in the order it received them
(mosquitto queues them per client; amqtt has one broadcast loop and writes each
client's packets under one lock), and the worker's pipeline stores messages in order.
So when every message received before the probe has been committed, all uplink the
broker had received before the probe's time is stored: that time is the watermark,
upserted into `ingest_watermark` in the transaction of the batch that completes it (or,
when the worker is idle, on its own).

The paho thread counts the messages it queues (`enqueued`) and notes each probe with
that count; the writer thread counts committed messages. Only the writer thread writes
to the database.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from devices import service

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0


def probe_topic(prefix: str, worker_id: str) -> str:
    """The worker's private probe topic (wildcards and separators in the id replaced)."""
    safe = re.sub(r"[/+#\x00]", "_", worker_id) or "worker"
    return f"{prefix.rstrip('/')}/ingest/{safe}/probe"


class WatermarkProbe:
    """Probe publishing and watermark bookkeeping for one ingest worker."""

    def __init__(self, *, prefix: str, worker_id: str,
                 interval_s: float = PROBE_INTERVAL_S) -> None:
        self.worker_id = worker_id
        self.topic = probe_topic(prefix, worker_id)
        self.topic_b = self.topic.encode()
        self.interval_s = interval_s
        self.enqueued = 0  # messages put on the worker's queue (paho thread only)
        self._committed = 0  # messages committed (writer thread only)
        # (messages queued before the probe arrived, probe time); appended by the paho
        # thread, read and popped by the writer thread
        self._probes: collections.deque[tuple[int, float]] = collections.deque()
        self._lock = threading.Lock()  # guards `_probes`
        self._last_publish = 0.0
        self._staged: float | None = None
        self.written = 0.0  # the newest watermark stored (Unix time)

    # -- paho thread -----------------------------------------------------------------

    def arrived(self, payload: bytes) -> None:
        """A probe came back: it is complete once the messages queued before it commit."""
        try:
            t = float(payload)
        except ValueError:
            log.warning("ingest watermark: a probe with a bad payload %r", payload[:50])
            return
        with self._lock:
            self._probes.append((self.enqueued, t))

    def dropped(self, messages: int) -> None:
        """Queued messages were discarded (stale copies the broker resends on a resumed
        session): they will never commit, so they no longer count, and the probes that
        counted them are forgotten (the next probe comes within `interval_s`)."""
        if messages:
            with self._lock:
                self.enqueued -= messages
                self._probes.clear()

    # -- writer thread ---------------------------------------------------------------

    def publish(self, client: Any, *, connected: bool) -> None:
        """Publish a probe if `interval_s` passed since the last one (QoS 1)."""
        now = time.monotonic()
        if client is None or not connected or now - self._last_publish < self.interval_s:
            return
        self._last_publish = now
        try:
            client.publish(self.topic, repr(time.time()).encode(), qos=1)
        except Exception:  # the next probe will do; never stop the writer
            log.debug("ingest watermark: probe not published", exc_info=True)

    def _covered(self, upto: int) -> float | None:
        """The newest probe time whose preceding messages are all within `upto`."""
        best: float | None = None
        with self._lock:
            for seq, t in self._probes:
                if seq > upto:
                    break
                best = t
        return best

    def stage(self, conn: psycopg.Connection[Any], pending: int) -> None:
        """Inside the batch's transaction, before its commit: upsert the watermark this
        batch completes (if it moves)."""
        self._staged = None
        w = self._covered(self._committed + pending)
        if w is None or w <= self.written:
            return
        try:  # a savepoint: a failure here (say, a missing migration) never costs the batch
            with conn.transaction():
                service.upsert_ingest_watermark(conn, worker_id=self.worker_id,
                                                watermark=datetime.fromtimestamp(w, UTC))
        except psycopg.Error as e:
            if conn.broken:
                raise
            log.warning("ingest watermark not stored: %s", e)
            return
        self._staged = w

    def committed(self, messages: int) -> None:
        """After a commit of `messages` messages (every path that acknowledges)."""
        self._committed += messages
        with self._lock:
            q = self._probes
            while q and q[0][0] <= self._committed:
                q.popleft()
        if self._staged is not None:
            self.written = max(self.written, self._staged)
            self._staged = None

    def idle(self, conn: psycopg.Connection[Any] | None) -> None:
        """No batch to write: store a completed probe's time on its own (commits)."""
        self._staged = None
        if conn is None:
            return
        w = self._covered(self._committed)
        if w is None or w <= self.written:
            return
        try:
            service.upsert_ingest_watermark(conn, worker_id=self.worker_id,
                                            watermark=datetime.fromtimestamp(w, UTC))
            conn.commit()
        except psycopg.Error as e:
            log.debug("ingest watermark not stored: %s", e)
            if not conn.closed and not conn.broken:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            return
        self.written = w
        self.committed(0)  # drop the probes now covered
