"""Ingestion metrics: Prometheus series (default registry) and a periodic log line.

The Prometheus series are process-wide (several workers in one process add up);
`IngestStats` keeps plain counters beside them for the once-a-minute summary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as _Tally
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

_LAG_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
)

MESSAGES_RECEIVED = Counter(
    "probation_ingest_messages_received", "MQTT messages received by the ingest worker.",
    ["stream"],
)
ITEMS_RECEIVED = Counter(
    "probation_ingest_items_received",
    "Items received (valid, rejected or duplicate), per stream.", ["stream"],
)
ITEMS_STORED = Counter(
    "probation_ingest_items_stored", "Items newly stored (committed), per stream.", ["stream"],
)
DUPLICATES = Counter(
    "probation_ingest_duplicates",
    "Items dropped because their (device, seq, ts) was already stored or repeated.", ["stream"],
)
DEAD_LETTERS = Counter(
    "probation_ingest_dead_letters", "Rejections written to the dead-letter store.", ["reason"],
)
BATCH_ITEMS = Histogram(
    "probation_ingest_batch_items", "Items per committed batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
)
COMMIT_SECONDS = Histogram(
    "probation_ingest_batch_commit_seconds",
    "Time to write and commit one batch (resolve, COPY, hooks, inventory, commit).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RECEIVE_TO_COMMIT = Histogram(
    "probation_ingest_receive_to_commit_seconds",
    "Per message: from its arrival at the worker to the commit of its items (sampled: up "
    "to 64 messages per batch).",
    buckets=_LAG_BUCKETS,
)
PUBLISH_TO_COMMIT = Histogram(
    "probation_ingest_publish_to_commit_seconds",
    "Per fixes message: from its newest fix's device timestamp (the publish-time proxy) to "
    "the commit (sampled like the above). Includes device clock skew and buffered uploads.",
    buckets=_LAG_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "probation_ingest_queue_depth", "Messages received and not yet taken into a batch.",
)
QUEUE_BYTES = Gauge(
    "probation_ingest_queue_bytes", "Payload bytes received and not yet taken into a batch.",
)
DB_ERRORS = Counter(
    "probation_ingest_db_errors",
    "Batches that failed on a database error and were retried (nothing acknowledged).",
)
STAGE_ERRORS = Counter(
    "probation_ingest_stage_errors",
    "Stage failures isolated without stopping the worker.", ["stage"],
)
QUEUE_OVERFLOWS = Counter(
    "probation_ingest_queue_overflows",
    "Messages taken over the queue's bound (the broker's in-flight window exceeds it).",
)
CONNECTED = Gauge("probation_ingest_broker_connected", "1 while connected to the broker.")


@dataclass
class IngestStats:
    """Counters of one worker since the last summary (thread-safe)."""

    interval_s: float = 60.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _received: _Tally[str] = field(default_factory=_Tally)
    _stored: _Tally[str] = field(default_factory=_Tally)
    _duplicates: _Tally[str] = field(default_factory=_Tally)
    _dead: _Tally[str] = field(default_factory=_Tally)
    _batches: int = 0
    _batch_items: int = 0
    _commit_s: float = 0.0
    _lag_max_s: float = 0.0
    _db_errors: int = 0
    _last_log: float = field(default_factory=time.monotonic)

    def received(self, stream: str, messages: int, items: int) -> None:
        MESSAGES_RECEIVED.labels(stream).inc(messages)
        ITEMS_RECEIVED.labels(stream).inc(items)
        with self._lock:
            self._received[stream] += items

    def committed(
        self, *, stored: dict[str, int], duplicates: dict[str, int], dead: dict[str, int],
        items: int, commit_s: float, lags_s: list[float], publish_lags_s: list[float],
    ) -> None:
        for k, v in stored.items():
            if v:
                ITEMS_STORED.labels(k).inc(v)
        for k, v in duplicates.items():
            if v:
                DUPLICATES.labels(k).inc(v)
        for k, v in dead.items():
            DEAD_LETTERS.labels(k).inc(v)
        BATCH_ITEMS.observe(items)
        COMMIT_SECONDS.observe(commit_s)
        for lag in lags_s:
            RECEIVE_TO_COMMIT.observe(lag)
        for lag in publish_lags_s:
            PUBLISH_TO_COMMIT.observe(lag)
        with self._lock:
            self._stored.update(stored)
            self._duplicates.update(duplicates)
            self._dead.update(dead)
            self._batches += 1
            self._batch_items += items
            self._commit_s += commit_s
            if lags_s:
                self._lag_max_s = max(self._lag_max_s, max(lags_s))

    def db_error(self) -> None:
        DB_ERRORS.inc()
        with self._lock:
            self._db_errors += 1

    def maybe_log(self, queue_depth: int, *, force: bool = False) -> None:
        """Log a one-line summary of the interval and reset (every `interval_s`)."""
        now = time.monotonic()
        if not force and now - self._last_log < self.interval_s:
            return
        with self._lock:
            span = max(now - self._last_log, 1e-9)
            stored_total = sum(self._stored.values())
            avg_batch = self._batch_items / self._batches if self._batches else 0.0
            avg_commit = self._commit_s / self._batches * 1000 if self._batches else 0.0
            idle = not any(self._received.values()) and not self._db_errors
            line = (
                "ingest %.0fs: received %s; stored %s (%.0f items/s); duplicates %s; "
                "dead letters %s; batches %d (avg %.0f items, avg commit %.1f ms); "
                "max receive->commit %.0f ms; queue %d; db errors %d"
            )
            args = (
                span, _fmt(self._received), _fmt(self._stored), stored_total / span,
                _fmt(self._duplicates), _fmt(self._dead), self._batches, avg_batch, avg_commit,
                self._lag_max_s * 1000, queue_depth, self._db_errors,
            )
            self._received.clear()
            self._stored.clear()
            self._duplicates.clear()
            self._dead.clear()
            self._batches = self._batch_items = self._db_errors = 0
            self._commit_s = self._lag_max_s = 0.0
            self._last_log = now
        log.log(logging.DEBUG if idle else logging.INFO, line, *args)  # idle minutes: routine


def _fmt(t: _Tally[str]) -> str:
    items = [(k, v) for k, v in sorted(t.items()) if v]
    return ", ".join(f"{k}={v}" for k, v in items) if items else "0"
