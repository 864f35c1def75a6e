"""The ingest worker: MQTT uplink → validated, deduplicated rows in TimescaleDB.

Three threads, joined by bounded queues (memory stays flat when the database is
slow or down; the broker then keeps the messages):

- the paho network thread receives QoS 1 messages on a persistent session and
  puts them on a queue bounded by count and bytes, never blocking (it must keep
  answering keep-alives): the broker's in-flight window / MQTT 5 Receive Maximum
  bounds what it can send unacknowledged, so the queue does not fill;
- the decode thread validates them (`devices.protocol`) and cuts batches at
  N items, M messages or T milliseconds, whichever comes first;
- the writer thread stores a batch in one transaction (`devices.pipeline`),
  commits, and only then acknowledges its messages to the broker.

If the database fails, nothing is acknowledged: the writer reconnects with
backoff and retries the same batch, and the broker redelivers whatever was
in flight if the worker dies. An acknowledgement is only sent on the broker
connection its message arrived on (a redelivered copy is deduplicated).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from db.engine import libpq_url
from devices import metrics, service
from devices.metrics import IngestStats
from devices.mqtt import broker_address, is_v5, mqtt_client
from devices.pipeline import (
    UNKNOWN_STREAM,
    AfterStoreStage,
    BatchResult,
    BatchWriter,
    ByteBoundedQueue,
    CheckinJudge,
    DeviceDirectory,
    Incoming,
    RawMessage,
    dead_letter,
    decode_stage,
    is_downlink,
)
from devices.protocol import Decoded, Reason, Rejected
from devices.watermark import WatermarkProbe

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
LAG_SAMPLES = 64  # messages per batch observed by the lag histograms
RETRY_FIRST_S = 0.25  # the first wait before retrying a transaction the database lost
RETRY_MAX_S = 5.0  # the longest wait between retries (the wait doubles up to it)

T = TypeVar("T")


def _install_fast_receive(
    client: mqtt.Client, receive: Callable[[bytes, bytes, int, int, bool], None]
) -> None:
    """Hand QoS 0/1 PUBLISH packets straight to `receive`, skipping paho's per-message
    objects (an MQTTMessage with a Condition, the topic matcher): a third of the paho
    thread's time at thousands of messages per second. QoS 2 keeps paho's path.

    Relies on paho 2's packet dispatch (`_handle_publish`, `_in_packet`); if those are
    not there, paho's own path is kept.
    """
    original = getattr(client, "_handle_publish", None)
    if original is None or not isinstance(getattr(client, "_in_packet", None), dict):
        log.warning("paho without the expected internals: using its standard receive path")
        return
    v5 = client.protocol == mqtt.MQTTv5

    def handle_publish() -> MQTTErrorCode:
        header = client._in_packet["command"]
        qos = (header & 0x06) >> 1
        if qos == 2:
            return original()  # type: ignore[no-any-return]
        packet = client._in_packet["packet"]
        end = 2 + int.from_bytes(packet[0:2], "big")
        topic = bytes(packet[2:end])
        mid = 0
        if qos:
            mid = int.from_bytes(packet[end:end + 2], "big")
            end += 2
        if v5:  # skip the properties: a variable byte integer length, then the properties
            n, mult = 0, 1
            while True:
                b = packet[end]
                end += 1
                n += (b & 0x7F) * mult
                if not b & 0x80:
                    break
                mult *= 128
            end += n
        receive(topic, bytes(packet[end:]), mid, qos, bool(header & 0x01))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    client._handle_publish = handle_publish  # type: ignore[method-assign]


def _tune_gc() -> None:
    """Fewer cyclic-GC passes (process-wide): ingestion allocates millions of short-lived,
    acyclic objects (decoded JSON, fixes, rows), and with the default threshold (700)
    the collector costs about a third of the decode time."""
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 < 50_000:
        gc.set_threshold(50_000, max(gen1, 20), max(gen2, 20))


@dataclass(slots=True)
class CommitInfo:
    """Handed to `on_commit` after each committed batch (benchmarks, tests)."""

    messages: Sequence[RawMessage]
    result: BatchResult
    committed_at: float  # time.time()
    commit_s: float


class _Abort(Exception):
    """The worker is stopping hard: leave the batch unacknowledged."""


class IngestWorker:
    """Connects to the broker and the database and ingests uplink traffic.

    `protocol` is "3.1.1" or "5". With `share_group`, the worker subscribes to
    `$share/<group>/<prefix>/devices/#` so that several workers share the load.
    `after_store`: the stages run on newly stored telemetry, in order (default: none);
    `checkin_judge` decides check-ins (default: nothing passes). See `BatchWriter`.
    """

    def __init__(
        self, *, database_url: str, mqtt_url: str, prefix: str = "pm/v1",
        client_id: str = "probation-ingest", share_group: str | None = None,
        protocol: str = "3.1.1", after_store: Sequence[AfterStoreStage] = (),
        checkin_judge: CheckinJudge | None = None, batch_items: int = 10_000,
        batch_messages: int = 500, flush_ms: float = 25, queue_messages: int = 10_000,
        queue_bytes: int = 64 * 1024 * 1024, keepalive: int = 30,
        session_expiry_s: int = SESSION_EXPIRY_S, log_interval_s: float = 60,
        on_commit: Callable[[CommitInfo], None] | None = None, fast_receive: bool = True,
    ) -> None:
        self.database_url = database_url
        self.mqtt_url = mqtt_url
        self.prefix = prefix.rstrip("/")
        self.client_id = client_id or f"probation-ingest-{uuid.uuid4().hex[:8]}"
        self.share_group = share_group or None
        self.v5 = is_v5(protocol)
        self.batch_items = batch_items
        self.batch_messages = batch_messages
        self.flush_s = flush_ms / 1000
        self.keepalive = keepalive
        self.session_expiry_s = session_expiry_s
        self.on_commit = on_commit
        self.fast_receive = fast_receive
        self.writer = BatchWriter(
            prefix=self.prefix, after_store=after_store, checkin_judge=checkin_judge)
        self.directory = DeviceDirectory()
        self.watermark = WatermarkProbe(prefix=self.prefix, worker_id=self.client_id)
        self.stats = IngestStats(interval_s=log_interval_s)
        self._queue = ByteBoundedQueue(max_items=queue_messages, max_bytes=queue_bytes)
        self._batches: queue.Queue[list[Incoming]] = queue.Queue(maxsize=1)
        self._client: mqtt.Client | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._gen = 0
        self._ack_lock = threading.Lock()
        self._closing = False  # stop taking messages; drain what was taken
        self._decode_done = threading.Event()
        self._abort = threading.Event()  # give up on the current batch (hard stop)
        self._stopped = threading.Event()
        self._subscribed = threading.Event()
        self._db_ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._overflow_logged = 0.0

    # -- lifecycle -----------------------------------------------------------------

    @property
    def topic_filter(self) -> str:
        """Everything under `{prefix}/devices/`: malformed topics become `bad_topic`."""
        f = f"{self.prefix}/devices/#"
        return f"$share/{self.share_group}/{f}" if self.share_group else f

    def start(self) -> None:
        """Start the threads and connect (the broker and the database may still be down)."""
        if self._started:
            return
        self._started = True
        _tune_gc()
        if self.share_group and not self.v5:
            log.warning("shared subscriptions are an MQTT 5 feature; using $share with 3.1.1 "
                        "works on Mosquitto and EMQX only")
        client = mqtt_client(self.mqtt_url, self.client_id, clean=False, v5=self.v5,
                             manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        if self.fast_receive:
            _install_fast_receive(client, self._receive)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        host, port = broker_address(self.mqtt_url)
        if self.v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.session_expiry_s
            # Bounds what the broker sends before we acknowledge: two batches' worth, and
            # never more than the queue holds (see `_overflow`).
            props.ReceiveMaximum = min(65535, 2 * self.batch_messages, self._queue.max_items)
            client.connect_async(host, port, keepalive=self.keepalive, clean_start=False,
                                 properties=props)
        else:
            client.connect_async(host, port, keepalive=self.keepalive)
        self._client = client
        for name, target in (("ingest-decode", self._decode_loop),
                             ("ingest-writer", self._write_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        client.loop_start()
        log.info("ingest worker %s started: broker %s:%d (MQTT %s), subscription %s",
                 self.client_id, host, port, "5" if self.v5 else "3.1.1", self.topic_filter)

    def wait_ready(self, timeout: float = 30) -> bool:
        """Block until subscribed on the broker and connected to the database."""
        deadline = time.monotonic() + timeout
        return self._subscribed.wait(timeout) and self._db_ready.wait(
            max(0.0, deadline - time.monotonic())
        )

    def stop(self, timeout: float = 15) -> None:
        """Stop taking messages, commit and acknowledge what was taken, disconnect.

        After `timeout` (e.g. the database is down) the rest is left
        unacknowledged: the broker redelivers it to the next session.
        """
        if self._stopped.is_set() or not self._started:
            self._stopped.set()
            return
        self._closing = True
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            log.warning("ingest worker: stopping before the last batch was committed; "
                        "the broker will redeliver it")
            self._abort.set()
            for t in self._threads:
                t.join(5)
        client = self._client
        if client is not None:
            client.disconnect()
            client.loop_stop()
            self._client = None
        self._close_conn()
        self.stats.maybe_log(len(self._queue), force=True)
        metrics.CONNECTED.set(0)
        self._stopped.set()
        log.info("ingest worker %s stopped", self.client_id)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker is stopped."""
        return self._stopped.wait(timeout)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- paho callbacks (network thread) -------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        with self._ack_lock:
            self._gen += 1
            gen = self._gen
        metrics.CONNECTED.set(1)
        log.info("connected to the broker (session present: %s)", flags.session_present)
        if flags.session_present:
            # What is still queued from the previous connection can never be acknowledged;
            # the session resends it now, so drop the stale copies (QoS 0 is not resent).
            dropped = self._queue.discard(lambda m: m.qos > 0 and m.generation != gen)
            self.watermark.dropped(dropped)
            if dropped:
                log.info("dropped %d queued messages of the previous connection (the broker "
                         "resends them)", dropped)
        if self.v5:
            opts = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
            client.subscribe([(self.topic_filter, opts)])
        else:
            client.subscribe(self.topic_filter, qos=1)
        client.subscribe(self.watermark.topic, qos=1)  # never shared: our probes come back to us

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], properties: Any) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("broker refused the subscription %s: %s", self.topic_filter, reason_codes)
            return
        if not self._subscribed.is_set():
            log.info("subscribed to %s", self.topic_filter)
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Any) -> None:
        with self._ack_lock:
            self._gen += 1
        self._subscribed.clear()
        metrics.CONNECTED.set(0)
        if not self._closing:
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """paho's path (QoS 2, or with `fast_receive=False`)."""
        self._receive(msg._topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.retain))

    def _receive(self, topic_b: bytes, payload: bytes, mid: int, qos: int, retain: bool) -> None:
        if self._closing:
            return  # not acknowledged: redelivered to the next session
        if topic_b == self.watermark.topic_b:  # ingest watermark (devices/watermark.py)
            self.watermark.arrived(payload)
            if self._client is not None and qos:
                self._client.ack(mid, qos)
            return
        topic = topic_b.decode("utf-8", "backslashreplace")
        if is_downlink(topic, self.prefix):
            client = self._client
            if client is not None:
                client.ack(mid, qos)  # our own commands, seen through the # filter
            return
        raw = RawMessage(topic, payload, mid, qos, retain, self._gen, time.time())
        if not self._queue.put(raw, timeout=0):
            self._overflow(raw)
        self.watermark.enqueued += 1

    def _overflow(self, raw: RawMessage) -> None:
        """The queue is full: take the message anyway, never block this thread.

        Blocking here would stop paho from reading and from answering keep-alives, and
        the broker would drop the connection (and resend everything unacknowledged). What
        the broker may send unacknowledged bounds the queue instead: MQTT 5's Receive
        Maximum (at most `queue_messages`), or the broker's in-flight window over 3.1.1
        (mosquitto's `max_inflight_messages`, 1,000 in every configuration we ship).
        """
        self._queue.put(raw, force=True)
        metrics.QUEUE_OVERFLOWS.inc()
        now = time.monotonic()
        if now - self._overflow_logged >= 60:
            self._overflow_logged = now
            log.warning("ingest queue over its bound (%d messages, %d bytes): the broker sends "
                        "more unacknowledged messages than queue_messages; lower its in-flight "
                        "window (max_inflight_messages) or raise the queue", len(self._queue),
                        self._queue.bytes)


    # -- decode thread -------------------------------------------------------------

    def _decode_loop(self) -> None:
        batch: list[Incoming] = []
        items = 0
        first = 0.0
        try:
            while True:
                closing = self._closing
                wait = self.flush_s - (time.monotonic() - first) if batch else 0.25
                raws = self._queue.get_many(
                    max(1, self.batch_messages - len(batch)), 0.0 if closing else max(wait, 0.0)
                )
                for raw in raws:
                    inc = self._decode(raw)
                    batch.append(inc)
                    items += inc.items
                    if not first:
                        first = time.monotonic()
                metrics.QUEUE_DEPTH.set(len(self._queue))
                metrics.QUEUE_BYTES.set(self._queue.bytes)
                full = items >= self.batch_items or len(batch) >= self.batch_messages
                due = batch and (full or closing or time.monotonic() - first >= self.flush_s)
                if due:
                    if not self._hand_over(batch):
                        return
                    batch, items, first = [], 0, 0.0
                if closing and not raws and not batch:
                    return
        except Exception:
            log.exception("decode stage crashed; the worker stops taking messages")
            self._closing = True
        finally:
            self._decode_done.set()

    def _decode(self, raw: RawMessage) -> Incoming:
        try:
            return decode_stage(raw, prefix=self.prefix)
        except Exception as e:  # a bug: keep the message as a dead letter, never die
            metrics.STAGE_ERRORS.labels("decode").inc()
            log.exception("decode failed for %s", raw.ident())
            rej = Rejected(Reason.BAD_TYPE, f"could not be decoded: {e!r}"[:500], None, None)
            return Incoming(raw, None, UNKNOWN_STREAM, Decoded(None, [], [rej]), 1)

    def _hand_over(self, batch: list[Incoming]) -> bool:
        while not self._abort.is_set():
            try:
                self._batches.put(batch, timeout=0.25)
                return True
            except queue.Full:
                continue
        return False

    # -- writer thread -------------------------------------------------------------

    def _write_loop(self) -> None:
        while not self._abort.is_set():
            try:
                batch = self._batches.get(timeout=0.25)
            except queue.Empty:
                self.stats.maybe_log(len(self._queue))
                if self._conn is None and not self._closing:
                    self._try_connect()
                self.watermark.idle(self._conn)
                self.watermark.publish(self._client, connected=self._subscribed.is_set())
                if self._decode_done.is_set() and self._batches.empty():
                    return
                continue
            try:
                self._write(batch)
            except _Abort:
                return
            except Exception:  # never reached by design; keep the thread alive regardless
                metrics.STAGE_ERRORS.labels("writer").inc()
                log.exception("writer failed on a batch of %d messages (%s ...)", len(batch),
                              batch[0].raw.ident())
            self.stats.maybe_log(len(self._queue))

    def _try_connect(self) -> None:
        try:
            self._connect()
        except psycopg.Error as e:
            log.debug("database not reachable yet: %s", e)

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._close_conn()
        conn = psycopg.connect(
            libpq_url(self.database_url), autocommit=False, connect_timeout=5,
            application_name=f"probation-ingest {self.client_id}"[:63],
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
        )
        try:
            service.prepare_staging(conn)
            n = self.directory.preload(conn)
            conn.commit()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._db_ready.set()
        log.info("ingest worker connected to the database (%d devices registered)", n)
        return conn

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _sleep(self, seconds: float) -> None:
        if self._abort.wait(seconds):
            raise _Abort

    def _retrying(
        self, work: Callable[[psycopg.Connection[Any]], T],
        on_retry: Callable[[Exception, int, float], None] | None = None,
    ) -> T:
        """`work(conn)`, then commit; through connection failures, reconnect and run it
        again after a backoff (doubling from RETRY_FIRST_S to RETRY_MAX_S) until it
        commits or the worker aborts (`_Abort`). `on_retry(error, failures, backoff)`
        before each wait. Any other error is rolled back and raised."""
        backoff = RETRY_FIRST_S
        failures = 0
        while True:
            if self._abort.is_set():
                raise _Abort
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = self._connect()
                out = work(conn)
                conn.commit()
                return out
            except Exception as e:
                if not self._recover(conn, e):
                    raise
                failures += 1
                if on_retry is not None:
                    on_retry(e, failures, backoff)
                self._sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)

    def _recover(self, conn: psycopg.Connection[Any] | None, error: Exception) -> bool:
        """After a failed transaction: roll back (or drop a broken connection); whether
        the failure was the connection's (worth retrying) rather than the data's."""
        if conn is not None and not conn.broken and not conn.closed:
            try:
                conn.rollback()
            except psycopg.Error:
                self._close_conn()
        lost = conn is None or conn.broken or conn.closed
        if lost:
            self._close_conn()
            self._db_ready.clear()
        return lost or isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)

    def _write(self, batch: list[Incoming]) -> None:
        """Commit `batch` (retrying through database outages), then acknowledge it."""
        failed = 0

        def store(conn: psycopg.Connection[Any]) -> tuple[float, BatchResult]:
            t0 = time.perf_counter()
            result = self.writer.write(conn, batch, directory=self.directory)
            self.watermark.stage(conn, len(batch))
            return t0, result

        def retry(e: Exception, failures: int, backoff: float) -> None:
            nonlocal failed
            failed = failures
            self.stats.db_error()
            if failures == 1 or failures % 20 == 0:
                log.warning("database error, batch of %d messages not stored (attempt %d), "
                            "retrying in %.1fs: %s", len(batch), failures, backoff,
                            str(e).strip()[:300])

        try:
            t0, result = self._retrying(store, retry)
        except _Abort:
            raise
        except Exception as e:
            self._isolate(batch, e)
            return
        commit_s = time.perf_counter() - t0
        if failed:
            log.info("database back: batch stored after %d failed attempts", failed)
        self._committed(batch, result, commit_s)

    def _isolate(self, batch: list[Incoming], error: Exception) -> None:
        """A batch failed on something other than the connection: find the poison message."""
        if len(batch) > 1:
            metrics.STAGE_ERRORS.labels("batch").inc()
            log.warning("batch of %d messages failed (%r); storing message by message",
                        len(batch), error)
            for inc in batch:
                self._write([inc])
            return
        inc = batch[0]
        raw = inc.raw
        metrics.STAGE_ERRORS.labels("store").inc()
        log.error("message %s could not be stored (%r); kept as a dead letter", raw.ident(),
                  error)
        reason = (
            Reason.OUT_OF_RANGE if isinstance(error, psycopg.errors.NumericValueOutOfRange)
            else Reason.BAD_TYPE
        )
        row = dead_letter(raw, Rejected(reason, f"could not be stored: {error}"[:1000], None, None))
        try:
            self._retrying(lambda conn: service.insert_dead_letters(conn, rows=[row]))
        except _Abort:
            raise
        except Exception as e:
            log.critical("message %s could not even be kept as a dead letter (%r); "
                         "acknowledged and dropped", raw.ident(), e)
        res = BatchResult(messages=1, items=1)
        res.received[inc.stream] += 1
        res.dead[reason.value] += 1
        self._committed(batch, res, 0.0)

    def _committed(self, batch: list[Incoming], result: BatchResult, commit_s: float) -> None:
        """After the commit: acknowledge on the arrival connection, count, notify."""
        self.watermark.committed(len(batch))
        self.watermark.publish(self._client, connected=self._subscribed.is_set())
        now = time.time()
        client = self._client
        with self._ack_lock:
            gen = self._gen
            if client is not None:
                for inc in batch:
                    raw = inc.raw
                    if raw.qos and raw.generation == gen:
                        client.ack(raw.mid, raw.qos)
        msgs = Counter(inc.stream for inc in batch)
        for stream, n in result.received.items():
            self.stats.received(stream, msgs[stream], n)
        # The lag histograms sample a batch (all its messages commit at the same instant).
        step = max(1, len(batch) // LAG_SAMPLES)
        fix_ts = result.newest_fix_ts
        self.stats.committed(
            stored=dict(result.stored), duplicates=dict(result.duplicates),
            dead=dict(result.dead), items=result.items, commit_s=commit_s,
            lags_s=[now - inc.raw.received_at for inc in batch[::step]],
            publish_lags_s=[now - ts for ts in fix_ts[::max(1, len(fix_ts) // LAG_SAMPLES)]],
        )
        if self.on_commit is not None:
            try:
                self.on_commit(CommitInfo([inc.raw for inc in batch], result, now, commit_s))
            except Exception:
                log.exception("on_commit callback failed")
