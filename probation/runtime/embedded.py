"""Resolve where the database and the broker are, starting the embedded ones if needed."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from db.server import LocalPostgres, embedded_bin_dir, free_port
from devices.broker import EmbeddedBroker
from probation.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_DB = "probation"
EMBEDDED_PG_PORT = 54329
EMBEDDED_MQTT_PORT = 1883


@dataclass
class Runtime:
    """The resolved URLs plus whatever embedded servers this process started."""

    database_url: str
    mqtt_url: str
    postgres: LocalPostgres | None = None
    broker: EmbeddedBroker | None = None
    notes: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None


def _ensure_database(pg: LocalPostgres, name: str) -> None:
    import psycopg

    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def _prepare_data_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        path.chmod(path.stat().st_mode | stat.S_IXOTH)


def start_embedded(settings: Settings, *, need_broker: bool = True) -> Runtime:
    """Start the embedded PostgreSQL and/or broker where no URL is configured."""
    db_url = settings.database_url
    mqtt_url = settings.mqtt_url
    rt = Runtime(database_url=db_url or "", mqtt_url=mqtt_url or "")
    if not db_url:
        data = settings.data_dir / "postgres"
        _prepare_data_dir(settings.data_dir)
        pg = LocalPostgres(bin_dir=embedded_bin_dir(), data_dir=data, port=free_port(EMBEDDED_PG_PORT))
        created = pg.init()
        already = pg.running_port()
        if already is not None:
            # Another process (a running `serve`) owns the server: use it, never stop it.
            pg.port = already
        else:
            pg.start()
            rt.postgres = pg
        _ensure_database(pg, EMBEDDED_DB)
        rt.database_url = pg.url(EMBEDDED_DB)
        rt.notes.append(
            f"embedded PostgreSQL ({'new' if created else 'existing'} cluster in {data}): "
            f"{rt.database_url}"
        )
    if not mqtt_url and need_broker:
        port = free_port(EMBEDDED_MQTT_PORT)
        broker = EmbeddedBroker(port=port)
        broker.start()
        rt.broker = broker
        rt.mqtt_url = broker.url
        rt.notes.append(f"embedded MQTT broker (amqtt): {broker.url}")
    os.environ.setdefault("PROBATION_RUNTIME", "embedded" if rt.postgres else "external")
    return rt
