"""All SQL of the devices domain: telemetry COPY with dedup, inventory, dead letters, commands.

Every function takes an open psycopg connection and works inside the caller's
transaction: none of them commits (the ingest pipeline commits per batch, the
downlink per command).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row

Conn = psycopg.Connection[Any]

# --------------------------------------------------------------------------- devices


def load_devices(conn: Conn) -> dict[str, uuid.UUID]:
    """Every registered device: serial → id."""
    return {r[0]: r[1] for r in conn.execute("SELECT serial, id FROM devices")}


def broker_accounts(conn: Conn) -> list[tuple[str, str]]:
    """(serial, password hash) of every device that has broker credentials."""
    rows = conn.execute(
        "SELECT serial, mqtt_password_hash FROM devices WHERE mqtt_password_hash IS NOT NULL"
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def lookup_devices(conn: Conn, *, serials: Collection[str]) -> dict[str, uuid.UUID]:
    """The registered devices among `serials`: serial → id."""
    if not serials:
        return {}
    rows = conn.execute(
        "SELECT serial, id FROM devices WHERE serial = ANY(%s)", (list(serials),)
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def active_cases(conn: Conn, *, device_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """device id → id of the active case it is assigned to (devices without one are absent)."""
    if not device_ids:
        return {}
    rows = conn.execute(
        "SELECT a.device_id, a.case_id FROM device_assignments a "
        "JOIN cases c ON c.id = a.case_id AND c.status = 'active' "
        "WHERE a.unassigned_at IS NULL AND a.device_id = ANY(%s)",
        (list(device_ids),),
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def enrolled_embedding_lengths(
    conn: Conn, *, device_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """device id → length of the face template enrolled for the person of its active case."""
    if not device_ids:
        return {}
    rows = conn.execute(
        "SELECT a.device_id, t.dim FROM device_assignments a "
        "JOIN cases c ON c.id = a.case_id AND c.status = 'active' "
        "JOIN biometric_templates t ON t.subject_id = c.subject_id AND t.method = 'face' "
        "WHERE a.unassigned_at IS NULL AND a.device_id = ANY(%s)",
        (list(device_ids),),
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def lock_devices(conn: Conn, *, device_ids: Collection[uuid.UUID]) -> None:
    """Row-lock the devices in id order until commit.

    Two workers that ever hold batches of the same device (shared subscription)
    then evaluate and update that device one after the other, never interleaved,
    and without deadlocks (same lock order everywhere).
    """
    if device_ids:
        conn.execute(
            "SELECT 1 FROM devices WHERE id IN "
            "(SELECT value::uuid FROM json_array_elements_text(%s::json)) "
            "ORDER BY id FOR UPDATE",
            (orjson.dumps(list(device_ids)).decode(),),
        ).fetchall()


@dataclass(slots=True)
class InventoryUpdate:
    """What one batch says about a device; None fields leave the column as it is."""

    device_id: uuid.UUID
    last_seen: datetime | None = None
    online: bool | None = None
    firmware: str | None = None
    status_battery: int | None = None
    fix_battery: int | None = None
    fix_battery_ts: datetime | None = None
    last_fix_at: datetime | None = None
    last_good_fix_at: datetime | None = None


def update_inventory(conn: Conn, *, updates: Sequence[InventoryUpdate]) -> None:
    """Apply inventory facts: times only move forward; a fix's battery only if it is the newest fix.

    A status battery reading wins over a fix's (it is sent live on connect).
    """
    if not updates:
        return
    # One JSON parameter (orjson writes UUIDs and datetimes natively): much cheaper than
    # nine array parameters for a batch of thousands of devices.
    doc = orjson.dumps([
        (u.device_id, u.last_seen, u.online, u.firmware, u.status_battery, u.fix_battery,
         u.fix_battery_ts, u.last_fix_at, u.last_good_fix_at)
        for u in updates
    ])
    conn.execute(
        """
        UPDATE devices d SET
            last_seen = greatest(d.last_seen, v.last_seen),
            online = coalesce(v.online, d.online),
            firmware = coalesce(v.firmware, d.firmware),
            battery = CASE
                WHEN v.status_bat IS NOT NULL THEN v.status_bat
                WHEN v.fix_bat IS NOT NULL
                     AND (d.last_fix_at IS NULL OR v.fix_bat_ts >= d.last_fix_at) THEN v.fix_bat
                ELSE d.battery END,
            last_fix_at = greatest(d.last_fix_at, v.last_fix_at),
            last_good_fix_at = greatest(d.last_good_fix_at, v.last_good_fix_at),
            updated_at = now()
        FROM (
            SELECT (r->>0)::uuid AS id, (r->>1)::timestamptz AS last_seen,
                   (r->>2)::bool AS online, r->>3 AS firmware, (r->>4)::int2 AS status_bat,
                   (r->>5)::int2 AS fix_bat, (r->>6)::timestamptz AS fix_bat_ts,
                   (r->>7)::timestamptz AS last_fix_at, (r->>8)::timestamptz AS last_good_fix_at
            FROM json_array_elements(%s::json) AS r
        ) v
        WHERE d.id = v.id
        """,
        (doc.decode(),),
    )


# --------------------------------------------------------------------------- telemetry

# Staging tables, one set per connection, emptied at every commit.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_fixes (
    device_id uuid, seq bigint, ts timestamptz, lat float8, lon float8, acc float4,
    src text, spd float4, hdg float4, bat int2
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS ingest_events (
    device_id uuid, seq bigint, ts timestamptz, type text, detail text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS ingest_checkins (
    device_id uuid, seq bigint, ts timestamptz, case_id uuid, method text, similarity float4,
    liveness float4, passed bool, request_id text, lat float8, lon float8, acc float4
) ON COMMIT DELETE ROWS;
"""

FIX_COLUMNS = ("device_id", "seq", "ts", "lat", "lon", "acc", "src", "spd", "hdg", "bat")
FIX_TYPES = ("uuid", "int8", "timestamptz", "float8", "float8", "float4", "text", "float4",
             "float4", "int2")
EVENT_COLUMNS = ("device_id", "seq", "ts", "type", "detail")
EVENT_TYPES = ("uuid", "int8", "timestamptz", "text", "text")
CHECKIN_COLUMNS = ("device_id", "seq", "ts", "case_id", "method", "similarity", "liveness",
                   "passed", "request_id", "lat", "lon", "acc")
CHECKIN_TYPES = ("uuid", "int8", "timestamptz", "uuid", "text", "float4", "float4", "bool",
                 "text", "float8", "float8", "float4")

# (device_id, seq, ts): a stored telemetry row's key (the unique index; the contract's
# dedup key is (device, stream, seq): see `stored_seqs`).
Key = tuple[uuid.UUID, int, datetime]


def prepare_staging(conn: Conn) -> None:
    """Create this connection's staging tables (idempotent; call once per connection)."""
    conn.execute(_STAGING)


def copy_rows(
    conn: Conn, *, table: str, columns: Sequence[str], types: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    """Binary COPY of `rows` into `table`."""
    with conn.cursor() as cur, cur.copy(
        f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    ) as cp:
        cp.set_types(list(types))
        for row in rows:
            cp.write_row(row)


def stored_seqs(
    conn: Conn, *, table: str, keys: Iterable[tuple[uuid.UUID, int]]
) -> set[tuple[uuid.UUID, int]]:
    """The (device_id, seq) among `keys` already stored in `table`, whatever their ts.

    The contract's dedup key is (device, stream, seq); the hypertables' unique index
    must include ts (their partitioning column), so the seq is looked up here: one
    range scan of the (device_id, seq, ts) index per device and chunk.
    """
    by_dev: dict[uuid.UUID, list[int]] = {}
    for dev, seq in keys:
        by_dev.setdefault(dev, []).append(seq)
    if not by_dev:
        return set()
    devs = list(by_dev)
    lo = [min(by_dev[d]) for d in devs]
    hi = [max(by_dev[d]) for d in devs]
    cur = conn.execute(
        f"SELECT t.device_id, t.seq FROM unnest(%s::uuid[], %s::int8[], %s::int8[])"
        f" AS k(device_id, lo, hi) JOIN {table} t ON t.device_id = k.device_id"
        " AND t.seq BETWEEN k.lo AND k.hi",
        (devs, lo, hi),
    )
    wanted = {(d, s) for d, seqs in by_dev.items() for s in seqs}
    return {(d, s) for d, s in cur.fetchall() if (d, s) in wanted}


def _new_seqs(
    conn: Conn, *, table: str, rows: Sequence[Sequence[Any]]
) -> Sequence[Sequence[Any]]:
    """`rows` without the items whose (device_id, seq) is stored or came earlier in `rows`."""
    stored = stored_seqs(conn, table=table, keys=((r[0], r[1]) for r in rows))
    out = []
    for r in rows:
        k = (r[0], r[1])
        if k not in stored:
            stored.add(k)
            out.append(r)
    return out if len(out) < len(rows) else rows


def _store(
    conn: Conn, *, staging: str, table: str, columns: Sequence[str], types: Sequence[str],
    select: str, rows: Sequence[Sequence[Any]], returning: bool, direct: bool,
) -> tuple[int, list[Key] | None, bool]:
    if not rows:
        return 0, [] if returning else None, False
    new = _new_seqs(conn, table=table, rows=rows)
    if len(new) < len(rows):
        if not new:
            return 0, [] if returning else None, True
        n, keys, _ = _insert(conn, staging=staging, table=table, columns=columns, types=types,
                             select=select, rows=new, returning=returning, direct=False)
        return n, keys, True
    return _insert(conn, staging=staging, table=table, columns=columns, types=types,
                   select=select, rows=rows, returning=returning, direct=direct)


def _insert(
    conn: Conn, *, staging: str, table: str, columns: Sequence[str], types: Sequence[str],
    select: str, rows: Sequence[Sequence[Any]], returning: bool, direct: bool,
) -> tuple[int, list[Key] | None, bool]:
    if direct:
        # Fast path: COPY straight into the table; any stored key aborts it (savepoint).
        try:
            with conn.transaction():
                copy_rows(conn, table=table, columns=columns, types=types, rows=rows)
            return len(rows), [(r[0], r[1], r[2]) for r in rows] if returning else None, False
        except psycopg.errors.UniqueViolation:
            pass
    copy_rows(conn, table=staging, columns=columns, types=types, rows=rows)
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} FROM {staging} "
        "ON CONFLICT DO NOTHING"
    )
    with conn.cursor() as cur:
        if returning:
            cur.execute(sql + " RETURNING device_id, seq, ts")
            keys: list[Key] = cur.fetchall()
            return len(keys), keys, direct
        cur.execute(sql)
        return cur.rowcount, None, direct


def store_fixes(
    conn: Conn, *, rows: Sequence[Sequence[Any]], returning: bool = False, direct: bool = False,
) -> tuple[int, list[Key] | None, bool]:
    """Store fix rows (FIX_COLUMNS order), skipping (device_id, seq) already stored
    (whatever their ts) and repeated in `rows` (the first is kept).

    Returns (rows inserted, their keys if `returning`, whether a key conflict was
    met). With `direct`, a plain COPY into the hypertable is tried first (no
    staging table, no ON CONFLICT); the first stored key rolls it back to the
    deduplicating path: COPY into a staging table, then INSERT … ON CONFLICT DO NOTHING.
    """
    return _store(
        conn, staging="ingest_fixes", table="fixes", columns=FIX_COLUMNS, types=FIX_TYPES,
        select=", ".join(FIX_COLUMNS), rows=rows, returning=returning, direct=direct,
    )


def store_events(
    conn: Conn, *, rows: Sequence[Sequence[Any]], returning: bool = False, direct: bool = False,
) -> tuple[int, list[Key] | None, bool]:
    """Store device-event rows (EVENT_COLUMNS order; detail as JSON text or None)."""
    return _store(
        conn, staging="ingest_events", table="device_events", columns=EVENT_COLUMNS,
        types=EVENT_TYPES, select="device_id, seq, ts, type, detail::jsonb", rows=rows,
        returning=returning, direct=False,
    )


def store_checkins(
    conn: Conn, *, rows: Sequence[Sequence[Any]], returning: bool = False, direct: bool = False,
) -> tuple[int, list[Key] | None, bool]:
    """Store check-in rows (CHECKIN_COLUMNS order)."""
    return _store(
        conn, staging="ingest_checkins", table="checkins", columns=CHECKIN_COLUMNS,
        types=CHECKIN_TYPES, select=", ".join(CHECKIN_COLUMNS), rows=rows, returning=returning,
        direct=direct,
    )


# --------------------------------------------------------------------------- dead letters


@dataclass(slots=True)
class DeadLetterRow:
    """One rejection to keep; `fingerprint` makes a redelivered rejection a no-op."""

    topic: str
    reason: str
    detail: str
    item_index: int | None
    payload: bytes
    fingerprint: bytes


def insert_dead_letters(conn: Conn, *, rows: Sequence[DeadLetterRow]) -> int:
    """Keep rejections (a fingerprint already stored is skipped); returns how many were new."""
    if not rows:
        return 0
    cols: list[list[Any]] = [[], [], [], [], [], []]
    for r in rows:
        cols[0].append(r.topic)
        cols[1].append(r.reason)
        cols[2].append(r.detail)
        cols[3].append(r.item_index)
        cols[4].append(r.payload)
        cols[5].append(r.fingerprint)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO dead_letters (topic, reason, detail, item_index, payload, fingerprint) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int4[], %s::bytea[], "
            "%s::bytea[]) ON CONFLICT (fingerprint) DO NOTHING",
            cols,
        )
        return cur.rowcount


def list_dead_letters(
    conn: Conn, *, reason: str | None = None, since: datetime | None = None,
    before_id: int | None = None, limit: int = 50, payload_cap: int = 4096,
) -> list[dict[str, Any]]:
    """Newest first; `before_id` pages (keyset). Payloads are cut to `payload_cap` bytes."""
    where = ["true"]
    params: list[Any] = [payload_cap]
    if reason is not None:
        where.append("reason = %s")
        params.append(reason)
    if since is not None:
        where.append("received_at >= %s")
        params.append(since)
    if before_id is not None:
        where.append("id < %s")
        params.append(before_id)
    params.append(limit)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, received_at, topic, reason, detail, item_index, "
            "substring(payload from 1 for %s) AS payload, length(payload) AS payload_size "
            f"FROM dead_letters WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",
            params,
        )
        return cur.fetchall()


def get_dead_letter(conn: Conn, *, dead_letter_id: int) -> dict[str, Any] | None:
    """One dead letter with its whole stored payload."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, received_at, topic, reason, detail, item_index, payload, "
            "length(payload) AS payload_size FROM dead_letters WHERE id = %s",
            (dead_letter_id,),
        )
        return cur.fetchone()


# --------------------------------------------------------------------------- commands


@dataclass(slots=True)
class AckRow:
    """A device's answer to a command, ready to apply."""

    device_id: uuid.UUID
    command_id: uuid.UUID
    acked_at: datetime
    result: str
    detail: str | None


def apply_acks(conn: Conn, *, acks: Sequence[AckRow]) -> set[uuid.UUID]:
    """Record acknowledgements on their commands; returns the command ids that matched.

    Only the device a command was sent to can acknowledge it. The first answer
    stays (a redelivered ack changes nothing but still matches).
    """
    if not acks:
        return set()
    # One row per command, the first answer: an UPDATE ... FROM with two rows for the same
    # command applies either of them (which one depends on the join plan).
    firsts: dict[tuple[uuid.UUID, uuid.UUID], AckRow] = {}
    for a in acks:
        firsts.setdefault((a.device_id, a.command_id), a)
    acks = list(firsts.values())
    rows = conn.execute(
        """
        UPDATE commands c SET
            acked_at = coalesce(c.acked_at, v.acked_at),
            result = coalesce(c.result, v.result),
            detail = CASE WHEN c.result IS NULL THEN v.detail ELSE c.detail END
        FROM unnest(%s::uuid[], %s::uuid[], %s::timestamptz[], %s::text[], %s::text[])
             AS v(device_id, id, acked_at, result, detail)
        WHERE c.id = v.id AND c.device_id = v.device_id
        RETURNING c.id
        """,
        [
            [a.device_id for a in acks], [a.command_id for a in acks],
            [a.acked_at for a in acks], [a.result for a in acks], [a.detail for a in acks],
        ],
    ).fetchall()
    return {r[0] for r in rows}


@dataclass(slots=True, frozen=True)
class CommandRecord:
    """A recorded downlink command."""

    id: uuid.UUID
    device_id: uuid.UUID
    serial: str
    type: str
    params: dict[str, Any]
    created_at: datetime
    sent_at: datetime | None


def create_command(
    conn: Conn, *, device_id: uuid.UUID, type: str, params: dict[str, Any],
    requested_by: uuid.UUID | None = None, command_id: uuid.UUID | None = None,
) -> CommandRecord:
    """Record a command for a device; LookupError if the device does not exist."""
    cid = command_id or uuid.uuid4()
    row = conn.execute(
        "WITH d AS (SELECT id, serial FROM devices WHERE id = %s), "
        "ins AS (INSERT INTO commands (id, device_id, type, params, requested_by) "
        "SELECT %s, d.id, %s, %s::jsonb, %s FROM d RETURNING created_at) "
        "SELECT ins.created_at, d.serial FROM ins, d",
        (device_id, cid, type, orjson.dumps(params).decode(), requested_by),
    ).fetchone()
    if row is None:
        raise LookupError(f"no device {device_id}")
    return CommandRecord(cid, device_id, row[1], type, params, row[0], None)


def get_command(conn: Conn, *, command_id: uuid.UUID) -> CommandRecord | None:
    row = conn.execute(
        "SELECT c.id, c.device_id, d.serial, c.type, c.params, c.created_at, c.sent_at "
        "FROM commands c JOIN devices d ON d.id = c.device_id WHERE c.id = %s",
        (command_id,),
    ).fetchone()
    return None if row is None else CommandRecord(*row)


def mark_command_sent(conn: Conn, *, command_id: uuid.UUID, sent_at: datetime) -> None:
    """Note when the broker accepted the command (the first time only)."""
    conn.execute(
        "UPDATE commands SET sent_at = coalesce(sent_at, %s) WHERE id = %s", (sent_at, command_id)
    )


def unsent_commands(conn: Conn, *, created_before: datetime, limit: int = 100) -> list[CommandRecord]:
    """Commands recorded but never accepted by the broker, oldest first (for a resend job)."""
    rows = conn.execute(
        "SELECT c.id, c.device_id, d.serial, c.type, c.params, c.created_at, c.sent_at "
        "FROM commands c JOIN devices d ON d.id = c.device_id "
        "WHERE c.sent_at IS NULL AND c.created_at < %s ORDER BY c.created_at LIMIT %s",
        (created_before, limit),
    ).fetchall()
    return [CommandRecord(*r) for r in rows]


# -- ingest watermark (devices/watermark.py) ------------------------------------------


def upsert_ingest_watermark(conn: Conn, *, worker_id: str, watermark: datetime) -> None:
    """Record how far `worker_id` has drained the broker (never moves back)."""
    conn.execute(
        "INSERT INTO ingest_watermark (worker_id, watermark, updated_at)"
        " VALUES (%s, %s, clock_timestamp()) ON CONFLICT (worker_id) DO UPDATE SET"
        " watermark = greatest(ingest_watermark.watermark, excluded.watermark),"
        " updated_at = excluded.updated_at",
        (worker_id, watermark),
    )
