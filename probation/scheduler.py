"""The scheduler process: APScheduler with a PostgreSQL job store runs the timed rules."""

from __future__ import annotations

import logging
import threading

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from db.engine import get_engine

log = logging.getLogger(__name__)


class SchedulerService:
    """Runs the domains' scheduled jobs; jobs and next run times live in the database."""

    def __init__(self, *, database_url: str) -> None:
        self.database_url = database_url
        self._stopped = threading.Event()
        self.scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=get_engine(database_url))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            timezone="UTC",
        )

    def start(self) -> None:
        self.scheduler.start()
        log.info("scheduler started with %d jobs", len(self.scheduler.get_jobs()))

    def stop(self) -> None:
        self._stopped.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        log.info("scheduler stopped")

    def wait(self) -> None:
        self._stopped.wait()
