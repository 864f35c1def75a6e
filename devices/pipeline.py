"""The ingest pipeline's stages, from a raw MQTT message to committed rows.

    receive (paho thread) → bounded queue → decode + validate (`decode_stage`)
    → batch (N items / M messages / T ms) → `BatchWriter.stages`:
      resolve devices → accumulate per device → find cases → judge check-ins
      → build rows → lock devices → store (COPY + dedup) → after-store stages
      (`BatchWriter.after_store`: geofence, check-in outcomes, silence gaps; wired
      in `probation.runtime.workers.build_ingestion`) → inventory → acks → dead letters
    → commit → acknowledge to the broker

`devices.ingest.IngestWorker` runs the threads; this module holds the pieces
they call: the bounded queue, the decode stage, the device directory, the stage
interfaces (`AfterStoreStage`, `CheckinJudge`) and `BatchWriter`, which writes one
batch inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter
from typing import Any, Protocol

import orjson

from devices import metrics, service
from devices.protocol import (
    MAX_PAYLOAD,
    Ack,
    Checkin,
    Decoded,
    DeviceEvent,
    Fix,
    Reason,
    Rejected,
    Status,
    Stream,
    decode,
    parse_topic,
)
from devices.redact import redact_payload, redact_text, redact_value
from devices.service import AckRow, Conn, DeadLetterRow, InventoryUpdate

log = logging.getLogger(__name__)

FLOAT4_MAX = 3.4028234663852886e38
GOOD_FIX_ACC_M = 100.0
UNKNOWN_STREAM = "unknown"
DEDUP_WINDOW_S = 10.0  # after a key conflict, deduplicate every batch for this long

# --------------------------------------------------------------------------- receive


@dataclass(slots=True)
class RawMessage:
    """One MQTT message as the paho thread hands it over."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    generation: int  # the broker connection it arrived on: acks are only valid there
    received_at: float  # time.time() at arrival

    def ident(self) -> str:
        """How logs name this message."""
        return f"topic={self.topic!r} mid={self.mid}"


class ByteBoundedQueue:
    """A FIFO bounded by message count and payload bytes: `put` blocks while it is full.

    A single message larger than the byte bound still goes in when the queue is
    empty. One producer (the paho thread) and one consumer (the decode thread);
    each side only signals the other when it is actually waiting.
    """

    def __init__(self, *, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._q: deque[RawMessage] = deque()
        self._bytes = 0
        self._cond = threading.Condition(threading.Lock())
        self._getter_waiting = False
        self._putter_waiting = False

    def __len__(self) -> int:
        return len(self._q)

    @property
    def bytes(self) -> int:
        return self._bytes

    def put(self, msg: RawMessage, timeout: float | None = None, *, force: bool = False) -> bool:
        """Append, waiting while full; False if `timeout` passed first. `force`: append
        at once, over the bounds."""
        size = len(msg.payload)
        q = self._q
        with self._cond:
            if not force and q and (
                len(q) >= self.max_items or self._bytes + size > self.max_bytes
            ):
                deadline = None if timeout is None else time.monotonic() + timeout
                while q and (len(q) >= self.max_items or self._bytes + size > self.max_bytes):
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._putter_waiting = True
                    self._cond.wait(left)
                self._putter_waiting = False
            q.append(msg)
            self._bytes += size
            if self._getter_waiting:
                self._cond.notify()
            return True

    def discard(self, pred: Callable[[RawMessage], bool]) -> int:
        """Remove the queued messages `pred` selects; returns how many."""
        with self._cond:
            keep = [m for m in self._q if not pred(m)]
            n = len(self._q) - len(keep)
            if n:
                self._q.clear()  # in place: the other side may hold a reference
                self._q.extend(keep)
                self._bytes = sum(len(m.payload) for m in keep)
                if self._putter_waiting:
                    self._cond.notify()
            return n

    def get_many(self, max_items: int, timeout: float) -> list[RawMessage]:
        """Up to `max_items` messages, waiting at most `timeout` for the first one."""
        q = self._q
        with self._cond:
            if not q and timeout > 0:
                self._getter_waiting = True
                self._cond.wait(timeout)
                self._getter_waiting = False
            n = min(len(q), max_items)
            out = [q.popleft() for _ in range(n)]
            if out:
                self._bytes -= sum(len(m.payload) for m in out)
                if self._putter_waiting:
                    self._cond.notify()
            return out


# --------------------------------------------------------------------------- decode


@dataclass(slots=True)
class Incoming:
    """A received message after the decode stage.

    `decoded` is None for check-ins: their validation needs the enrolled template
    length, looked up by the writer (`BatchWriter`).
    """

    raw: RawMessage
    serial: str | None
    stream: str
    decoded: Decoded | None
    items: int


def is_downlink(topic: str, prefix: str) -> bool:
    """Our own `{prefix}/devices/{serial}/commands` traffic, seen through the `#` subscription."""
    if not topic.endswith("/commands"):
        return False
    head = prefix.rstrip("/") + "/devices/"
    if not topic.startswith(head):
        return False
    return "/" not in topic[len(head):-len("/commands")]


def decode_stage(raw: RawMessage, *, prefix: str, now: datetime | None = None) -> Incoming:
    """Parse and validate one message (pure: no database)."""
    t = parse_topic(raw.topic, prefix)
    if t is not None and t.stream is Stream.CHECKINS:
        return Incoming(raw, t.serial, t.stream.value, None, 1)
    d = decode(raw.topic, raw.payload, prefix=prefix, now=now)
    n = len(d.items) + len(d.rejected) + d.duplicates
    return Incoming(
        raw, None if t is None else t.serial, UNKNOWN_STREAM if t is None else t.stream.value,
        d, n,
    )


# --------------------------------------------------------------------------- directory


class DeviceDirectory:
    """serial → device id, cached (devices are never renamed); unknown serials for `negative_ttl`."""

    def __init__(self, *, negative_ttl: float = 2.0) -> None:
        self.negative_ttl = negative_ttl
        self._known: dict[str, uuid.UUID] = {}
        self._unknown: dict[str, float] = {}

    def preload(self, conn: Conn) -> int:
        self._known = service.load_devices(conn)
        self._unknown.clear()
        return len(self._known)

    def resolve(self, conn: Conn, serials: set[str]) -> dict[str, uuid.UUID]:
        """The registered devices among `serials` (one query for the cache misses)."""
        now = time.monotonic()
        known = self._known
        misses = [
            s for s in serials
            if s not in known and self._unknown.get(s, 0.0) <= now
        ]
        if misses:
            found = service.lookup_devices(conn, serials=misses)
            known.update(found)
            for s in misses:
                if s not in found:
                    self._unknown[s] = now + self.negative_ttl
            if len(self._unknown) > 100_000:
                self._unknown = {k: v for k, v in self._unknown.items() if v > now}
        return {s: known[s] for s in serials if s in known}


# --------------------------------------------------------------------------- stage interfaces


@dataclass(slots=True)
class CheckinVerdict:
    """The outcome of a check-in: whether it passed and the similarity to the template.

    `pending`: camera frames, decided later by the check-in verifier off the ingest path;
    `reason`: why it failed when the judge already knows (e.g. `untrusted_device_biometrics`).
    """

    passed: bool
    similarity: float | None
    pending: bool = False
    reason: str | None = None


@dataclass(slots=True)
class StoredCheckin:
    checkin: Checkin
    verdict: CheckinVerdict


@dataclass(slots=True)
class DeviceBatch:
    """What one batch newly stored for one device, each list sorted by `ts` (the input
    of the after-store stages).

    Duplicates (items already stored) are not in it: each item reaches the after-store
    stages once. `case_id` is the device's active case (None: stored, evaluated by
    nothing). `received_at` is the arrival of its latest message.
    """

    device_id: uuid.UUID
    serial: str
    case_id: uuid.UUID | None
    received_at: datetime
    fixes: list[Fix] = field(default_factory=list)
    events: list[DeviceEvent] = field(default_factory=list)
    checkins: list[StoredCheckin] = field(default_factory=list)


class AfterStoreStage(Protocol):
    """A stage that acts on newly stored telemetry (geofence, check-in outcomes, silence
    gaps, …), inside the batch's transaction, after the COPY and before the commit."""

    @property
    def name(self) -> str:
        """How logs and `probation_ingest_stage_errors_total{stage=…}` name it."""
        ...

    def on_batch(self, conn: Conn, batches: Sequence[DeviceBatch]) -> None:
        """Called once per batch with the devices that have new items (each row-locked).

        Work on `conn` (never commit or roll back). An exception rolls back what
        this stage did for the batch (the other stages keep theirs); the writer then
        retries it device by device and counts and logs the devices that still fail;
        the telemetry is stored either way.
        """
        ...


class CheckinJudge(Protocol):
    """Decides each check-in (`passed`, `similarity`) before it is stored."""

    def evaluate(
        self, conn: Conn, *, device_id: uuid.UUID, case_id: uuid.UUID | None,
        checkins: Sequence[Checkin],
    ) -> Sequence[CheckinVerdict]:
        """One verdict per check-in, same order; runs inside the batch's transaction.

        Sees every valid check-in, including a redelivered one (its row is then
        not stored twice), so it must not have side effects: act on stored
        check-ins in an after-store stage instead.
        """
        ...


class UndecidedCheckins:
    """The default check-in judge: without a biometric comparison, nothing passes.

    Every check-in is stored with `passed = false` and `similarity = NULL`: the
    judge installed by the biometric component decides (cosine similarity to the
    enrolled template and liveness thresholds).
    """

    def evaluate(
        self, conn: Conn, *, device_id: uuid.UUID, case_id: uuid.UUID | None,
        checkins: Sequence[Checkin],
    ) -> Sequence[CheckinVerdict]:
        return [CheckinVerdict(False, None) for _ in checkins]


# --------------------------------------------------------------------------- writer


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _lenient_loads(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload.decode("utf-8"))


def fingerprint(topic: str, index: int | None, payload: bytes) -> bytes:
    """Identity of a rejection: the same message (and item) always gives the same bytes."""
    h = hashlib.sha256(topic.encode("utf-8", "backslashreplace"))
    h.update(b"\x00" + (b"-" if index is None else str(index).encode()) + b"\x00")
    h.update(payload)
    return h.digest()


def _text(s: str) -> str:
    """A string PostgreSQL can store (no NUL)."""
    return s.replace("\x00", "\\x00")


def dead_letter(raw: RawMessage, rej: Rejected) -> DeadLetterRow:
    """The dead-letter row of a rejection: the whole payload (capped) or the item as JSON,
    biometric fields (embeddings, frames) replaced by their size."""
    if rej.index is None:
        body = redact_payload(raw.topic, raw.payload)[:MAX_PAYLOAD]
    else:
        try:
            body = orjson.dumps(redact_value(rej.item)[0])
        except (TypeError, orjson.JSONEncodeError):
            body = redact_text(repr(rej.item)).encode("utf-8", "backslashreplace")
        body = body[:MAX_PAYLOAD]
    return DeadLetterRow(
        topic=_text(raw.topic), reason=rej.reason.value, detail=_text(redact_text(rej.detail)),
        item_index=rej.index, payload=body,
        fingerprint=fingerprint(raw.topic, rej.index, raw.payload),
    )


def _has_nul(s: str | None) -> bool:
    return s is not None and "\x00" in s


@dataclass
class BatchResult:
    """What a committed batch did (for metrics and tests)."""

    messages: int = 0
    items: int = 0
    received: Counter[str] = field(default_factory=Counter)
    stored: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    # Per fixes message: the newest fix's ts (the publish-time proxy), epoch seconds.
    newest_fix_ts: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _DeviceAcc:
    """One device's share of a batch, accumulated in arrival order."""

    device_id: uuid.UUID
    serial: str
    received_at: float = 0.0  # latest arrival of any of its messages
    heard_at: float = 0.0  # latest arrival that counts as hearing from it (last_seen)
    online: bool | None = None
    firmware: str | None = None
    status_battery: int | None = None
    fixes: list[Fix] = field(default_factory=list)
    events: list[DeviceEvent] = field(default_factory=list)
    event_details: dict[int, str | None] = field(default_factory=dict)  # id(event) → JSON
    checkins: list[Checkin] = field(default_factory=list)
    raws: list[RawMessage] = field(default_factory=list)

    def idents(self) -> str:
        return ", ".join(r.ident() for r in self.raws[:20])

    def inventory(self) -> InventoryUpdate:
        """The inventory facts of this batch (fixes already sorted by ts)."""
        inv = InventoryUpdate(
            device_id=self.device_id, online=self.online, firmware=self.firmware,
            status_battery=self.status_battery,
            last_seen=_utc(self.heard_at) if self.heard_at else None,
        )
        fs = self.fixes
        if fs:
            inv.last_fix_at = fs[-1].ts
            for f in reversed(fs):
                if f.acc <= GOOD_FIX_ACC_M:
                    inv.last_good_fix_at = f.ts
                    break
            for f in reversed(fs):
                if f.bat is not None:
                    inv.fix_battery, inv.fix_battery_ts = f.bat, f.ts
                    break
        return inv


_TS = attrgetter("ts")
_FIX_FIELDS = attrgetter("seq", "ts", "lat", "lon", "acc", "src", "spd", "hdg", "bat")
_DEVICE_ORDER = attrgetter("device_id.int")


@dataclass(slots=True)
class _Batch:
    """One batch on its way through `BatchWriter`'s stages; each stage fills in its part."""

    incoming: Sequence[Incoming]
    directory: DeviceDirectory
    now: Callable[[], datetime]
    res: BatchResult
    dead: list[DeadLetterRow] = field(default_factory=list)
    # resolve_devices
    ids: dict[str, uuid.UUID] = field(default_factory=dict)
    # accumulate
    devs: dict[str, _DeviceAcc] = field(default_factory=dict)
    ordered: list[_DeviceAcc] = field(default_factory=list)  # by device id, items by ts
    statuses: int = 0
    acks: list[tuple[uuid.UUID, RawMessage, Ack]] = field(default_factory=list)
    # find_cases, judge_checkins
    cases: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    verdicts: dict[int, CheckinVerdict] = field(default_factory=dict)  # id(checkin) → verdict
    # build_rows
    fix_rows: list[tuple[Any, ...]] = field(default_factory=list)
    event_rows: list[tuple[Any, ...]] = field(default_factory=list)
    checkin_rows: list[tuple[Any, ...]] = field(default_factory=list)
    # store: the keys newly stored per stream (None: every row was new)
    new_fixes: list[service.Key] | None = None
    new_events: list[service.Key] | None = None
    new_checkins: list[service.Key] | None = None

    @property
    def device_ids(self) -> list[uuid.UUID]:
        return [a.device_id for a in self.ordered]


Stage = Callable[[Conn, _Batch], None]


class BatchWriter:
    """Writes one batch of decoded messages inside the caller's open transaction.

    `write` runs `self.stages` in order: that list is the whole path of a batch.
    `after_store` are the stages that act on what was newly stored (in the service:
    `probation.runtime.workers.build_ingestion`); `checkin_judge` decides each check-in before
    it is stored.
    """

    def __init__(
        self, *, prefix: str, after_store: Sequence[AfterStoreStage] = (),
        checkin_judge: CheckinJudge | None = None,
    ) -> None:
        self.prefix = prefix
        self.after_store: tuple[AfterStoreStage, ...] = tuple(after_store)
        self.checkin_judge: CheckinJudge = checkin_judge or UndecidedCheckins()
        self._dedup_until = 0.0
        #: What happens to a batch, in order (decoding happened before, in `decode_stage`).
        self.stages: tuple[Stage, ...] = (
            self.resolve_devices,  # serial → device id; unknown devices → dead letters
            self.accumulate,  # per device in arrival order; check-ins decoded here
            self.find_cases,  # the active case of each device
            self.judge_checkins,  # a verdict per check-in (`checkin_judge`, no side effects)
            self.build_rows,  # rows per device sorted by ts, devices in id order
            self.lock_devices,  # row-lock the batch's devices (serialises the seq lookup)
            self.store,  # COPY fixes, events, check-ins; a (device, stream, seq) stored: dup
            self.run_after_store,  # `after_store`, in order, each in its own savepoint
            self.update_inventory,  # last seen / last fix / battery / firmware
            self.apply_acks,  # command acknowledgements; unknown commands → dead letters
            self.store_dead_letters,  # every rejection of the batch
        )

    def write(
        self, conn: Conn, batch: Sequence[Incoming], *, directory: DeviceDirectory,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> BatchResult:
        """Store `batch` in the open transaction (the caller commits, then acknowledges)."""
        b = _Batch(batch, directory, now, BatchResult(messages=len(batch)))
        for stage in self.stages:
            stage(conn, b)
        return b.res

    # -- the stages, in the order of `self.stages` -----------------------------------

    def resolve_devices(self, conn: Conn, b: _Batch) -> None:
        serials = {m.serial for m in b.incoming if m.serial is not None}
        b.ids = b.directory.resolve(conn, serials) if serials else {}

    def accumulate(self, conn: Conn, b: _Batch) -> None:
        """Each message's items onto its device (`_DeviceAcc`), rejections to dead letters."""
        ids, res, dead = b.ids, b.res, b.dead
        # Check-ins are validated against the enrolled template length.
        checkin_ids = {
            ids[m.serial] for m in b.incoming
            if m.decoded is None and m.serial is not None and m.serial in ids
        }
        dims = service.enrolled_embedding_lengths(conn, device_ids=checkin_ids)
        t_now = b.now()
        devs = b.devs
        seen = _Seen()
        for m in b.incoming:
            acc: _DeviceAcc | None = None
            if m.serial is not None:
                acc = devs.get(m.serial) or self._new_device(m, b)
                if acc is None:
                    continue  # an unknown device: a dead letter
            d = m.decoded
            if d is None:  # a check-in message: validated now that its device is known
                assert acc is not None
                d = self._decode_checkins(m.raw, dims.get(acc.device_id), t_now)
                m.items = len(d.items) + len(d.rejected) + d.duplicates
            res.received[m.stream] += m.items
            res.items += m.items
            if d.duplicates:
                res.duplicates[m.stream] += d.duplicates
            for rej in d.rejected:
                dead.append(dead_letter(m.raw, rej))
            if acc is not None:  # else a bad topic: nothing else to do
                _add_items(acc, m.raw, m.stream, d.items, seen, b)

        # Devices in id order, items by ts (a stable insertion order keeps concurrent
        # workers from deadlocking on the keys).
        b.ordered = sorted(devs.values(), key=_DEVICE_ORDER)
        for a in b.ordered:
            a.fixes.sort(key=_TS)
            a.events.sort(key=_TS)
            a.checkins.sort(key=_TS)

    @staticmethod
    def _new_device(m: Incoming, b: _Batch) -> _DeviceAcc | None:
        """The device's accumulator, or None (and a dead letter) if it is not registered."""
        assert m.serial is not None
        dev_id = b.ids.get(m.serial)
        if dev_id is None:
            b.dead.append(dead_letter(m.raw, Rejected(
                Reason.UNKNOWN_DEVICE, f"device {m.serial!r} is not registered", None, None,
            )))
            b.res.received[m.stream] += 1
            return None
        acc = b.devs[m.serial] = _DeviceAcc(dev_id, m.serial)
        return acc

    def _decode_checkins(self, raw: RawMessage, dim: int | None, now: datetime) -> Decoded:
        return decode(raw.topic, raw.payload, prefix=self.prefix, now=now,
                      embedding_length=lambda _s: dim)

    def find_cases(self, conn: Conn, b: _Batch) -> None:
        if self.after_store or any(a.checkins for a in b.ordered):
            b.cases = service.active_cases(conn, device_ids=b.device_ids)

    def judge_checkins(self, conn: Conn, b: _Batch) -> None:
        for a in b.ordered:
            if a.checkins:
                verdicts = self._verdicts(conn, b.cases.get(a.device_id), a)
                for c, v in zip(a.checkins, verdicts, strict=True):
                    b.verdicts[id(c)] = v

    def _verdicts(
        self, conn: Conn, case_id: uuid.UUID | None, a: _DeviceAcc
    ) -> Sequence[CheckinVerdict]:
        """The judge's verdicts; if it fails: counted, logged, every check-in not passed."""
        try:
            with conn.transaction():
                out = list(self.checkin_judge.evaluate(
                    conn, device_id=a.device_id, case_id=case_id, checkins=a.checkins,
                ))
            if len(out) != len(a.checkins):
                raise ValueError(f"{len(out)} verdicts for {len(a.checkins)} check-ins")
            return out
        except Exception:
            if conn.broken:
                raise
            metrics.STAGE_ERRORS.labels("checkin_judge").inc()
            log.exception("check-in judge failed for device %s (%s); stored as not passed",
                          a.serial, a.idents())
            return [CheckinVerdict(False, None) for _ in a.checkins]

    def build_rows(self, conn: Conn, b: _Batch) -> None:
        for a in b.ordered:
            dev_id = a.device_id
            if a.fixes:
                b.fix_rows.extend(
                    map(tuple.__add__, repeat((dev_id,)), map(_FIX_FIELDS, a.fixes)))
            if a.events:
                b.event_rows.extend(
                    (dev_id, e.seq, e.ts, e.type, a.event_details[id(e)]) for e in a.events
                )
            if a.checkins:
                case_id = b.cases.get(dev_id)
                for c in a.checkins:
                    v = b.verdicts[id(c)]
                    b.checkin_rows.append((
                        dev_id, c.seq, c.ts, case_id, c.method, v.similarity, c.liveness,
                        v.passed, c.request_id, c.lat, c.lon, c.acc,
                    ))

    def store(self, conn: Conn, b: _Batch) -> None:
        """COPY the rows: a plain COPY first, deduplicating only after a recent conflict
        (a redelivery is going on). The after-store stages get the newly stored keys."""
        returning = bool(self.after_store)
        direct = time.monotonic() >= self._dedup_until
        n_fix, fix_keys, c1 = service.store_fixes(
            conn, rows=b.fix_rows, returning=returning, direct=direct)
        n_ev, ev_keys, c2 = service.store_events(
            conn, rows=b.event_rows, returning=returning, direct=direct)
        n_ci, ci_keys, c3 = service.store_checkins(
            conn, rows=b.checkin_rows, returning=returning, direct=direct)
        if c1 or c2 or c3:
            self._dedup_until = time.monotonic() + DEDUP_WINDOW_S
        res = b.res
        for stream, rows, n in (
            ("fixes", b.fix_rows, n_fix), ("events", b.event_rows, n_ev),
            ("checkins", b.checkin_rows, n_ci),
        ):
            if rows:
                res.stored[stream] += n
                res.duplicates[stream] += len(rows) - n
        b.new_fixes = None if n_fix == len(b.fix_rows) else fix_keys
        b.new_events = None if n_ev == len(b.event_rows) else ev_keys
        b.new_checkins = None if n_ci == len(b.checkin_rows) else ci_keys

    def lock_devices(self, conn: Conn, b: _Batch) -> None:
        service.lock_devices(conn, device_ids=b.device_ids)

    def run_after_store(self, conn: Conn, b: _Batch) -> None:
        """Each after-store stage, in order, on the devices with newly stored items."""
        if not self.after_store:
            return
        batches = _device_batches(b)
        if batches:
            for stage in self.after_store:
                run_after_store_stage(conn, stage, batches)

    def update_inventory(self, conn: Conn, b: _Batch) -> None:
        service.update_inventory(conn, updates=[a.inventory() for a in b.ordered])

    def apply_acks(self, conn: Conn, b: _Batch) -> None:
        if b.acks:
            b.dead.extend(_apply_acks(conn, b.acks))
        if b.statuses:
            b.res.stored["status"] += b.statuses

    def store_dead_letters(self, conn: Conn, b: _Batch) -> None:
        if b.dead:
            service.insert_dead_letters(conn, rows=b.dead)
            b.res.dead.update(r.reason for r in b.dead)


def run_after_store_stage(
    conn: Conn, stage: AfterStoreStage, batches: list[tuple[DeviceBatch, _DeviceAcc]]
) -> None:
    """One after-store stage in a savepoint; if it fails, again device by device. A device
    that still fails is counted (`probation_ingest_stage_errors_total{stage=<name>}`) and
    logged: its items stay stored, unevaluated by this stage. Only a broken connection
    propagates (the worker retries the whole batch)."""
    try:
        with conn.transaction():
            stage.on_batch(conn, [d for d, _a in batches])
        return
    except Exception:
        if conn.broken:
            raise
        log.warning("after-store stage %s failed for a batch of %d devices; retrying per "
                    "device", stage.name, len(batches), exc_info=True)
    for d, a in batches:
        try:
            with conn.transaction():
                stage.on_batch(conn, [d])
        except Exception:
            if conn.broken:
                raise
            metrics.STAGE_ERRORS.labels(stage.name).inc()
            log.exception("after-store stage %s failed for device %s (%s); its items are "
                          "stored but not evaluated by it", stage.name, d.serial, a.idents())


def _device_batches(b: _Batch) -> list[tuple[DeviceBatch, _DeviceAcc]]:
    """The after-store stages' input: per device, the items newly stored (each once)."""
    new_f = None if b.new_fixes is None else set(b.new_fixes)
    new_e = None if b.new_events is None else set(b.new_events)
    new_c = None if b.new_checkins is None else set(b.new_checkins)
    out: list[tuple[DeviceBatch, _DeviceAcc]] = []
    for a in b.ordered:
        dev_id = a.device_id
        d = DeviceBatch(
            device_id=dev_id, serial=a.serial, case_id=b.cases.get(dev_id),
            received_at=_utc(a.received_at),
            fixes=_take(dev_id, a.fixes, new_f),
            events=_take(dev_id, a.events, new_e),
            checkins=[StoredCheckin(c, b.verdicts[id(c)])
                      for c in _take(dev_id, a.checkins, new_c)],
        )
        if d.fixes or d.events or d.checkins:
            out.append((d, a))
    return out


# -- accumulate's helpers ------------------------------------------------------------


@dataclass(slots=True)
class _Seen:
    """The event and check-in keys already taken in this batch (in-batch duplicates)."""

    events: set[service.Key] = field(default_factory=set)
    checkins: set[service.Key] = field(default_factory=set)


def _add_items(
    acc: _DeviceAcc, raw: RawMessage, stream: str, items: list[Any], seen: _Seen, b: _Batch
) -> None:
    """One message's decoded items onto its device, by stream."""
    acc.raws.append(raw)
    if raw.received_at > acc.received_at:
        acc.received_at = raw.received_at
    if stream == "status":
        b.statuses += _add_statuses(acc, raw, items, b.dead)
        return
    # Any other message from a registered device: it is talking.
    acc.online = True
    if raw.received_at > acc.heard_at:
        acc.heard_at = raw.received_at
    if stream == "fixes":
        if items:
            _add_fixes(acc, raw, items, b)
    elif stream == "acks":
        b.acks.extend((acc.device_id, raw, ak) for ak in items)
    elif stream == "events":
        _add_events(acc, raw, items, seen.events, b.res, b.dead)
    elif stream == "checkins":
        _add_checkins(acc, raw, items, seen.checkins, b.res, b.dead)


def _add_fixes(acc: _DeviceAcc, raw: RawMessage, fixes: list[Fix], b: _Batch) -> None:
    if any(f.spd is not None and f.spd > FLOAT4_MAX for f in fixes):
        fixes = _oversized_speeds(raw, fixes, b.dead)
    acc.fixes.extend(fixes)
    if fixes:
        b.res.newest_fix_ts.append(max(map(_TS, fixes)).timestamp())


def _add_statuses(
    acc: _DeviceAcc, raw: RawMessage, items: list[Status], dead: list[DeadLetterRow]
) -> int:
    """Status messages update the inventory facts; returns how many were taken."""
    n = 0
    for st in items:
        if _has_nul(st.fw):
            dead.append(dead_letter(raw, Rejected(
                Reason.BAD_TYPE, "fw: contains a NUL character", None, None,
            )))
            continue
        n += 1
        acc.online = st.state == "online"
        if st.fw is not None:
            acc.firmware = st.fw
        if st.bat is not None:
            acc.status_battery = st.bat
        if acc.online and not raw.retain and raw.received_at > acc.heard_at:
            acc.heard_at = raw.received_at
    return n


def _oversized_speeds(raw: RawMessage, fixes: list[Fix], dead: list[DeadLetterRow]) -> list[Fix]:
    """Fixes whose speed does not fit the `real` column become dead letters."""
    keep = []
    for f in fixes:
        if f.spd is not None and f.spd > FLOAT4_MAX:
            dead.append(_item_dead(raw, f.seq, Reason.OUT_OF_RANGE,
                                   f"spd: {f.spd!r} is too large to store"))
        else:
            keep.append(f)
    return keep


def _add_events(
    acc: _DeviceAcc, raw: RawMessage, items: list[DeviceEvent],
    seen: set[service.Key], res: BatchResult, dead: list[DeadLetterRow],
) -> None:
    for e in items:
        detail: str | None = None
        if e.detail is not None:
            js = orjson.dumps(e.detail)
            if b"\\u0000" in js:
                dead.append(_item_dead(raw, e.seq, Reason.BAD_TYPE,
                                       "detail: contains a NUL character"))
                continue
            detail = js.decode()
        key = (acc.device_id, e.seq, e.ts)
        if key in seen:
            res.duplicates["events"] += 1
            continue
        seen.add(key)
        acc.events.append(e)
        acc.event_details[id(e)] = detail


def _add_checkins(
    acc: _DeviceAcc, raw: RawMessage, items: list[Checkin],
    seen: set[service.Key], res: BatchResult, dead: list[DeadLetterRow],
) -> None:
    for c in items:
        if _has_nul(c.request_id):
            dead.append(_item_dead(raw, c.seq, Reason.BAD_TYPE,
                                   "request_id: contains a NUL character"))
            continue
        key = (acc.device_id, c.seq, c.ts)
        if key in seen:
            res.duplicates["checkins"] += 1
            continue
        seen.add(key)
        acc.checkins.append(c)


# -- apply_acks's helper -------------------------------------------------------------


def _apply_acks(
    conn: Conn, acks: list[tuple[uuid.UUID, RawMessage, Ack]]
) -> list[DeadLetterRow]:
    rows: list[AckRow] = []
    raws: list[RawMessage] = []
    out: list[DeadLetterRow] = []
    for dev_id, raw, ak in acks:
        if _has_nul(ak.detail):
            out.append(dead_letter(raw, Rejected(
                Reason.BAD_TYPE, "detail: contains a NUL character", None, None,
            )))
            continue
        try:
            cid = uuid.UUID(ak.id)
        except ValueError:
            out.append(dead_letter(raw, Rejected(
                Reason.OUT_OF_RANGE, f"id: {_text(ak.id[:80])!r} is not a command id",
                None, None,
            )))
            continue
        rows.append(AckRow(
            device_id=dev_id, command_id=cid,
            acked_at=ak.ts or _utc(raw.received_at), result=ak.result, detail=ak.detail,
        ))
        raws.append(raw)
    matched = service.apply_acks(conn, acks=rows)
    for r, raw in zip(rows, raws, strict=True):
        if r.command_id not in matched:
            out.append(dead_letter(raw, Rejected(
                Reason.OUT_OF_RANGE,
                f"id: no command {r.command_id} was sent to this device", None, None,
            )))
    return out


def _take(dev_id: uuid.UUID, items: list[Any], keys: set[service.Key] | None) -> list[Any]:
    """The items whose key was newly stored, each key once (`keys` None: all of them)."""
    if not items:
        return []
    if keys is None:
        return list(items)
    out = []
    for x in items:
        k = (dev_id, x.seq, x.ts)
        if k in keys:
            keys.discard(k)
            out.append(x)
    return out


def _item_dead(raw: RawMessage, seq: int, reason: Reason, detail: str) -> DeadLetterRow:
    """A dead letter for a decoded item the database cannot store (rare): find its index."""
    index: int | None = None
    item: object = None
    try:
        obj = _lenient_loads(raw.payload)
        items = next(iter(obj.values())) if isinstance(obj, dict) and obj else []
        for i, it in enumerate(items if isinstance(items, list) else []):
            if isinstance(it, dict) and it.get("seq") == seq:
                index, item = i, it
                break
    except Exception:
        pass
    if index is None:
        return dead_letter(raw, Rejected(reason, f"seq {seq}: {detail}", None, None))
    return dead_letter(raw, Rejected(reason, detail, item, index))
