"""The ingest watermark against the real broker and database: the clock rules decide a
deadline only once the ingest has drained everything the broker received before it.

Each test runs `IngestWorker`s in-process against the session's mosquitto (a private
topic prefix) and drives the scheduler's jobs with `SchedulerService.run_job` (real
clock). "Held back" = the worker is stopped, its persistent session keeps the uplink in
the broker, and a worker with the same client id drains it later.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from db.engine import connect
from devices.checkins import CheckinOutcomes
from devices.ingest import IngestWorker
from devices.pipeline import CheckinVerdict
from devices.protocol import Checkin
from devices.scheduled import ingest_watermark
from probation.runtime.scheduler import SchedulerService
from probation.settings import Settings
from simulator.publisher import Publisher
from tests.integration.scheduler_world import World


class Judge:
    """Check-ins pass on liveness alone (the biometric decision is tested elsewhere)."""

    def evaluate(self, conn: psycopg.Connection[Any], *, device_id: uuid.UUID,
                 case_id: uuid.UUID | None, checkins: Sequence[Checkin]) -> list[CheckinVerdict]:
        return [CheckinVerdict(c.liveness >= 0.8, 0.9) for c in checkins]


def wait_for(what: str, cond: Callable[[], Any], timeout: float = 20) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with connect(database_url, autocommit=True) as c:
        yield c


@pytest.fixture
def world(conn: psycopg.Connection[Any]) -> World:
    return World(conn)


@pytest.fixture
def pub(mqtt_url: str) -> Iterator[Publisher]:
    with Publisher(mqtt_url) as p:
        yield p


@pytest.fixture
def workers(database_url: str, mqtt_url: str,
            mqtt_prefix: str) -> Iterator[Callable[[str], IngestWorker]]:
    """Start an ingest worker with a given client id (its persistent session)."""
    started: list[IngestWorker] = []

    def start(client_id: str) -> IngestWorker:
        w = IngestWorker(database_url=database_url, mqtt_url=mqtt_url, prefix=mqtt_prefix,
                         client_id=client_id, flush_ms=20, checkin_judge=Judge(),
                         after_store=[CheckinOutcomes()])
        w.start()
        started.append(w)
        assert w.wait_ready(20), "worker not ready"
        return w

    yield start
    for w in started:
        w.stop()


def scheduler(database_url: str, max_age_s: float = 60) -> SchedulerService:
    settings = Settings(database_url=database_url, mqtt_url="",
                        ingest_watermark_max_age_s=max_age_s)
    return SchedulerService(database_url=database_url, settings=settings, mqtt_url="")


_due = iter(range(1, 10**6))


def run(svc: SchedulerService, job: str) -> dict[str, Any]:
    """One run of `job` now (a fresh due time each call)."""
    due = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=next(_due))
    out = svc.run_job(job, due_at=due, force=True)
    assert out is not None
    return out


def watermark(conn: psycopg.Connection[Any], max_age_s: float = 60) -> datetime | None:
    return ingest_watermark(conn, max_age=timedelta(seconds=max_age_s)).at


def request(conn: psycopg.Connection[Any], case: uuid.UUID, phone: uuid.UUID,
            deadline: datetime) -> uuid.UUID:
    rid = uuid.uuid4()
    conn.execute(
        "INSERT INTO checkin_requests (id, case_id, device_id, source, due_at, deadline,"
        " command_id, status) VALUES (%s, %s, %s, 'officer', %s, %s, NULL, 'sent')",
        (rid, case, phone, deadline - timedelta(minutes=1), deadline),
    )
    return rid


def status(conn: psycopg.Connection[Any], rid: uuid.UUID) -> str:
    return conn.execute("SELECT status FROM checkin_requests WHERE id = %s",
                        (rid,)).fetchone()[0]  # type: ignore[index]


def _phone_with_worker(
    conn: psycopg.Connection[Any], world: World, workers: Callable[[str], IngestWorker],
) -> tuple[uuid.UUID, uuid.UUID, str, IngestWorker]:
    """A case with a phone, and a running ingest worker that has reported a watermark."""
    case = world.case()
    phone = world.device(kind="phone")
    world.assign(phone, case, datetime.now(UTC) - timedelta(days=1))
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"
    w = workers(client_id)
    wait_for("a first watermark", lambda: watermark(conn))
    return case, phone, client_id, w


def test_a_checkin_held_in_the_broker_past_its_deadline_is_not_missed(
    conn: psycopg.Connection[Any], world: World, database_url: str, mqtt_prefix: str,
    workers: Callable[[str], IngestWorker], pub: Publisher,
) -> None:
    case, phone, client_id, w = _phone_with_worker(conn, world, workers)
    w.stop()  # the ingest falls behind: its session keeps what arrives
    deadline = datetime.now(UTC) + timedelta(seconds=3)
    rid = request(conn, case, phone, deadline)
    ts = datetime.now(UTC)
    pub.publish(f"{mqtt_prefix}/devices/{world.serial(phone)}/checkins", orjson.dumps(
        {"checkins": [{"seq": 1, "ts": ts.isoformat(), "method": "face",
                       "embedding": [0.5] * 128, "liveness": 0.95, "request_id": str(rid)}]}))
    pub.flush()
    time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.5)

    svc = scheduler(database_url)
    out = run(svc, "checkins")  # past the deadline, the check-in still in the broker
    assert out["missed"] == 0, out
    assert status(conn, rid) == "sent"
    assert world.alerts(case, "checkin_missed") == []

    workers(client_id)  # the ingest catches up
    wait_for("the watermark past the deadline", lambda: (watermark(conn) or deadline) > deadline)
    assert conn.execute("SELECT count(*) FROM checkins").fetchone() == (1,), conn.execute("SELECT reason, detail FROM dead_letters").fetchall()
    out = run(svc, "checkins")
    assert out["missed"] == 0, out
    assert status(conn, rid) == "passed"
    assert world.alerts(case, "checkin_missed") == []


def test_a_real_miss_is_still_alerted_with_its_deadline_once_the_ingest_catches_up(
    conn: psycopg.Connection[Any], world: World, database_url: str,
    workers: Callable[[str], IngestWorker],
) -> None:
    case, phone, client_id, w = _phone_with_worker(conn, world, workers)
    deadline = datetime.now(UTC) + timedelta(seconds=2)
    rid = request(conn, case, phone, deadline)
    w.stop()  # lagging: the deadline passes while the watermark is before it
    time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.5)
    svc = scheduler(database_url)
    assert run(svc, "checkins")["missed"] == 0
    assert status(conn, rid) == "sent"

    workers(client_id)
    wait_for("the watermark past the deadline", lambda: (watermark(conn) or deadline) > deadline)
    assert run(svc, "checkins")["missed"] == 1
    (a,) = world.alerts(case, "checkin_missed")
    assert a["started_at"] == deadline  # the rule's original timing, only decided later
    assert a["evidence"]["request_id"] == str(rid)
    assert status(conn, rid) == "missed"


def test_no_live_ingest_defers_silence_and_resumes_with_what_was_queued(
    conn: psycopg.Connection[Any], world: World, database_url: str, mqtt_prefix: str,
    workers: Callable[[str], IngestWorker], pub: Publisher, caplog: pytest.LogCaptureFixture,
) -> None:
    now = datetime.now(UTC)
    heard = now - timedelta(minutes=11)  # medium risk: communication_lost after 10 min
    cases, devices = [], []
    for _ in range(40):
        case = world.case(risk="medium")
        dev = world.device(last_seen=heard, last_fix_at=heard, last_good_fix_at=heard)
        world.assign(dev, case, now - timedelta(days=1))
        cases.append(case)
        devices.append(dev)
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"
    workers(client_id).stop()  # the session exists; then no ingest worker is alive
    # half of the devices did talk: their fixes wait in the broker
    for dev in devices[:20]:
        pub.publish(f"{mqtt_prefix}/devices/{world.serial(dev)}/fixes", orjson.dumps(
            {"fixes": [{"seq": 1, "ts": datetime.now(UTC).isoformat(), "lat": 43.2,
                        "lon": 76.9, "acc": 10}]}))
    pub.flush()
    svc = scheduler(database_url, max_age_s=1.5)
    time.sleep(2)  # the stopped worker's last report is now older than max_age
    with caplog.at_level(logging.ERROR, logger="probation.runtime.scheduler"):
        out = run(svc, "silence")
    assert out == {"deferred": "ingest_stalled"}
    assert "INGEST STALLED" in caplog.text
    n = conn.execute("SELECT count(*) FROM alerts WHERE type = 'communication_lost'").fetchone()
    assert n == (0,)

    workers(client_id)  # the ingest resumes and drains the queue
    started = datetime.now(UTC)
    wait_for("the watermark past the resume", lambda: (watermark(conn) or started) > started)
    out = run(svc, "silence")
    assert out["communication_opened"] == 20, out
    for case in cases[:20]:
        assert world.alerts(case, "communication_lost") == []
    for case in cases[20:]:
        (a,) = world.alerts(case, "communication_lost")
        assert a["started_at"] == heard + timedelta(minutes=10)


def test_curfew_starts_wait_for_the_watermark(
    conn: psycopg.Connection[Any], database_url: str,
) -> None:
    """The curfew job covers window starts up to min(now, watermark) and the next run
    continues from there, so a start deferred by a lagging ingest is still evaluated."""
    svc = scheduler(database_url)
    lag = datetime.now(UTC) - timedelta(seconds=10)  # the first run looks back 30 s
    conn.execute("INSERT INTO ingest_watermark (worker_id, watermark) VALUES ('w', %s)", (lag,))
    first = run(svc, "curfew")
    assert datetime.fromisoformat(first["until"]) == lag
    conn.execute("UPDATE ingest_watermark SET watermark = now(), updated_at = now()")
    second = run(svc, "curfew")
    assert datetime.fromisoformat(second["since"]) == lag
    assert datetime.fromisoformat(second["until"]) > lag
    conn.execute("UPDATE ingest_watermark SET updated_at = now() - interval '1 hour'")
    third = run(svc, "curfew")  # stalled: nothing covered, nothing skipped
    assert third["deferred"] == "ingest_stalled"
    assert third["since"] == third["until"] == second["until"]
