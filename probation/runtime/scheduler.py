"""The scheduler process: APScheduler with a PostgreSQL job store runs the timed rules.

Leader election. Every scheduler process (`probation scheduler`, or the scheduler part
of `serve`) opens one dedicated connection and tries `pg_try_advisory_lock(LEADER_KEY)`
on it. The process that holds the lock is the leader: it starts APScheduler (jobs and
their next run times live in the `apscheduler_jobs` table) and runs the jobs. The
others stand by, retrying every `scheduler_lock_retry_s` (3 s). The lock is a session
lock: if the leader dies, PostgreSQL ends its session when the connection drops and
releases the lock, and a standby takes over within one retry period (TCP keepalives on
the lock session bound the time PostgreSQL needs to notice a vanished host). The leader
checks its lock connection every few seconds and stops running jobs as soon as it is
broken.

Each run also takes a per-job session advisory lock and claims its (job, due time) row
in `scheduler_runs` (unique), so even two overlapping leaders never run one job twice
for the same due time; the run's work and its record commit together ("commit at the
job boundary"). Jobs use `coalesce=True` (a backlog runs once), `max_instances=1` and
`misfire_grace_time=None` (a late run still runs: every rule is a function of `now` and
catches up by itself; the curfew pass covers `(previous run, now]`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from psycopg.types.json import Jsonb

from alerts.models import Severity
from alerts.notify import Notifier, Route, build_notifiers, dispatch_notifications, parse_routes
from alerts.scheduled import (
    DEFAULT_DEADLINES,
    CurfewConfig,
    EscalationPolicy,
    GroupCache,
    PolygonCache,
    curfew_starts,
    escalate_overdue,
)
from db.engine import get_engine, libpq_url
from devices.scheduled import (
    CheckinPlanConfig,
    SilenceConfig,
    detect_missed_checkins,
    dispatch_checkin_requests,
    evaluate_silence,
    ingest_watermark,
    plan_random_checkins,
    resolve_late_checkins,
)
from probation.settings import Settings

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

LEADER_KEY = 0x7072625F7363686C & 0x7FFFFFFFFFFFFFFF  # "prb_schl"
_JOB_KEY_BASE = 0x7072625F6A000000  # per-job locks: base + crc32(job id)
ALIGN = datetime(2020, 1, 6, tzinfo=UTC)  # interval triggers fire on multiples from here
CURFEW_MAX_LOOKBACK = timedelta(hours=6)


def job_lock_key(job_id: str) -> int:
    return (_JOB_KEY_BASE + zlib.crc32(job_id.encode())) & 0x7FFFFFFFFFFFFFFF


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """The settings the rules need, in the domains' own types."""

    silence: SilenceConfig
    curfew: CurfewConfig
    escalation: EscalationPolicy
    plan: CheckinPlanConfig
    routes: list[Route]
    retention_years: int
    dead_letter_retention: timedelta

    @classmethod
    def from_settings(cls, s: Settings) -> RuleConfig:
        deadlines: dict[Severity, timedelta | None] = dict(DEFAULT_DEADLINES)
        for k, v in s.escalation_deadlines_s.items():
            deadlines[Severity(k)] = None if v is None else timedelta(seconds=v)
        return cls(
            silence=SilenceConfig(
                upload_interval_s=dict(s.upload_interval_s),
                communication_min=timedelta(seconds=s.communication_lost_min_s),
                location_lost=timedelta(seconds=s.location_lost_s),
            ),
            curfew=CurfewConfig(no_fix=timedelta(seconds=s.curfew_no_fix_s)),
            escalation=EscalationPolicy(deadlines=deadlines, max_level=s.escalation_max_level),
            plan=CheckinPlanConfig(
                per_day=dict(s.checkin_per_day), from_hour=s.checkin_from_hour,
                to_hour=s.checkin_to_hour, deadline=timedelta(seconds=s.checkin_deadline_s),
                salt=s.jwt_secret or "",  # a configured secret makes the times unguessable
            ),
            routes=parse_routes(s.notify_routes),
            retention_years=s.retention_years,
            dead_letter_retention=timedelta(days=s.dead_letter_retention_days),
        )


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True, slots=True)
class JobSpec:
    id: str
    run: Callable[[SchedulerService, Conn, datetime], dict[str, Any]]
    trigger: Callable[[Settings], Any]
    needs_mqtt: bool = False


def _interval(s: Settings) -> IntervalTrigger:
    return IntervalTrigger(seconds=s.scheduler_interval_s, start_date=ALIGN, timezone=UTC)


# The clock rules (silence, curfew starts, missed check-ins) judge by what is stored, so
# they are evaluated as of `stored_until` = min(now, ingest watermark): a deadline is
# decided only once the ingest has drained everything the broker received before it
# (`devices/watermark.py`), later if the ingest lags, with the rule's original timing.
# With no live ingest worker they are deferred and the stall is logged as an error.


def _job_silence(svc: SchedulerService, conn: Conn, now: datetime) -> dict[str, Any]:
    until = svc.stored_until(conn, now)
    if until is None:
        return {"deferred": "ingest_stalled"}
    return evaluate_silence(conn, now=until, config=svc.rules.silence).as_dict() | {
        "stored_until": until.isoformat()}


def _job_curfew(svc: SchedulerService, conn: Conn, now: datetime) -> dict[str, Any]:
    # the previous run covered window starts up to its `until` (older rows: `now_at`)
    row = conn.execute(
        "SELECT max(coalesce((result->>'until')::timestamptz, now_at)) FROM scheduler_runs"
        " WHERE job_id = 'curfew' AND finished_at IS NOT NULL AND now_at < %s", (now,),
    ).fetchone()
    last = row[0] if row else None
    period = timedelta(seconds=svc.settings.scheduler_interval_s)
    since = max(last or now - period, now - CURFEW_MAX_LOOKBACK)
    stored = svc.stored_until(conn, now)
    until = since if stored is None else max(since, stored)
    res = curfew_starts(conn, since=since, now=until, config=svc.rules.curfew,
                        polygons=svc.polygons, groups=svc.groups)
    out = res.as_dict() | {"since": since.isoformat(), "until": until.isoformat()}
    return out | ({"deferred": "ingest_stalled"} if stored is None else {})


def _job_escalation(svc: SchedulerService, conn: Conn, now: datetime) -> dict[str, Any]:
    return {"escalated": len(escalate_overdue(conn, now=now, policy=svc.rules.escalation))}


def _job_checkin_plan(svc: SchedulerService, conn: Conn, now: datetime) -> dict[str, Any]:
    return {"planned": plan_random_checkins(conn, now=now, config=svc.rules.plan)}


def _job_checkins(svc: SchedulerService, conn: Conn, now: datetime) -> dict[str, Any]:
    until = svc.stored_until(conn, now)
    out: dict[str, Any] = (
        {"deferred": "ingest_stalled"} if until is None
        else detect_missed_checkins(conn, now=until).as_dict())
    out |= resolve_late_checkins(conn, now=now).as_dict()
    pub = svc.publisher()
    publish = None if pub is None else pub.publish_recorded
    return out | dispatch_checkin_requests(
        conn, now=now, publish=publish, challenges=svc.settings.checkin_challenges).as_dict()


def _job_downlink_resend(svc: SchedulerService, conn: Conn, now: datetime) -> dict[str, Any]:
    pub = svc.publisher()
    return {"resent": pub.resend_unsent() if pub is not None else 0}


def _job_notify(svc: SchedulerService, conn: Conn, now: datetime) -> dict[str, Any]:
    return dispatch_notifications(
        conn, now=now, notifiers=svc.notifiers, routes=svc.rules.routes
    ).as_dict()


def run_retention(
    database_url: str, *, now: datetime, retention_years: int = 5,
    dead_letter_retention: timedelta = timedelta(days=90),
) -> dict[str, Any]:
    """Apply retention and append its audit entry in one transaction (commits)."""
    from sqlmodel import Session

    from db.retention import apply_retention
    from probation.audit.service import Pending, append

    with Session(get_engine(database_url)) as session:
        raw = session.connection().connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        res = apply_retention(raw, now=now, retention_years=retention_years,
                              dead_letter_retention=dead_letter_retention)
        detail = res.as_dict() | {"retention_years": retention_years,
                                  "dead_letter_days": dead_letter_retention.days}
        append(session, [Pending(None, "retention.run", "telemetry", None, None, detail)])
        session.commit()
    return detail


def _job_retention(svc: SchedulerService, conn: Conn, now: datetime) -> dict[str, Any]:
    return run_retention(svc.database_url, now=now, retention_years=svc.rules.retention_years,
                         dead_letter_retention=svc.rules.dead_letter_retention)


def _job_audit_anchor(svc: SchedulerService, conn: Conn, now: datetime) -> dict[str, Any]:
    from probation.audit.service import anchor

    return anchor(svc.database_url, svc.settings)


def _anchor_interval(s: Settings) -> IntervalTrigger:
    return IntervalTrigger(seconds=s.audit_anchor_interval_s, start_date=ALIGN, timezone=UTC)


JOBS: dict[str, JobSpec] = {j.id: j for j in (
    JobSpec("audit_anchor", _job_audit_anchor, _anchor_interval),
    JobSpec("silence", _job_silence, _interval),
    JobSpec("curfew", _job_curfew, _interval),
    JobSpec("escalation", _job_escalation, _interval),
    JobSpec("checkins", _job_checkins, _interval, needs_mqtt=True),
    JobSpec("checkin_plan", _job_checkin_plan,
            lambda s: IntervalTrigger(seconds=max(60.0, 10 * s.scheduler_interval_s),
                                      start_date=ALIGN, timezone=UTC)),
    JobSpec("downlink_resend", _job_downlink_resend, _interval, needs_mqtt=True),
    JobSpec("notify", _job_notify,
            lambda s: IntervalTrigger(seconds=s.notify_interval_s, start_date=ALIGN, timezone=UTC)),
    JobSpec("retention", _job_retention,
            lambda s: CronTrigger(hour=3, minute=30, timezone=UTC)),
)}


# --------------------------------------------------------------------------- executor

_due = threading.local()


def _run_with_due(job: Any, alias: str, run_times: list[datetime], logger_name: str) -> Any:
    _due.value = run_times[-1]
    try:
        return run_job(job, alias, run_times, logger_name)
    finally:
        _due.value = None


class _DueTimeExecutor(ThreadPoolExecutor):
    """A thread pool that tells the job which due time it runs for (APScheduler 3
    passes only the job's own args)."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def callback(f: Any) -> None:
            exc = f.exception()
            if exc:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, f.result())

        f = self._pool.submit(_run_with_due, job, job._jobstore_alias, run_times,
                              self._logger.name)
        f.add_done_callback(callback)


_ACTIVE: SchedulerService | None = None


def run_scheduled(job_id: str) -> None:
    """The function every stored job calls (a stable, importable reference)."""
    svc = _ACTIVE
    if svc is None:
        log.warning("job %s fired without an active scheduler service", job_id)
        return
    due = getattr(_due, "value", None) or datetime.now(UTC)
    svc.run_job(job_id, due_at=due)


# --------------------------------------------------------------------------- leader lock


class LeaderLock:
    """A PostgreSQL session advisory lock held on its own connection."""

    def __init__(self, database_url: str, key: int = LEADER_KEY) -> None:
        self.database_url = database_url
        self.key = key
        self._conn: Conn | None = None

    def try_acquire(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    libpq_url(self.database_url), autocommit=True, connect_timeout=5,
                    keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                    application_name="probation-scheduler-lock",
                )
                # the server side notices a vanished client host too
                self._conn.execute("SET tcp_keepalives_idle = 5")
                self._conn.execute("SET tcp_keepalives_interval = 2")
                self._conn.execute("SET tcp_keepalives_count = 3")
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            return bool(row and row[0])
        except psycopg.Error as e:
            log.warning("scheduler: leader lock unavailable: %s", e)
            self.close()
            return False

    def alive(self) -> bool:
        """Whether the lock's session is still there (so the lock is still ours)."""
        conn = self._conn
        if conn is None or conn.closed:
            return False
        try:
            conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            self.close()
            return False

    def release(self) -> None:
        conn = self._conn
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


# --------------------------------------------------------------------------- service


class SchedulerService:
    """Runs the timed rules on the leader; stands by otherwise (see the module doc)."""

    def __init__(
        self, *, database_url: str, settings: Settings | None = None,
        mqtt_url: str | None = None, jobs: list[str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.settings = settings or Settings()
        self.mqtt_url = mqtt_url if mqtt_url is not None else self.settings.mqtt_url
        self.rules = RuleConfig.from_settings(self.settings)
        from probation.audit.service import register_key

        register_key(database_url, self.settings.resolved_audit_key())
        self.runner = f"{socket.gethostname()}:{os.getpid()}"
        self.job_ids = [j for j in (jobs or list(JOBS)) if j in JOBS]
        if not self.mqtt_url:
            skipped = [j for j in self.job_ids if JOBS[j].needs_mqtt]
            if skipped:
                log.warning("scheduler: no MQTT URL, check-in requests are recorded, not published (%s)",
                            ", ".join(skipped))
        self.polygons = PolygonCache()
        self.groups = GroupCache()
        self.notifiers: dict[str, Notifier] = build_notifiers(
            webhook_url=self.settings.webhook_url, webhook_secret=self.settings.webhook_secret,
        )
        self.lock = LeaderLock(database_url)
        self.leader = threading.Event()
        self.terms = 0  # how many times this process became the leader
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.scheduler: BackgroundScheduler | None = None
        self._publisher: Any = None
        self._pub_lock = threading.Lock()
        self.watermark_max_age = timedelta(seconds=self.settings.ingest_watermark_max_age_s)
        self._stalled_logged: float | None = None  # monotonic time of the last stall error
        self._created = time.monotonic()  # a start-up is no stall: workers report within max age

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start competing for leadership in the background."""
        global _ACTIVE
        _ACTIVE = self
        self._thread = threading.Thread(target=self._leader_loop, name="scheduler-leader",
                                        daemon=True)
        self._thread.start()
        log.info("scheduler %s started (standby until it holds the leader lock)", self.runner)

    def stop(self) -> None:
        global _ACTIVE
        if self._stopped.is_set() and self._thread is None:
            return
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._step_down()
        self.lock.release()
        with self._pub_lock:
            if self._publisher is not None:
                self._publisher.stop()
                self._publisher = None
        if _ACTIVE is self:
            _ACTIVE = None
        log.info("scheduler stopped")

    def wait(self) -> None:
        self._stopped.wait()

    def _leader_loop(self) -> None:
        retry = self.settings.scheduler_lock_retry_s
        while not self._stopped.is_set():
            if not self.lock.try_acquire():
                self._stopped.wait(retry)
                continue
            log.info("scheduler %s is the leader", self.runner)
            try:
                self._become_leader()
            except Exception:
                log.exception("scheduler: could not start the jobs; giving up the lead")
                self._step_down()
                self.lock.release()
                self._stopped.wait(retry)
                continue
            while not self._stopped.wait(min(retry, 2.0)):
                if not self.lock.alive():
                    log.error("scheduler: lost the leader lock connection; standing by")
                    break
            self._step_down()
            if not self._stopped.is_set():
                self.lock.close()

    def _become_leader(self) -> None:
        sched = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=get_engine(self.database_url))},
            executors={"default": _DueTimeExecutor(max_workers=8)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        sched.start(paused=True)
        self._reconcile(sched)
        self.scheduler = sched
        self.terms += 1
        self.leader.set()
        sched.resume()
        log.info("scheduler: running %d jobs", len(sched.get_jobs()))

    def _reconcile(self, sched: BackgroundScheduler) -> None:
        """Add or update the fixed jobs; an unchanged job keeps its stored next run time."""
        wanted = set(self.job_ids)
        for job in sched.get_jobs():
            if job.id not in wanted:
                job.remove()
        for job_id in self.job_ids:
            trigger = JOBS[job_id].trigger(self.settings)
            existing = sched.get_job(job_id)
            if (existing is not None and str(existing.trigger) == str(trigger)
                    and existing.func_ref == f"{__name__}:run_scheduled"):
                continue
            sched.add_job(
                f"{__name__}:run_scheduled", trigger=trigger, args=[job_id], id=job_id,
                name=job_id, replace_existing=True, coalesce=True, max_instances=1,
                misfire_grace_time=None,
            )

    def _step_down(self) -> None:
        self.leader.clear()
        sched, self.scheduler = self.scheduler, None
        if sched is not None and sched.running:
            sched.shutdown(wait=False)

    # ------------------------------------------------------------ downlink

    def publisher(self) -> Any:
        """The process's `CommandPublisher` (started on first use), or None without MQTT."""
        if not self.mqtt_url:
            return None
        with self._pub_lock:
            if self._publisher is None:
                from devices.downlink import CommandPublisher

                self._publisher = CommandPublisher(
                    database_url=self.database_url, mqtt_url=self.mqtt_url,
                    prefix=self.settings.mqtt_prefix,
                ).start()
            return self._publisher

    # ------------------------------------------------------------ ingest watermark

    def stored_until(self, conn: Conn, now: datetime) -> datetime | None:
        """min(now, the live ingest workers' watermark); None when no worker reported
        within `ingest_watermark_max_age_s` (the clock rules then wait: an ops alarm in
        the log, not thousands of officer alerts for a silence that is the backend's)."""
        wm = ingest_watermark(conn, max_age=self.watermark_max_age)
        if wm.at is None:
            t = time.monotonic()
            if t - self._created < self.watermark_max_age.total_seconds():
                log.debug("no ingest watermark yet (starting up); clock rules wait")
            elif self._stalled_logged is None or t - self._stalled_logged >= 60:
                self._stalled_logged = t
                log.error(
                    "INGEST STALLED: no ingest worker reported a watermark in the last %.0f s "
                    "(%d known, last report %s); communication_lost, location_lost, curfew "
                    "starts and missed check-ins are deferred until the ingest catches up",
                    self.watermark_max_age.total_seconds(), wm.stale,
                    wm.newest_report.isoformat() if wm.newest_report else "never")
            return None
        if self._stalled_logged is not None:
            self._stalled_logged = None
            log.warning("ingest resumed: %d worker(s), watermark %s; deferred clock rules "
                        "are decided now", wm.live, wm.at.isoformat())
        return min(now, wm.at)

    # ------------------------------------------------------------ runs

    def run_job(self, job_id: str, *, due_at: datetime, now: datetime | None = None,
                force: bool = False) -> dict[str, Any] | None:
        """Run one job for one due time; None if skipped (not the leader, another
        process runs it, or that due time already ran)."""
        if not force and not self.leader.is_set():
            log.debug("scheduler: %s not run, this process is not the leader", job_id)
            return None
        spec = JOBS[job_id]
        lock_key = job_lock_key(job_id)
        with psycopg.connect(libpq_url(self.database_url),
                             application_name=f"probation-scheduler-{job_id}") as conn:
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key,)).fetchone()[0]:  # type: ignore[index]
                conn.rollback()
                log.warning("scheduler: %s is running elsewhere; skipped", job_id)
                return None
            try:
                when = now or datetime.now(UTC)
                run_id = conn.execute(
                    "INSERT INTO scheduler_runs (job_id, due_at, now_at, runner)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
                    (job_id, due_at, when, self.runner),
                ).fetchone()
                if run_id is None:
                    conn.rollback()
                    log.debug("scheduler: %s for %s already ran", job_id, due_at.isoformat())
                    return None
                result = spec.run(self, conn, when)
                conn.execute(
                    "UPDATE scheduler_runs SET finished_at = clock_timestamp(), result = %s"
                    " WHERE id = %s",
                    (Jsonb(result, dumps=lambda v: orjson.dumps(v, default=str).decode()),
                     run_id[0]),
                )
                conn.commit()
                quiet = ("groups", "starting_zones", "evaluated", "inside_or_uncertain")
                if any(isinstance(v, int) and v for k, v in result.items() if k not in quiet):
                    log.info("scheduler: %s %s", job_id, result)
                return result
            except Exception:
                if not conn.closed and not conn.broken:
                    conn.rollback()
                raise
            finally:
                if not conn.closed and not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key,))
                    conn.commit()
