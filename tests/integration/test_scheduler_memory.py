"""The scheduler's memory stays flat while alerts accumulate (the soak saw its RSS creep).

A world of 2,000 assigned devices (the scheduler benchmark's generator); alerts are
added between rounds as the ingest and the rules would open them. Every round runs the
timed jobs through `SchedulerService.run_job`; tracemalloc measures what stays allocated
after a warm-up and the peak of one notification run, which must not grow with the
number of alerts of the last 24 h.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from alerts.notify import Delivery
from bench.scheduler import SchedulerBenchConfig, _generate
from db.engine import connect
from probation.runtime.scheduler import SchedulerService
from probation.settings import Settings

DEVICES = 2_000
NEW_ALERTS = 500  # per round


class Counting:
    """A notifier that only counts (the log notifier would fill pytest's log capture)."""

    name = "log"
    target = "count"

    def __init__(self) -> None:
        self.sent = 0

    def send(self, payload: Mapping[str, Any]) -> Delivery:
        self.sent += 1
        return Delivery(ok=True, attempts=1)


def _add_alerts(conn: psycopg.Connection[Any], round_: int) -> None:
    conn.execute(
        """
        WITH a AS (
            INSERT INTO alerts (id, case_id, device_id, type, severity, episode_key,
                                episode_open, started_at, ended_at, evidence)
            SELECT gen_random_uuid(), md5('c' || (1 + i %% %(n)s))::uuid,
                   md5('d' || (1 + i %% %(n)s))::uuid, 'checkin_missed', 'medium',
                   'mem-' || %(r)s || '-' || i, false, now(), now(),
                   jsonb_build_object('request_id', gen_random_uuid(), 'source', 'random',
                                      'due_at', now(), 'deadline', now())
            FROM generate_series(1, %(k)s) i
            RETURNING id, started_at)
        INSERT INTO alert_events (alert_id, kind, data)
        SELECT id, 'opened', jsonb_build_object('type', 'checkin_missed',
                                                'severity', 'medium', 'started_at', started_at)
        FROM a
        """,
        {"n": DEVICES, "k": NEW_ALERTS, "r": round_},
    )


def test_scheduler_memory_is_flat_while_alerts_accumulate(database_url: str) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    with connect(database_url) as conn:
        _generate(conn, SchedulerBenchConfig(devices=DEVICES, fixes_per_device=2), start)
        conn.commit()
    svc = SchedulerService(
        database_url=database_url, mqtt_url="",
        settings=Settings(database_url=database_url, mqtt_url="", jwt_secret="x" * 48),
    )
    counting = Counting()
    svc.notifiers = {"log": counting}
    jobs = ["silence", "curfew", "escalation", "checkins", "notify"]
    due = iter(datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=k) for k in range(10**6))

    def run(job: str) -> None:
        assert svc.run_job(job, due_at=next(due), force=True) is not None

    def notify_peak() -> int:
        """Peak traced bytes of one notification run with nothing new to announce."""
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        run("notify")
        return tracemalloc.get_traced_memory()[1] - base

    with connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO ingest_watermark (worker_id, watermark) VALUES ('t', now())")
        tracemalloc.start()
        try:
            peaks: list[int] = []
            retained: list[int] = []
            for round_ in range(8):
                _add_alerts(conn, round_)
                conn.execute("UPDATE ingest_watermark SET watermark = now(), updated_at = now()")
                run("notify")  # announces this round's new alerts
                for _ in range(5):
                    for job in jobs:
                        run(job)
                peaks.append(notify_peak())
                gc.collect()
                retained.append(tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()
    assert counting.sent == 8 * NEW_ALERTS  # each announced once
    kib = [round(p / 1024) for p in peaks]
    print(f"notify peak per run (KiB): {kib}; retained (KiB): "
          f"{[round(r / 1024) for r in retained]}")
    # 500 -> 4,000 alerts of the last 24 h: one run's peak does not follow them (it grew by
    # ~1.9 KiB per alert, 7 MiB here, when every run re-read all of them)
    assert max(peaks) < 1024 * 1024, kib
    assert peaks[-1] - peaks[1] < 256 * 1024, kib
    # after the warm-up (the first rounds fill the caches), 6 rounds x 25 runs keep
    # less than 512 KiB more allocated
    growth = retained[-1] - retained[2]
    assert growth < 512 * 1024, [round(r / 1024) for r in retained]
