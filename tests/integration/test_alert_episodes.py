"""Episode alerts in the real database: batched evidence updates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from alerts.models import AlertType
from alerts.service import EpisodeUpdate, close_episode, open_episode, update_episodes
from db.engine import connect
from tests.integration.scheduler_world import World


def test_update_episodes_merges_evidence_into_open_episodes_only(database_url: str) -> None:
    with connect(database_url) as conn:
        w = World(conn)
        case, other = w.case(), w.case()
        zone = w.zone(case, kind="exclusion", schedule=None)
        dev, dev2 = w.device(), w.device()
        t0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
        a = open_episode(conn, case_id=case, type=AlertType.EXCLUSION_ZONE_ENTERED,
                         started_at=t0, zone_id=zone, device_id=dev,
                         evidence={"max_depth_m": 20, "first_fix": {"lat": 1}})
        b = open_episode(conn, case_id=other, type=AlertType.EXCLUSION_ZONE_ENTERED,
                         started_at=t0, zone_id=zone, device_id=dev2, evidence={"max_depth_m": 5})
        closed = open_episode(conn, case_id=case, type=AlertType.EXCLUSION_ZONE_ENTERED,
                              started_at=t0 - timedelta(hours=1), zone_id=zone, device_id=dev2,
                              evidence={"max_depth_m": 1})
        assert closed.created and closed.alert_id != a.alert_id
        close_episode(conn, case_id=case, type=AlertType.EXCLUSION_ZONE_ENTERED,
                      ended_at=t0 - timedelta(minutes=50), zone_id=zone, device_id=dev2)
        conn.commit()

        def up(c: uuid.UUID, d: uuid.UUID, ev: dict[str, Any]) -> EpisodeUpdate:
            return EpisodeUpdate(case_id=c, type=AlertType.EXCLUSION_ZONE_ENTERED, zone_id=zone,
                                 device_id=d, evidence=ev)

        n = update_episodes(conn, [
            up(case, dev, {"max_depth_m": 40}),
            up(case, dev, {"max_depth_m": 60, "last_fix": {"lat": 2}}),  # the last one wins
            up(case, dev2, {"max_depth_m": 99}),  # closed: ignored
            up(other, dev2, {"max_depth_m": 7}),
        ])
        conn.commit()
        assert n == 2

        def evidence(alert_id: uuid.UUID) -> dict[str, Any]:
            row = conn.execute("SELECT evidence FROM alerts WHERE id = %s", (alert_id,)).fetchone()
            assert row is not None
            return row[0]  # type: ignore[no-any-return]

        assert evidence(a.alert_id) == {"max_depth_m": 60, "first_fix": {"lat": 1},
                                        "last_fix": {"lat": 2}}
        assert evidence(b.alert_id)["max_depth_m"] == 7
        assert evidence(closed.alert_id)["max_depth_m"] == 1
        # no timeline row per update (only opened / closed)
        kinds = [k for k, _ in w.timeline(a.alert_id)]
        assert kinds == ["opened"]
        assert update_episodes(conn, []) == 0
