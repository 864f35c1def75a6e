"""Timed device rules: silence (communication/location lost) and check-in requests.

All are functions of `now`, work inside the caller's transaction and never commit
(except `dispatch_checkin_requests`, whose sender may publish; see there).

Silence (`docs/monitoring-rules.md`): ONE set-based query over every
active assignment finds the transitions, then each is applied with
`alerts.service.open_episode` / `close_episode`:

* `communication_lost` opens when a device has sent nothing for
  ``max(3 x upload interval of the case's risk level, 10 min)`` (never heard: counted
  from its assignment), starting at the moment the threshold passed; it closes when
  the device talks again (`devices.last_seen` after the episode start) or leaves the
  case.
* `location_lost` opens when a tracking device still talks but has had no fix with
  ``acc ≤ 100 m`` (`devices.last_good_fix_at`) for 30 minutes; it closes when a good
  fix comes after the episode start.

Check-in requests: `plan_random_checkins` inserts the random requests of each case's
policy (``{"per_day", "from_hour", "to_hour"}`` in the case's timezone; defaults per
risk level) shortly before they are due, with deterministic ids so that re-planning
is idempotent; `dispatch_checkin_requests` sends the due ones as `request_checkin`
downlink commands; `detect_missed_checkins` marks requests whose deadline passed
without a passing check-in `missed` and opens `checkin_missed`.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time as _time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg

from alerts.models import AlertType
from alerts.service import close_episode, open_episode
from devices.checkins import DEFAULT_CHALLENGES, random_challenge

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

# --------------------------------------------------------------------------- silence


@dataclass(frozen=True, slots=True)
class SilenceConfig:
    """Thresholds of the silence rules (defaults from the monitoring rules)."""

    upload_interval_s: Mapping[str, float] = field(
        default_factory=lambda: {"high": 60.0, "medium": 120.0, "low": 300.0}
    )
    communication_min: timedelta = timedelta(minutes=10)
    location_lost: timedelta = timedelta(minutes=30)
    communication_kinds: tuple[str, ...] = ("bracelet", "beacon")
    location_kinds: tuple[str, ...] = ("bracelet",)

    def communication_threshold(self, risk: str) -> timedelta:
        up = self.upload_interval_s.get(risk, max(self.upload_interval_s.values()))
        return max(timedelta(seconds=3 * up), self.communication_min)


@dataclass(slots=True)
class SilenceResult:
    communication_opened: int = 0
    communication_closed: int = 0
    location_opened: int = 0
    location_closed: int = 0
    opened: list[uuid.UUID] = field(default_factory=list)
    evaluate_s: float = 0.0  # the set-based query
    alerts_s: float = 0.0  # opening/closing the episodes one by one

    def as_dict(self) -> dict[str, Any]:
        return {
            "communication_opened": self.communication_opened,
            "communication_closed": self.communication_closed,
            "location_opened": self.location_opened,
            "location_closed": self.location_closed,
            "evaluate_s": round(self.evaluate_s, 4), "alerts_s": round(self.alerts_s, 4),
        }


# Transitions only: devices that should have an open episode and have none, and open
# episodes whose condition cleared (or whose device left the case).
_SILENCE_SQL = """
WITH cfg(risk, thr) AS (
    SELECT risk, make_interval(secs => s) FROM unnest(%(risk)s::text[], %(thr)s::float8[]) AS u(risk, s)
), asg AS (
    SELECT a.device_id, a.case_id, d.kind, d.last_seen, d.last_good_fix_at,
           coalesce(d.last_seen, a.assigned_at) AS heard,
           coalesce(d.last_good_fix_at, a.assigned_at) AS good, cfg.thr
    FROM device_assignments a
    JOIN cases c ON c.id = a.case_id AND c.status = 'active'
    JOIN devices d ON d.id = a.device_id
    JOIN cfg ON cfg.risk = c.risk_level
    WHERE a.unassigned_at IS NULL
), open_eps AS (
    SELECT al.case_id, al.device_id, al.type, al.started_at
    FROM alerts al
    WHERE al.episode_open AND al.type IN ('communication_lost', 'location_lost')
)
SELECT 'open', 'communication_lost', asg.case_id, asg.device_id, asg.heard + asg.thr,
       asg.last_seen, asg.thr
FROM asg
WHERE asg.kind = ANY(%(comm_kinds)s) AND asg.heard + asg.thr <= %(now)s
  AND NOT EXISTS (SELECT 1 FROM open_eps e WHERE e.case_id = asg.case_id
                  AND e.device_id = asg.device_id AND e.type = 'communication_lost')
UNION ALL
SELECT 'open', 'location_lost', asg.case_id, asg.device_id, asg.good + %(loc)s,
       asg.last_good_fix_at, %(loc)s
FROM asg
WHERE asg.kind = ANY(%(loc_kinds)s) AND asg.heard + asg.thr > %(now)s
  AND asg.good + %(loc)s <= %(now)s
  AND NOT EXISTS (SELECT 1 FROM open_eps e WHERE e.case_id = asg.case_id
                  AND e.device_id = asg.device_id AND e.type = 'location_lost')
UNION ALL
SELECT 'close', e.type, e.case_id, e.device_id,
       CASE WHEN asg.device_id IS NULL THEN %(now)s
            WHEN e.type = 'communication_lost' THEN asg.last_seen
            ELSE asg.last_good_fix_at END,
       CASE WHEN asg.device_id IS NULL THEN NULL
            WHEN e.type = 'communication_lost' THEN asg.last_seen
            ELSE asg.last_good_fix_at END,
       NULL
FROM open_eps e
LEFT JOIN asg ON asg.case_id = e.case_id AND asg.device_id = e.device_id
WHERE asg.device_id IS NULL
   OR (e.type = 'communication_lost' AND asg.last_seen > e.started_at)
   OR (e.type = 'location_lost' AND asg.last_good_fix_at > e.started_at)
"""


def silence_transitions(
    conn: Conn, *, now: datetime, config: SilenceConfig | None = None
) -> list[tuple[Any, ...]]:
    """The one set-based query: rows (action, type, case, device, at, last, threshold)."""
    cfg = config or SilenceConfig()
    risks = sorted(set(cfg.upload_interval_s) | {"low", "medium", "high"})
    return conn.execute(_SILENCE_SQL, {
        "risk": risks,
        "thr": [cfg.communication_threshold(r).total_seconds() for r in risks],
        "loc": cfg.location_lost, "now": now,
        "comm_kinds": list(cfg.communication_kinds), "loc_kinds": list(cfg.location_kinds),
    }).fetchall()


def evaluate_silence(
    conn: Conn, *, now: datetime, config: SilenceConfig | None = None
) -> SilenceResult:
    """Open and close `communication_lost` / `location_lost` for all assigned devices."""
    res = SilenceResult()
    t0 = _time.perf_counter()
    rows = silence_transitions(conn, now=now, config=config)
    t1 = _time.perf_counter()
    res.evaluate_s = t1 - t0
    for action, type_, case_id, device_id, at, last, thr in rows:
        kind = AlertType(type_)
        comm = kind is AlertType.COMMUNICATION_LOST
        if action == "open":
            evidence: dict[str, Any] = {
                "threshold_s": thr.total_seconds(),
                ("last_seen" if comm else "last_good_fix_at"): last,
                ("silent_s" if comm else "no_good_fix_s"): (now - (at - thr)).total_seconds(),
            }
            ep = open_episode(conn, case_id=case_id, type=kind, started_at=at,
                              device_id=device_id, evidence=evidence)
            if ep.created:
                res.opened.append(ep.alert_id)
                if comm:
                    res.communication_opened += 1
                else:
                    res.location_opened += 1
        else:
            reason = ("unassigned" if last is None
                      else "device_talked" if comm else "good_fix")
            done = close_episode(
                conn, case_id=case_id, type=kind, ended_at=at, device_id=device_id,
                evidence={("last_seen" if comm else "last_good_fix_at"): last}, reason=reason,
            )
            if done is not None:
                if comm:
                    res.communication_closed += 1
                else:
                    res.location_closed += 1
    res.alerts_s = _time.perf_counter() - t1
    return res


# A device of these batches that was silent long enough for `communication_lost` and has
# no alert for that silence (none open, none started since it was last heard).
_GAP_SQL = """
SELECT d.id, d.last_seen, c.id, c.risk_level
FROM devices d
JOIN device_assignments a ON a.device_id = d.id AND a.unassigned_at IS NULL
JOIN cases c ON c.id = a.case_id AND c.status = 'active'
WHERE d.id = ANY(%(ids)s) AND d.kind = ANY(%(kinds)s)
  AND d.last_seen IS NOT NULL AND d.last_seen <= %(latest)s - %(min_gap)s
  AND NOT EXISTS (SELECT 1 FROM alerts al WHERE al.case_id = c.id
                  AND al.type = 'communication_lost' AND al.device_id = d.id
                  AND (al.episode_open OR al.started_at >= d.last_seen))
"""


class SilenceGaps:
    """The `silence_gaps` after-store stage of ingest: `communication_lost` for a silence
    that ended between two silence passes.

    The scheduler finds silences every `scheduler_interval_s`; a device that talks again
    less than a period after its threshold would never be alerted. When a device's first
    uplink after such a silence arrives (before `last_seen` moves), its episode is
    recorded at once, already closed and `late`: it started at last_seen + threshold,
    exactly where the scheduler would have started it (same episode key, so the two
    never duplicate), and ended when the device talked.
    """

    name = "silence_gaps"

    def __init__(self, config: SilenceConfig | None = None) -> None:
        self.config = config or SilenceConfig()

    def on_batch(self, conn: Conn, batches: Sequence[Any]) -> None:
        heard = {b.device_id: b.received_at for b in batches if b.case_id is not None}
        if not heard:
            return
        cfg = self.config
        rows = conn.execute(_GAP_SQL, {
            "ids": list(heard), "kinds": list(cfg.communication_kinds),
            "latest": max(heard.values()), "min_gap": cfg.communication_min,
        }).fetchall()
        for device_id, last_seen, case_id, risk in rows:
            thr = cfg.communication_threshold(risk)
            talked = heard[device_id]
            if talked - last_seen <= thr:
                continue
            started = last_seen + thr
            open_episode(
                conn, case_id=case_id, type=AlertType.COMMUNICATION_LOST, started_at=started,
                device_id=device_id, late=True, delay_s=(talked - started).total_seconds(),
                ended_at=talked,
                evidence={"trigger": "device_talked_again", "threshold_s": thr.total_seconds(),
                          "last_seen": last_seen, "silent_s": (talked - last_seen).total_seconds()},
            )


# --------------------------------------------------------------------------- check-in requests


@dataclass(frozen=True, slots=True)
class CheckinPlanConfig:
    """Default random check-in policy per risk level, used when a case has none."""

    per_day: Mapping[str, int] = field(
        default_factory=lambda: {"high": 3, "medium": 1, "low": 0}
    )
    from_hour: int = 8
    to_hour: int = 20
    deadline: timedelta = timedelta(minutes=15)
    horizon: timedelta = timedelta(hours=1)
    stale: timedelta = timedelta(hours=1)
    salt: str = ""  # mixed into the random draw (e.g. a server secret)


@dataclass(frozen=True, slots=True)
class Policy:
    per_day: int
    from_hour: int
    to_hour: int
    deadline: timedelta


_NS = uuid.UUID("0b5c1d1e-3a8f-4c2e-9d65-6a1f0c7e2b41")


def resolve_policy(policy: Mapping[str, Any] | None, risk: str, cfg: CheckinPlanConfig) -> Policy:
    """A case's `checkin_policy` over the risk level's defaults."""
    p = policy or {}
    per_day = int(p.get("per_day", cfg.per_day.get(risk, 0)) or 0)
    fh = int(p.get("from_hour", cfg.from_hour))
    th = int(p.get("to_hour", cfg.to_hour))
    dl = p.get("deadline_s")
    deadline = timedelta(seconds=int(dl)) if dl else cfg.deadline
    return Policy(max(0, per_day), max(0, min(23, fh)), max(1, min(24, th)), deadline)


def random_times(
    *, case_id: uuid.UUID, day: date, policy: Policy, tz: ZoneInfo, salt: str = ""
) -> list[tuple[uuid.UUID, datetime]]:
    """The (id, UTC due time) of a case's random check-ins on a local day.

    Deterministic per (case, day, salt): the window is cut into `per_day` equal slots and
    one uniformly random minute is drawn in each, so requests are spread over the day
    but unpredictable inside their slot.
    """
    if policy.per_day <= 0 or policy.to_hour <= policy.from_hour:
        return []
    seed = hashlib.sha256(f"{case_id}|{day.isoformat()}|{salt}".encode()).digest()
    rng = random.Random(int.from_bytes(seed[:8], "big"))
    start_s = policy.from_hour * 3600
    span = (policy.to_hour - policy.from_hour) * 3600
    slot = span / policy.per_day
    out: list[tuple[uuid.UUID, datetime]] = []
    for k in range(policy.per_day):
        offset = start_s + k * slot + rng.random() * slot
        local = (datetime.combine(day, time(0)) + timedelta(seconds=int(offset))).replace(tzinfo=tz)
        rid = uuid.uuid5(_NS, f"{case_id}|{day.isoformat()}|{k}")
        out.append((rid, local.astimezone(UTC)))
    return out


_PLAN_CASES_SQL = """
SELECT c.id, c.timezone, c.risk_level, c.checkin_policy, dv.id
FROM cases c
JOIN LATERAL (
    SELECT d.id FROM device_assignments a JOIN devices d ON d.id = a.device_id
    WHERE a.case_id = c.id AND a.unassigned_at IS NULL AND d.kind <> 'beacon'
    ORDER BY (d.kind = 'phone') DESC, a.assigned_at DESC LIMIT 1
) dv ON true
WHERE c.status = 'active'
  AND (coalesce((c.checkin_policy->>'per_day')::int, 0) > 0 OR c.risk_level = ANY(%s))
"""


def plan_random_checkins(
    conn: Conn, *, now: datetime, config: CheckinPlanConfig | None = None
) -> int:
    """Insert the random requests due in ``[now, now + horizon]``; returns how many are new."""
    cfg = config or CheckinPlanConfig()
    default_risks = [r for r, n in cfg.per_day.items() if n > 0]
    rows: list[tuple[Any, ...]] = []
    until = now + cfg.horizon
    for case_id, tzname, risk, policy, device_id in conn.execute(
        _PLAN_CASES_SQL, (default_risks,)
    ).fetchall():
        pol = resolve_policy(policy, risk, cfg)
        if pol.per_day <= 0:
            continue
        try:
            tz = ZoneInfo(tzname)
        except (ZoneInfoNotFoundError, ValueError):
            log.error("check-ins: case %s has an unknown timezone %r", case_id, tzname)
            continue
        d0 = now.astimezone(tz).date()
        d1 = until.astimezone(tz).date()
        day = d0
        while day <= d1:
            for rid, due in random_times(case_id=case_id, day=day, policy=pol, tz=tz,
                                         salt=cfg.salt):
                if now <= due <= until:
                    rows.append((rid, case_id, device_id, due, due + pol.deadline))
            day += timedelta(days=1)
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO checkin_requests (id, case_id, device_id, source, due_at, deadline)"
            " VALUES (%s, %s, %s, 'random', %s, %s) ON CONFLICT (id) DO NOTHING",
            rows,
        )
        return max(0, cur.rowcount)


class Publisher(Protocol):
    """Publishes a command already recorded in `commands` (e.g. `CommandPublisher.publish_recorded`)."""

    def __call__(self, command_id: uuid.UUID, /) -> Any: ...


@dataclass(slots=True)
class DispatchResult:
    sent: int = 0
    dropped_stale: int = 0
    no_device: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "dropped_stale": self.dropped_stale,
                "no_device": self.no_device, "failed": self.failed}


def dispatch_checkin_requests(
    conn: Conn, *, now: datetime, publish: Publisher | None,
    stale: timedelta = timedelta(hours=1), limit: int = 1000,
    challenges: Sequence[str] = DEFAULT_CHALLENGES,
) -> DispatchResult:
    """Send every due `scheduled` request as a `request_checkin` command (status → `sent`).

    Like the API's officer requests, the command has the request's id, so the app's
    `request_id` names both. The person always gets the request's full answer time: a
    request sent late has its deadline moved to ``now + (deadline - due_at)`` (60..3600 s,
    the protocol's range). Random requests more than `stale` overdue (the scheduler was
    down) are dropped. COMMITS on `conn` (the command and the request's new status) before
    publishing each command; a publish the broker does not accept is resent by the
    downlink resend job. `publish=None` records without publishing (no broker).
    """
    from devices.service import create_command

    res = DispatchResult()
    res.dropped_stale = max(0, conn.execute(
        "DELETE FROM checkin_requests WHERE status = 'scheduled' AND source = 'random'"
        " AND due_at < %s", (now - stale,),
    ).rowcount)
    rows = conn.execute(
        """
        SELECT r.id, r.device_id, r.due_at, r.deadline,
               (SELECT d.id FROM device_assignments a JOIN devices d ON d.id = a.device_id
                WHERE a.case_id = r.case_id AND a.unassigned_at IS NULL AND d.kind <> 'beacon'
                ORDER BY (d.kind = 'phone') DESC, a.assigned_at DESC LIMIT 1)
        FROM checkin_requests r JOIN cases c ON c.id = r.case_id AND c.status = 'active'
        WHERE r.status = 'scheduled' AND r.due_at <= %s
        ORDER BY r.due_at LIMIT %s
        FOR UPDATE OF r SKIP LOCKED
        """,
        (now, limit),
    ).fetchall()
    sent: list[uuid.UUID] = []
    for rid, device_id, due_at, deadline, fallback in rows:
        target = device_id or fallback
        if target is None:
            res.no_device += 1
            continue
        window = int(min(3600, max(60, (deadline - due_at).total_seconds())))
        new_deadline = max(deadline, now + timedelta(seconds=window))
        challenge = random_challenge(challenges)
        with conn.transaction():
            create_command(conn, device_id=target, type="request_checkin", command_id=rid,
                           params={"deadline_s": int((new_deadline - now).total_seconds()),
                                   "challenge": challenge})
            conn.execute(
                "UPDATE checkin_requests SET status = 'sent', command_id = %s,"
                " device_id = %s, deadline = %s, challenge = %s WHERE id = %s",
                (rid, target, new_deadline, challenge, rid),
            )
        sent.append(rid)
    conn.commit()
    res.sent = len(sent)
    if publish is not None:
        for rid in sent:
            try:
                publish(rid)
            except Exception:
                log.exception("check-ins: request %s recorded, publish failed (resent later)",
                              rid)
                res.failed += 1
    return res


@dataclass(slots=True)
class MissedResult:
    missed: int = 0
    passed_late_marked: int = 0
    alerts: list[uuid.UUID] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"missed": self.missed, "passed_marked": self.passed_late_marked,
                "alerts": len(self.alerts)}


# A check-in may arrive a little before its request's due time (clocks).
CHECKIN_EARLY = timedelta(minutes=2)


def detect_missed_checkins(conn: Conn, *, now: datetime) -> MissedResult:
    """Requests past their deadline: `passed` if a passing check-in exists, else `missed`
    with a `checkin_missed` alert (closed at once: the absence is the whole episode)."""
    res = MissedResult()
    rows = conn.execute(
        """
        SELECT r.id, r.case_id, r.device_id, r.source, r.due_at, r.deadline,
               (SELECT min(ci.ts) FROM checkins ci
                WHERE ci.case_id = r.case_id AND ci.passed
                  AND ci.ts >= r.due_at - %s AND ci.ts <= r.deadline),
               cmd.sent_at, cmd.acked_at, cmd.result
        FROM checkin_requests r
        LEFT JOIN commands cmd ON cmd.id = r.command_id
        WHERE r.status = 'sent' AND r.deadline <= %s
        ORDER BY r.deadline
        FOR UPDATE OF r SKIP LOCKED
        """,
        (CHECKIN_EARLY, now),
    ).fetchall()
    for (rid, case_id, device_id, source, due_at, deadline, passed_at, sent_at, acked_at,
         ack_result) in rows:
        if passed_at is not None:
            conn.execute(
                "UPDATE checkin_requests SET status = 'passed', resolved_at = %s WHERE id = %s",
                (passed_at, rid),
            )
            res.passed_late_marked += 1
            continue
        conn.execute(
            "UPDATE checkin_requests SET status = 'missed', resolved_at = %s WHERE id = %s",
            (deadline, rid),
        )
        res.missed += 1
        ep = open_episode(
            conn, case_id=case_id, type=AlertType.CHECKIN_MISSED, started_at=deadline,
            ended_at=deadline, device_id=device_id,
            evidence={"request_id": str(rid), "source": source, "due_at": due_at,
                      "deadline": deadline, "command_sent_at": sent_at,
                      "command_acked_at": acked_at, "command_result": ack_result},
        )
        if ep.created:
            res.alerts.append(ep.alert_id)
    return res


@dataclass(slots=True)
class LateResult:
    passed_late: int = 0
    alerts_resolved: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"passed_late": self.passed_late, "missed_alerts_resolved": self.alerts_resolved}


def resolve_late_checkins(
    conn: Conn, *, now: datetime, lookback: timedelta = timedelta(days=2)
) -> LateResult:
    """Requests marked `missed` whose passing check-in (taken before the deadline) was
    stored only afterwards (a phone that uploaded late, an ingest backlog beyond the
    watermark): the request becomes `passed`, and its `checkin_missed` alert is resolved
    by the system (`false_alarm`) with a timeline entry naming the check-in's time and
    when it was received; an alert an officer already resolved only gets the entry."""
    from alerts.service import resolve_by_system

    res = LateResult()
    rows = conn.execute(
        """
        SELECT r.id, r.deadline, ci.ts, ci.received_at, a.id
        FROM checkin_requests r
        JOIN LATERAL (
            SELECT ci.ts, ci.received_at FROM checkins ci
            WHERE ci.case_id = r.case_id AND ci.passed
              AND ci.ts >= r.due_at - %s AND ci.ts <= r.deadline
            ORDER BY ci.ts LIMIT 1
        ) ci ON true
        LEFT JOIN alerts a ON a.case_id = r.case_id AND a.type = 'checkin_missed'
             AND a.evidence->>'request_id' = r.id::text
        WHERE r.status = 'missed' AND r.deadline > %s
        FOR UPDATE OF r SKIP LOCKED
        """,
        (CHECKIN_EARLY, now - lookback),
    ).fetchall()
    for rid, deadline, ts, received_at, alert_id in rows:
        conn.execute(
            "UPDATE checkin_requests SET status = 'passed', resolved_at = %s WHERE id = %s",
            (ts, rid),
        )
        res.passed_late += 1
        if alert_id is not None and resolve_by_system(
            conn, alert_id=alert_id, at=now, resolution="false_alarm",
            data={"reason": "checkin_arrived_late", "request_id": str(rid),
                  "checkin_ts": ts, "received_at": received_at, "deadline": deadline},
        ):
            res.alerts_resolved += 1
    return res


# --------------------------------------------------------------------------- ingest watermark


@dataclass(frozen=True, slots=True)
class IngestWatermark:
    """`at`: the minimum watermark of the ingest workers that reported within `max_age`
    (None: none did: the ingest is stalled or down); `live`/`stale`: how many workers."""

    at: datetime | None
    live: int
    stale: int
    newest_report: datetime | None


def ingest_watermark(conn: Conn, *, max_age: timedelta = timedelta(seconds=60)) -> IngestWatermark:
    """Up to when the stored uplink is complete (see `devices/watermark.py`); liveness is
    judged on the database's clock, which every worker's report is stamped with."""
    row = conn.execute(
        "SELECT min(watermark) FILTER (WHERE updated_at > clock_timestamp() - %(age)s),"
        " count(*) FILTER (WHERE updated_at > clock_timestamp() - %(age)s), count(*),"
        " max(updated_at) FROM ingest_watermark",
        {"age": max_age},
    ).fetchone()
    at, live, total, newest = row if row is not None else (None, 0, 0, None)
    return IngestWatermark(at, int(live or 0), int(total or 0) - int(live or 0), newest)
