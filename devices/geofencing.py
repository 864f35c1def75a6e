"""The ingest pipeline's `geofence` after-store stage: fixes → zone episodes → alerts.

Runs inside the batch's transaction (a `devices.pipeline.AfterStoreStage`), so a device's episode state
(`geofence_states`) is committed together with its fixes and alerts: a crash or a
restart neither loses nor repeats an episode. The zones registry is cached per
process and rebuilt when `config_versions('zones')` moves (bumped by triggers on
every zone, attachment and case change), so API changes reach the next batch.

Late fixes (older than the newest fix already evaluated for the device) re-run the
device from the newest snapshot before them; re-opened episodes map to the alerts that
already exist (same episode key), and episodes that are new are marked `late`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import orjson

from alerts.models import AlertType
from alerts.service import (
    EpisodeUpdate,
    close_episode,
    open_episode,
    update_episodes,
    zone_episode_open,
)
from devices.pipeline import Conn, DeviceBatch
from devices.protocol import CommandType
from geofence import (
    CaseZones,
    EngineState,
    FixBatch,
    InvalidGeometry,
    InvalidSchedule,
    ZoneEntry,
    compile_zone,
    open_at_window_start,
)
from geofence.engine import advance_ex
from geofence.episodes import AT_LEFT, STATUS_NAMES, Transition
from geofence.episodes import Fix as EngineFix

log = logging.getLogger(__name__)

#: Rapid mode: the fix interval while a zone episode is open (docs/monitoring-rules.md).
RAPID_FIX_INTERVAL_S = 15
#: The normal fix interval per risk level, restored when the episode closes.
NORMAL_FIX_INTERVAL_S = {"high": 30, "medium": 60, "low": 120}
#: Snapshots of a device's state at most this often (late-fix re-evaluation points).
SNAPSHOT_EVERY = timedelta(minutes=15)
#: Snapshots older than this are pruned; a later upload replays from its oldest fix.
SNAPSHOT_KEEP = timedelta(days=3)
#: Without a snapshot, a late batch is replayed from this long before its oldest fix.
REPLAY_WITHOUT_SNAPSHOT = timedelta(hours=1)

def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _fix_json(f: EngineFix) -> dict[str, Any]:
    return {"ts": _dt(f.ts).isoformat(), "lat": f.lat, "lon": f.lon, "acc": f.acc}


@dataclass
class _Registry:
    version: int
    zones: CaseZones
    risk: dict[str, str]


@dataclass
class GeofenceEvaluator:
    """The `geofence` after-store stage: zone episodes from the fixes of assigned devices
    (and rapid mode: the `set_interval` commands it records, published after commit)."""

    name: ClassVar[str] = "geofence"
    rapid_mode: bool = True
    _registry: _Registry | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    pending_commands: list[uuid.UUID] = field(default_factory=list, init=False)

    # ------------------------------------------------------------------ registry
    def registry(self, conn: Conn) -> _Registry:
        """The zones registry, rebuilt when the zones version moved."""
        row = conn.execute("SELECT version FROM config_versions WHERE name = 'zones'").fetchone()
        version = int(row[0]) if row else 0
        with self._lock:
            reg = self._registry
            if reg is not None and reg.version == version:
                return reg
        reg = self._load(conn, version)
        with self._lock:
            self._registry = reg
        return reg

    def _load(self, conn: Conn, version: int) -> _Registry:
        cases: dict[str, str] = {}
        confirm: dict[str, tuple[int | None, float | None]] = {}
        for cid, tz, pts, sec in conn.execute(
            "SELECT id, timezone, confirm_points, confirm_seconds FROM cases"
            " WHERE status = 'active'"
        ):
            cases[str(cid)] = tz
            if pts is not None or sec is not None:
                confirm[str(cid)] = (pts, sec)
        risk = {
            str(cid): r
            for cid, r in conn.execute("SELECT id, risk_level FROM cases WHERE status = 'active'")
        }
        attachments: dict[str, list[str]] = {}
        for cid, zid in conn.execute(
            "SELECT cz.case_id, cz.zone_id FROM case_zones cz JOIN cases c ON c.id = cz.case_id"
            " WHERE c.status = 'active'"
        ):
            attachments.setdefault(str(zid), []).append(str(cid))
        zones: dict[str, ZoneEntry] = {}
        rows = conn.execute(
            "SELECT id, kind, geometry, circle, buffer_m, schedule, exceptions FROM zones"
            " WHERE deleted_at IS NULL AND id = ANY(%s)",
            ([uuid.UUID(z) for z in attachments],),
        ).fetchall()
        for zid, kind, geometry, circle, buffer_m, schedule, exceptions in rows:
            try:
                compiled = compile_zone(
                    zone_id=str(zid), kind=kind, geometry=geometry, circle=circle,
                    buffer_m=float(buffer_m or 0),
                )
                zones[str(zid)] = ZoneEntry.make(compiled, schedule, exceptions or [])
            except (InvalidGeometry, InvalidSchedule) as e:
                log.error("zone %s cannot be evaluated and is skipped: %s", zid, e)
        attach = {z: attachments[z] for z in zones}
        log.info("geofence registry: %d active cases, %d zones (version %d)",
                 len(cases), len(zones), version)
        return _Registry(version, CaseZones(cases, zones, attach, confirm=confirm), risk)

    # ------------------------------------------------------------------ stage
    def on_batch(self, conn: Conn, batches: Sequence[DeviceBatch]) -> None:
        with_fixes = [b for b in batches if b.case_id is not None and b.fixes]
        if with_fixes:
            self._fixes(conn, with_fixes)

    def _fixes(self, conn: Conn, batches: Sequence[DeviceBatch]) -> None:
        reg = self.registry(conn)
        zones = reg.zones
        devices = [b for b in batches if str(b.case_id) in zones.case_index]
        if not devices:
            return
        # A fix counts for a case only from its device's assignment to it: a late upload
        # of a previous wearer's fixes is stored, never evaluated against the new case.
        since = assigned_since(conn, devices)
        devices = [_since(b, since.get(b.device_id)) for b in devices]
        devices = [b for b in devices if b.fixes]
        if not devices:
            return
        ids = [b.device_id for b in devices]
        rows = conn.execute(
            "SELECT device_id, last_ts, state::text, (SELECT max(ts) FROM geofence_snapshots s"
            " WHERE s.device_id = g.device_id) FROM geofence_states g"
            " WHERE device_id = ANY(%s) FOR UPDATE",
            (ids,),
        ).fetchall()
        stored = {r[0]: (r[1], orjson.loads(r[2]), r[3]) for r in rows}
        states: dict[str, Any] = {}
        cols: dict[str, list[Any]] = {k: [] for k in ("case", "dev", "ts", "lat", "lon", "acc")}
        late_since: dict[uuid.UUID, int] = {}  # device → last_ts before this batch (ms)
        for b in devices:
            dev = str(b.device_id)
            last_ts, state, _ = stored.get(b.device_id, (None, None, None))
            first = min(f.ts for f in b.fixes)
            fixes: list[tuple[int, float, float, float]]
            if last_ts is not None and first < last_ts:
                # A late upload: replay this device from a snapshot before its oldest fix.
                state, fixes = self._replay_window(conn, b.device_id, first,
                                                   since.get(b.device_id))
                late_since[b.device_id] = _ms(last_ts)
            else:
                fixes = [(_ms(f.ts), f.lat, f.lon, f.acc) for f in b.fixes]
            if state:
                states[dev] = state
            for ts, lat, lon, acc in fixes:
                cols["case"].append(str(b.case_id))
                cols["dev"].append(dev)
                cols["ts"].append(ts)
                cols["lat"].append(lat)
                cols["lon"].append(lon)
                cols["acc"].append(acc)
        batch = FixBatch.from_columns(
            zones, cols["case"], cols["dev"], np.asarray(cols["ts"], dtype=np.int64),
            cols["lat"], cols["lon"], cols["acc"],
        )
        start_state = self._with_window_start_episodes(
            conn, EngineState.from_device_states(states), devices, zones
        )
        new_state, transitions, outliers = advance_ex(start_state, batch, zones)
        mark_outliers(conn, outliers)
        by_device = {str(b.device_id): b for b in devices}
        # Updates only merge evidence into an open alert: batched after the opens and
        # closes (an update followed by a close of the same episode is dropped: the
        # close carries the newest evidence).
        updates: dict[tuple[str, str, str, str], EpisodeUpdate] = {}
        for t in transitions:
            b = by_device[t.device_id]
            key = (t.case_id, t.alert_type, t.zone_id, t.device_id)
            if t.kind == "update":
                updates[key] = EpisodeUpdate(
                    case_id=uuid.UUID(t.case_id), type=AlertType(t.alert_type),
                    zone_id=uuid.UUID(t.zone_id), device_id=b.device_id,
                    evidence=self._evidence(t),
                )
                continue
            updates.pop(key, None)
            self._apply(conn, t, b, late_since.get(b.device_id), reg)
        update_episodes(conn, list(updates.values()))
        # The new states (and the snapshots that are due) in one statement each, not one
        # per device: a batch holds hundreds of devices with a fix or two each.
        state_rows: list[tuple[uuid.UUID, datetime | None, dict[str, Any]]] = []
        snap_rows: list[tuple[uuid.UUID, datetime, dict[str, Any], datetime]] = []
        dstates = new_state.device_states([str(b.device_id) for b in devices])
        for b in devices:
            dstate = dstates[str(b.device_id)]
            last = dstate.get("last_fix")
            last_ts = _dt(int(last["ts"])) if last else None
            prev = stored.get(b.device_id)
            if prev is not None and prev[0] is not None and last_ts is not None:
                last_ts = max(last_ts, prev[0])
            state_rows.append((b.device_id, last_ts, dstate))
            snap = prev[2] if prev is not None else None
            if last_ts is not None and b.device_id not in late_since and (
                snap is None or last_ts - snap >= SNAPSHOT_EVERY
            ):
                snap_rows.append((b.device_id, last_ts, dstate, last_ts - SNAPSHOT_KEEP))
        conn.execute(
            "INSERT INTO geofence_states (device_id, last_ts, state, version, updated_at)"
            " SELECT (r->>0)::uuid, (r->>1)::timestamptz, r->2, 1, %s"
            " FROM jsonb_array_elements(%s::jsonb) r"
            " ON CONFLICT (device_id) DO UPDATE SET"
            " last_ts = EXCLUDED.last_ts, state = EXCLUDED.state,"
            " version = geofence_states.version + 1, updated_at = EXCLUDED.updated_at",
            (datetime.now(UTC), orjson.dumps(state_rows).decode()),
        )
        if snap_rows:
            doc = orjson.dumps(snap_rows).decode()
            conn.execute(
                "INSERT INTO geofence_snapshots (device_id, ts, state)"
                " SELECT (r->>0)::uuid, (r->>1)::timestamptz, r->2"
                " FROM jsonb_array_elements(%s::jsonb) r ON CONFLICT DO NOTHING",
                (doc,),
            )
            conn.execute(
                "DELETE FROM geofence_snapshots s USING jsonb_array_elements(%s::jsonb) r"
                " WHERE s.device_id = (r->>0)::uuid AND s.ts < (r->>3)::timestamptz",
                (doc,),
            )

    def _with_window_start_episodes(
        self, conn: Conn, state: EngineState, devices: Sequence[DeviceBatch], zones: CaseZones
    ) -> EngineState:
        """Adopt the `inclusion_zone_left` episodes that the curfew-start rule opened.

        The scheduler opens them from the last fix at the window start, outside the
        engine; without this the engine would not know the episode is open, and a
        person coming home would stay "out" until the window ends. An open alert of
        this kind whose (device, case, zone) has no open episode in the engine state
        becomes one (`open_at_window_start`, from the same last fix), so the next fixes
        update and close it like any other. Its open transition is dropped: the alert
        exists already.
        """
        rows = conn.execute(
            "SELECT device_id, case_id, zone_id, started_at, evidence->'last_fix'"
            " FROM alerts WHERE case_id = ANY(%s) AND type = 'inclusion_zone_left'"
            " AND episode_open AND evidence->>'trigger' = 'window_start'"
            " AND device_id = ANY(%s)",
            ([b.case_id for b in devices], [b.device_id for b in devices]),
        ).fetchall()
        if not rows:
            return state
        known = {
            (d, c, z)
            for d, c, z, a, st in zip(
                state.dev.tolist(), state.case.tolist(), state.zone.tolist(),
                state.atype.tolist(), state.status.tolist(), strict=True,
            )
            if a == AT_LEFT and STATUS_NAMES[st] != "pending"
        }
        for device_id, case_id, zone_id, started_at, last in rows:
            key = (str(device_id), str(case_id), str(zone_id))
            if key in known or last is None or key[2] not in zones.zone_index:
                continue
            try:
                fix = EngineFix(_ms(datetime.fromisoformat(last["ts"])), float(last["lat"]),
                                float(last["lon"]), float(last["acc"]))
            except (KeyError, TypeError, ValueError):
                log.warning("curfew-start alert for %s has no usable last fix", device_id)
                continue
            state, _ = open_at_window_start(
                state, zones, device_id=key[0], case_id=key[1], zone_id=key[2],
                window_start_ms=_ms(started_at), last_fix=fix,
            )
        return state

    def _replay_window(
        self, conn: Conn, device_id: uuid.UUID, first: datetime, assigned: datetime | None
    ) -> tuple[dict[str, Any] | None, list[tuple[int, float, float, float]]]:
        snap = conn.execute(
            "SELECT ts, state FROM geofence_snapshots WHERE device_id = %s AND ts < %s"
            " ORDER BY ts DESC LIMIT 1",
            (device_id, first),
        ).fetchone()
        since = snap[0] if snap else first - REPLAY_WITHOUT_SNAPSHOT
        state = snap[1] if snap else None
        if snap is not None:
            # Snapshots taken after the late fix's time are no longer true.
            conn.execute(
                "DELETE FROM geofence_snapshots WHERE device_id = %s AND ts > %s",
                (device_id, snap[0]),
            )
        else:
            conn.execute("DELETE FROM geofence_snapshots WHERE device_id = %s", (device_id,))
        if assigned is not None:
            since = max(since, assigned - timedelta(microseconds=1))
        rows = conn.execute(
            "SELECT ts, lat, lon, acc FROM fixes WHERE device_id = %s AND ts > %s ORDER BY ts",
            (device_id, since),
        ).fetchall()
        return state, [(_ms(ts), lat, lon, float(acc)) for ts, lat, lon, acc in rows]

    def _apply(
        self, conn: Conn, t: Transition, b: DeviceBatch, late_since_ms: int | None,
        reg: _Registry,
    ) -> None:
        case_id = uuid.UUID(t.case_id)
        zone_id = uuid.UUID(t.zone_id)
        atype = AlertType(t.alert_type)
        evidence = self._evidence(t)
        if t.kind == "open":
            # the fix that raised it (its data time): kept by later evidence merges
            evidence["raised_by"] = _fix_json(t.last_fix)
            started = _dt(t.started_at)
            late = late_since_ms is not None and t.started_at < late_since_ms
            delay = (b.received_at - started).total_seconds() if late else None
            if late:
                evidence["late"] = True
                evidence["delay_s"] = delay
            res = open_episode(
                conn, case_id=case_id, type=atype, started_at=started, evidence=evidence,
                device_id=b.device_id, zone_id=zone_id, late=late, delay_s=delay,
                inferred=t.inferred,
                ended_at=_dt(t.ended_at) if t.ended_at is not None else None,
            )
            if res.created and t.ended_at is None and not t.inferred:
                self._rapid(conn, b.device_id, RAPID_FIX_INTERVAL_S)
        elif t.kind == "close":
            ended = _dt(t.ended_at if t.ended_at is not None else t.at)
            closed = close_episode(
                conn, case_id=case_id, type=atype, ended_at=ended, zone_id=zone_id,
                device_id=b.device_id, evidence=evidence,
            )
            # Back to the case's interval once no zone episode of the device is open
            # (an approach that turned into an entry keeps rapid mode on).
            if closed is not None and not zone_episode_open(
                conn, case_id=case_id, device_id=b.device_id
            ):
                normal = NORMAL_FIX_INTERVAL_S.get(reg.risk.get(t.case_id, "medium"), 60)
                self._rapid(conn, b.device_id, normal)

    @staticmethod
    def _evidence(t: Transition) -> dict[str, Any]:
        evidence: dict[str, Any] = {
            "zone_id": t.zone_id,
            "first_fix": _fix_json(t.first_fix),
            "last_fix": _fix_json(t.last_fix),
            "max_depth_m": round(float(t.max_depth_m), 2),
            "duration_s": round((t.last_fix.ts - t.first_fix.ts) / 1000, 1),
        }
        if t.inferred:
            evidence["inferred"] = True
        return evidence

    def _rapid(self, conn: Conn, device_id: uuid.UUID, fix_interval_s: int) -> None:
        """Record a `set_interval` command; it is published after the batch commits."""
        if not self.rapid_mode:
            return
        from devices import service

        rec = service.create_command(
            conn, device_id=device_id, type=CommandType.SET_INTERVAL.value,
            params={"fix_interval_s": fix_interval_s},
        )
        with self._lock:
            self.pending_commands.append(rec.id)

    def take_pending_commands(self) -> list[uuid.UUID]:
        with self._lock:
            out, self.pending_commands = self.pending_commands, []
        return out


def assigned_since(conn: Conn, batches: Sequence[DeviceBatch]) -> dict[uuid.UUID, datetime]:
    """When the current assignment of each device that served an earlier case began.

    Fixes before it were recorded on a previous wearer (or between wearers) and never
    count for the current case. A device on its first assignment has no such bound: the
    simulator and the tests register people before replaying clocks that run behind the
    wall clock."""
    rows = conn.execute(
        "SELECT a.device_id, a.assigned_at FROM device_assignments a"
        " WHERE a.device_id = ANY(%s) AND a.unassigned_at IS NULL AND EXISTS ("
        "  SELECT 1 FROM device_assignments p WHERE p.device_id = a.device_id"
        "  AND p.unassigned_at IS NOT NULL)",
        ([b.device_id for b in batches],),
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def _since(b: DeviceBatch, assigned: datetime | None) -> DeviceBatch:
    if assigned is None or all(f.ts >= assigned for f in b.fixes):
        return b
    return replace(b, fixes=[f for f in b.fixes if f.ts >= assigned])


def mark_outliers(conn: Conn, ranges: Sequence[tuple[str, int, int]]) -> None:
    """Flag the fixes the kinematic rule found to be outliers (shown in the track)."""
    if not ranges:
        return
    conn.execute(
        "UPDATE fixes f SET outlier = true FROM unnest(%s::uuid[], %s::timestamptz[],"
        " %s::timestamptz[]) r(device_id, t0, t1)"
        " WHERE f.device_id = r.device_id AND f.ts >= r.t0 AND f.ts < r.t1",
        ([uuid.UUID(d) for d, _, _ in ranges], [_dt(a) for _, a, _ in ranges],
         [_dt(b) for _, _, b in ranges]),
    )
