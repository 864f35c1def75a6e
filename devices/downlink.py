"""Downlink: record a command in `commands`, publish it QoS 1 to the device, note when sent.

The API (check-in requests) and the scheduler (rapid mode, random check-ins)
share one `CommandPublisher` per process. The device answers on its `acks`
topic; the ingest worker stores that answer on the command.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from db.engine import libpq_url
from devices import service
from devices.mqtt import Link, broker_address, is_v5
from devices.protocol import CommandType, command_topic, encode_command

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class SentCommand:
    """A recorded command; `sent_at` is None if the broker did not accept it in time."""

    id: uuid.UUID
    device_id: uuid.UUID
    serial: str
    topic: str
    sent_at: datetime | None


class CommandPublisher:
    """Records and publishes downlink commands (thread-safe; start once, stop at exit).

    A command is committed to `commands` before it is published, so it is never
    sent without a record; if the broker does not acknowledge the publish within
    `timeout`, it stays with `sent_at = NULL` and `resend_unsent` sends it again
    (same id: the device recognises the repeat).
    """

    def __init__(
        self, *, database_url: str, mqtt_url: str, prefix: str = "pm/v1",
        client_id: str | None = None, protocol: str = "3.1.1", pool_size: int = 4,
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.mqtt_url = mqtt_url
        self.v5 = is_v5(protocol)
        self.client_id = client_id or f"probation-downlink-{uuid.uuid4().hex[:8]}"
        self._pool = ConnectionPool(
            libpq_url(database_url), min_size=0, max_size=pool_size, open=False,
            kwargs={"application_name": "probation-downlink"},
        )
        self._link: Link | None = None
        self._lock = threading.Lock()

    def start(self, timeout: float = 10) -> CommandPublisher:
        """Open the pool and connect to the broker (waits up to `timeout` for the broker)."""
        self._pool.open()
        link = Link(self.mqtt_url, self.client_id, name="downlink", v5=self.v5)
        link.client.max_inflight_messages_set(1000)
        self._link = link
        if not link.start(timeout):
            log.warning("downlink: broker %s:%s not reachable yet; commands wait for it",
                        *broker_address(self.mqtt_url))
        return self

    def stop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.stop()
        self._pool.close()

    def __enter__(self) -> CommandPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def send(
        self, *, device_id: uuid.UUID, type: CommandType | str, params: dict[str, Any],
        requested_by: uuid.UUID | None = None, timeout: float = 5.0,
    ) -> SentCommand:
        """Record and publish a command; ValueError for params outside the contract,
        LookupError for an unknown device."""
        ctype = CommandType(type)
        encode_command(command_id=uuid.uuid4(), ts=datetime.now(UTC), type=ctype, params=params)
        with self._pool.connection() as conn:
            rec = service.create_command(
                conn, device_id=device_id, type=ctype.value, params=params,
                requested_by=requested_by,
            )
        return self._publish(rec, timeout)

    def publish_recorded(self, command_id: uuid.UUID, *, timeout: float = 5.0) -> SentCommand:
        """(Re)publish a command already in `commands` (same id)."""
        with self._pool.connection() as conn:
            rec = service.get_command(conn, command_id=command_id)
        if rec is None:
            raise LookupError(f"no command {command_id}")
        return self._publish(rec, timeout)

    def resend_unsent(self, *, older_than: timedelta = timedelta(seconds=30)) -> int:
        """Publish the commands never accepted by the broker (a scheduler job); returns how many."""
        with self._pool.connection() as conn:
            recs = service.unsent_commands(conn, created_before=datetime.now(UTC) - older_than)
        return sum(1 for r in recs if self._publish(r, 5.0).sent_at is not None)

    def _publish(self, rec: service.CommandRecord, timeout: float) -> SentCommand:
        topic = command_topic(rec.serial, self.prefix)
        payload = encode_command(
            command_id=rec.id, ts=rec.created_at, type=CommandType(rec.type), params=rec.params,
        )
        sent_at: datetime | None = None
        if self._link is None:
            raise RuntimeError("CommandPublisher is not started")
        client = self._link.client
        with self._lock:
            info = client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as e:
            log.warning("command %s to %s not published: %s", rec.id, rec.serial, e)
        if info.is_published():
            sent_at = datetime.now(UTC)
            with self._pool.connection() as conn:
                service.mark_command_sent(conn, command_id=rec.id, sent_at=sent_at)
        else:
            log.warning("command %s to %s not acknowledged by the broker within %.1fs; "
                        "left for resend", rec.id, rec.serial, timeout)
        return SentCommand(rec.id, rec.device_id, rec.serial, topic, sent_at)
