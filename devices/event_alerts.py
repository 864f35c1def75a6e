"""The `event_alerts` after-store stage: device events (tamper, battery, power, jamming,
beacon) open and close their alerts; a clean GPS fix closes a jamming episode.

Runs inside the batch's transaction after the COPY, on the events and fixes the batch
newly stored for devices with an active case (`devices.pipeline.AfterStoreStage`).
"""

from __future__ import annotations

from collections.abc import Sequence

from alerts.models import AlertType
from alerts.service import close_episode, find_open_episode, open_episode
from devices.pipeline import Conn, DeviceBatch

#: Device event → (alert type it opens, event types that close it).
EVENT_ALERTS: dict[str, tuple[AlertType, frozenset[str]]] = {
    "strap_open": (AlertType.STRAP_TAMPER, frozenset({"strap_closed"})),
    "case_open": (AlertType.CASE_TAMPER, frozenset({"case_closed"})),
    "battery_low": (AlertType.BATTERY_LOW, frozenset({"charging_started"})),
    "battery_critical": (AlertType.BATTERY_CRITICAL, frozenset({"charging_started"})),
    "power_off": (AlertType.POWER_OFF, frozenset({"power_on"})),
    "gps_jamming": (AlertType.GPS_JAMMING, frozenset()),
    "beacon_lost": (AlertType.BEACON_LOST, frozenset({"beacon_found"})),
}
CLOSERS: dict[str, list[AlertType]] = {}
for _atype, _closers in EVENT_ALERTS.values():
    for _c in _closers:
        CLOSERS.setdefault(_c, []).append(_atype)


class EventAlerts:
    """Device events → alerts (`EVENT_ALERTS`), then jamming closed by clean GPS fixes."""

    name = "event_alerts"

    def on_batch(self, conn: Conn, batches: Sequence[DeviceBatch]) -> None:
        assigned = [b for b in batches if b.case_id is not None]
        for b in assigned:
            if b.events:
                self._events(conn, b)
        with_fixes = [b for b in assigned if b.fixes]
        if with_fixes:
            close_jamming_on_good_fixes(conn, with_fixes)

    @staticmethod
    def _events(conn: Conn, b: DeviceBatch) -> None:
        assert b.case_id is not None
        for ev in sorted(b.events, key=lambda e: e.ts):
            opened = EVENT_ALERTS.get(ev.type)
            if opened is not None:
                atype, _ = opened
                evidence = {"event": ev.type, "seq": ev.seq, "ts": ev.ts.isoformat(),
                            "detail": ev.detail}
                open_episode(
                    conn, case_id=b.case_id, type=atype, started_at=ev.ts,
                    evidence=evidence, device_id=b.device_id,
                )
            for atype in CLOSERS.get(ev.type, ()):
                close_episode(
                    conn, case_id=b.case_id, type=atype, ended_at=ev.ts, device_id=b.device_id,
                    evidence={"closed_by": ev.type, "closed_seq": ev.seq}, reason=ev.type,
                )


def close_jamming_on_good_fixes(conn: Conn, batches: Sequence[DeviceBatch]) -> None:
    """`close_jamming_on_good_fix` for a whole batch: one query finds the devices that have
    an open jamming episode (rare), only those are closed one by one."""
    cases = list({b.case_id for b in batches if b.case_id is not None})
    if not cases:
        return
    open_ = {
        (case_id, device_id)
        for case_id, device_id in conn.execute(
            "SELECT case_id, device_id FROM alerts WHERE episode_open AND type = %s"
            " AND case_id = ANY(%s) AND zone_id IS NULL AND device_id IS NOT NULL",
            (AlertType.GPS_JAMMING.value, cases),
        )
    }
    if not open_:
        return
    for b in batches:
        if (b.case_id, b.device_id) in open_:
            close_jamming_on_good_fix(conn, b)


def close_jamming_on_good_fix(conn: Conn, b: DeviceBatch) -> None:
    """A clean GPS fix after a jamming report ends the jamming episode."""
    good = [f for f in b.fixes if f.src == "gps" and f.acc <= 100]
    if not good or b.case_id is None:
        return
    last = max(f.ts for f in good)
    alert_id = find_open_episode(
        conn, case_id=b.case_id, type=AlertType.GPS_JAMMING, device_id=b.device_id
    )
    if alert_id is None:
        return
    row = conn.execute("SELECT started_at FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    if row is not None and row[0] < last:
        close_episode(
            conn, case_id=b.case_id, type=AlertType.GPS_JAMMING, ended_at=last,
            device_id=b.device_id, evidence={"closed_by": "good_gps_fix"}, reason="good_gps_fix",
        )
