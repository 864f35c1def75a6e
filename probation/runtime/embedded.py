"""Resolve where the database and the broker are, starting the embedded ones if needed."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from db.server import LocalPostgres, embedded_bin_dir, free_port
from devices.broker import BrokerTls, EmbeddedMosquitto, device_accounts
from devices.mqtt_auth import new_password
from probation.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_DB = "probation"
EMBEDDED_PG_PORT = 54329
SIMULATOR_USER = "probation.simulator"  # `probation demo`'s gateway account


@dataclass
class Runtime:
    """The resolved URLs plus whatever embedded servers this process started."""

    database_url: str
    mqtt_url: str
    postgres: LocalPostgres | None = None
    broker: EmbeddedMosquitto | None = None
    notes: list[str] = field(default_factory=list)
    gateway_urls: dict[str, str] = field(default_factory=dict)
    serve_lock: int | None = None  # fd holding <data dir>/serve.lock while this serve runs

    def sync_broker_accounts(self) -> bool:
        """Give the embedded broker the devices' current credentials (reloading it)."""
        return self.broker.sync() if self.broker is not None else False

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self.serve_lock is not None:
            os.close(self.serve_lock)
            self.serve_lock = None


def _ensure_database(pg: LocalPostgres, name: str) -> None:
    import psycopg

    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:  # SCRAM, see db/server
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def _prepare_data_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        path.chmod(path.stat().st_mode | stat.S_IXOTH)


def _broker_port(settings: Settings, state: Path) -> int:
    """The port this data dir's broker used before (devices are configured with it), else
    the configured one if free, else any free one; remembered for the next start."""
    port_file = state / "port"
    if port_file.exists():
        return int(port_file.read_text())
    port = _free_port_near(settings.mqtt_port) if settings.mqtt_port else free_port()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    port_file.write_text(str(port))
    return port


def _free_port_near(port: int, tries: int = 100) -> int:
    """`port` or the next free one above it: outside the kernel's ephemeral range (where
    `free_port()` picks), so no outgoing connection takes it while the broker is down."""
    for candidate in range(port, min(port + tries, 65536)):
        if free_port(candidate, "127.0.0.1") == candidate:
            return candidate
    return free_port()


def _tls(settings: Settings) -> BrokerTls | None:
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ValueError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return BrokerTls(cert=settings.tls_cert, key=settings.tls_key, host=settings.mqtt_host,
                     port=settings.mqtt_tls_port)


def _start_broker(settings: Settings, rt: Runtime, gateways: dict[str, str]) -> None:
    state = settings.data_dir / "mosquitto"
    secrets_ = {name: settings.generated_secret(f"mqtt_{name}", new_password())
                for name in gateways}
    broker = EmbeddedMosquitto(
        data_dir=state, backend_password=settings.resolved_mqtt_backend_password(),
        host=settings.mqtt_host, port=_broker_port(settings, state), prefix=settings.mqtt_prefix,
        tls=_tls(settings), gateways=gateways,
        accounts=lambda: [*_gateway_hashes(secrets_, state), *device_accounts(rt.database_url)],
    )
    broker.start()
    rt.broker = broker
    rt.mqtt_url = broker.url
    for name, password in secrets_.items():
        rt.gateway_urls[name] = f"mqtt://{name}:{password}@{broker.connect_host}:{broker.port}"
    how = "adopted, still running" if broker.adopted else "mosquitto"
    rt.notes.append(f"embedded MQTT broker ({how}): devices connect to {broker.public_url} "
                    "with their serial and the password issued at registration")


def _gateway_hashes(passwords: dict[str, str], state: Path) -> list[tuple[str, str]]:
    from devices.mqtt_auth import reuse_or_hash

    return [(n, reuse_or_hash(n, p, state / "passwd")) for n, p in passwords.items()]


def _serve_lock(data_dir: Path) -> int | None:
    """An exclusive lock on the data dir held for as long as this `serve` runs; None if a
    running `serve` holds it. The lock dies with its process, so a `serve` that finds the
    embedded servers running and gets the lock knows their owner crashed."""
    import fcntl

    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "serve.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def start_embedded(settings: Settings, *, need_broker: bool = True,
                   gateways: dict[str, str] | None = None) -> Runtime:
    """Start the embedded PostgreSQL and/or broker where no URL is configured.
    `gateways`: extra broker accounts that publish for any device (name -> why)."""
    db_url = settings.database_url
    mqtt_url = settings.mqtt_url
    rt = Runtime(database_url=db_url or "", mqtt_url=mqtt_url or "")
    if need_broker and not (db_url and mqtt_url):  # `serve`: owns what it starts or adopts
        rt.serve_lock = _serve_lock(settings.data_dir)
        if rt.serve_lock is None:
            raise RuntimeError(f"another `probation serve` is running on {settings.data_dir}")
    try:
        if not db_url:
            data = settings.data_dir / "postgres"
            _prepare_data_dir(settings.data_dir)
            pg = LocalPostgres(bin_dir=embedded_bin_dir(), data_dir=data, port=free_port(EMBEDDED_PG_PORT))
            created = pg.init()
            already = pg.running_port()
            if already is not None and rt.serve_lock is None:
                # A running `serve` owns the server (this is `user add` beside it): use it only.
                pg.port = already
            elif already is not None:  # left by a `serve` that crashed: this one owns it now
                pg.port = already
                rt.postgres = pg
                rt.notes.append("embedded PostgreSQL adopted (still running after a crash)")
            else:
                pg.start()
                rt.postgres = pg
            _ensure_database(pg, EMBEDDED_DB)
            rt.database_url = pg.url(EMBEDDED_DB)
            rt.notes.append(
                f"embedded PostgreSQL ({'new' if created else 'existing'} cluster in {data}): "
                f"{redact(rt.database_url)}, password in {pg.password_file}"
            )
        if not mqtt_url and need_broker:
            _start_broker(settings, rt, gateways or {})
    except BaseException:
        rt.stop()
        raise
    os.environ.setdefault("PROBATION_RUNTIME", "embedded" if rt.postgres else "external")
    return rt


def redact(url: str) -> str:
    """`scheme://user:secret@host…` → `scheme://user:***@host…` (for logs and banners)."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(url)
    if u.password is None:
        return url
    netloc = f"{u.username}:***@{u.hostname}" + (f":{u.port}" if u.port else "")
    return urlunsplit(u._replace(netloc=netloc))
