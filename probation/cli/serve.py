"""`serve` (everything in one process), and the production processes `api`, `ingest`,
`scheduler`."""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from probation.cli.common import HostOpt, PortOpt, load_settings, require
from probation.settings import Settings

log = logging.getLogger("probation")


def port_problem(host: str, port: int) -> str | None:
    """Why the HTTP server could not listen on `host:port` (None if it can), found the way
    uvicorn binds: address family by the host, SO_REUSEADDR (a port in TIME_WAIT is free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use"
            return f"cannot listen on {host}:{port}: {e.strerror or e}"
    return None


def check_port(host: str, port: int) -> None:
    """Exit with one line (code 1) if the HTTP port is taken, before anything starts."""
    problem = port_problem(host, port)
    if problem is not None:
        typer.echo(f"error: {problem}; choose another with --port (or --host)", err=True)
        raise typer.Exit(1)


def _on_term(stop: object) -> None:
    def handler(signum: int, frame: object) -> None:
        log.info("received signal %d, shutting down", signum)
        stop.stop()  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _run_uvicorn(fastapi_app: object, host: str, port: int, tls_cert: Path | None = None,
                 tls_key: Path | None = None) -> None:
    """Run uvicorn until SIGTERM/SIGINT, then return (so the caller can stop its parts).

    uvicorn re-raises the captured signal after its own shutdown, which would kill the
    process before `serve` stops the worker, the scheduler and the embedded servers.
    """
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def, override]
            def handler(signum: int, frame: object) -> None:
                log.info("received signal %d, shutting down", signum)
                self.should_exit = True

            old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)

    config = uvicorn.Config(
        fastapi_app, host=host, port=port, log_level="info", access_log=False,  # type: ignore[arg-type]
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
    Server(config).run()


class Service:
    """What `serve` runs in one process (and `demo` reuses): the embedded servers where no
    URLs are set, the migrations, the FastAPI app, the ingest worker and the scheduler."""

    def __init__(self, settings: Settings, *, gateways: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.gateways = gateways or {}
        self.rt: Any = None
        self.app: Any = None
        self.worker: Any = None
        self.scheduler: Any = None
        self.console_note: str | None = None  # why the console is not served, if it is not

    def start(self) -> Service:
        """Start everything but the HTTP server (on failure, stop what was started)."""
        from db.migrate import upgrade
        from probation.app import create_app
        from probation.console import ensure_assets
        from probation.runtime.embedded import start_embedded
        from probation.runtime.scheduler import SchedulerService
        from probation.runtime.workers import build_ingestion

        settings = self.settings
        self.console_note = ensure_assets()  # npm ci on the first start, when Node is there
        rt = self.rt = start_embedded(settings, gateways=self.gateways)
        try:
            upgrade(rt.database_url)
            rt.sync_broker_accounts()  # the devices' credentials, now that the table has them
            self.app = create_app(settings, database_url=rt.database_url, mqtt_url=rt.mqtt_url,
                                  broker_accounts=rt.broker)
            self.worker = build_ingestion(
                settings, database_url=rt.database_url, mqtt_url=rt.mqtt_url
            )
            self.worker.start()
            self.scheduler = SchedulerService(
                database_url=rt.database_url, settings=settings, mqtt_url=rt.mqtt_url
            )
            self.scheduler.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self.rt is not None:
            self.rt.stop()
            self.rt = None


def start_service(settings: Settings) -> Service:
    return Service(settings).start()


def _simulator_gateway() -> dict[str, str]:
    from probation.runtime.embedded import SIMULATOR_USER

    return {SIMULATOR_USER: "The simulator (`probation demo`, `probation simulate`) "
                            "publishes for every simulated device."}


def start_demo_service(settings: Settings) -> Service:
    """The service with a gateway account for the simulator on the embedded broker."""
    return Service(settings, gateways=_simulator_gateway()).start()


TlsCertOpt = Annotated[Path | None, typer.Option(
    help="Server certificate chain (PEM): HTTPS for the API (and MQTT over TLS for the "
    "embedded broker).")]
TlsKeyOpt = Annotated[Path | None, typer.Option(help="The certificate's private key (PEM).")]


def _check_plain(host: str, what: str, tls: bool) -> None:
    from devices.broker import is_loopback

    if not tls and not is_loopback(host):
        log.warning("%s listens on %s without TLS: passwords and data cross the network in "
                    "clear (give --tls-cert/--tls-key)", what, host)


def serve(
    host: HostOpt = "127.0.0.1", port: PortOpt = 8000,
    mqtt_host: Annotated[str | None, typer.Option(
        help="Where the embedded broker listens for devices (default PROBATION_MQTT_HOST, "
        "127.0.0.1).")] = None,
    tls_cert: TlsCertOpt = None, tls_key: TlsKeyOpt = None,
) -> None:
    """API, ingestion worker and scheduler in one process (embedded servers if no URLs)."""
    check_port(host, port)
    settings = load_settings()
    overrides = {k: v for k, v in {"mqtt_host": mqtt_host, "tls_cert": tls_cert,
                                   "tls_key": tls_key}.items() if v is not None}
    settings = settings.model_copy(update=overrides)
    tls = settings.tls_cert is not None and settings.tls_key is not None
    _check_plain(host, "the API", tls)
    if not settings.mqtt_url:
        _check_plain(settings.mqtt_host, "the embedded MQTT broker", tls)
    t0 = time.monotonic()
    svc = Service(settings, gateways=_simulator_gateway() if settings.mqtt_simulator_account
                  else None)
    try:
        svc.start()
        rt = svc.rt
        login = None
        if not settings.admin_password and not settings.database_url:
            from probation.users.bootstrap import ensure_embedded_admin

            login = ensure_embedded_admin(rt.database_url, settings)
        from probation.runtime.embedded import redact

        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        scheme = "https" if tls else "http"
        lines = [
            svc.console_note or f"Console:  {scheme}://{shown}:{port}/",
            f"API:      {scheme}://{shown}:{port}/api/v1",
            f"Docs:     {scheme}://{shown}:{port}/docs",
            f"Database: {redact(rt.database_url)}",
            f"Broker:   {redact(rt.mqtt_url)} (topic prefix {settings.mqtt_prefix})",
            f"Data dir: {settings.data_dir}",
            *rt.notes,
            *(f"Simulator account: {redact(url)} (password in "
              f"{settings.secret_file('mqtt_' + name)})" for name, url in rt.gateway_urls.items()),
            *([login] if login else []),
            f"ready to start the API after {time.monotonic() - t0:.2f} s",
        ]
        for line in lines:
            typer.echo(line, err=True)
        _run_uvicorn(svc.app, host, port, settings.tls_cert if tls else None,
                     settings.tls_key if tls else None)
    finally:
        svc.stop()
        log.info("serve stopped")


def api(host: HostOpt = "127.0.0.1", port: PortOpt = 8000, tls_cert: TlsCertOpt = None,
        tls_key: TlsKeyOpt = None) -> None:
    """The HTTP API alone (production). HTTPS with PROBATION_TLS_CERT/KEY or the options."""
    from probation.app import create_app

    settings = load_settings()
    db = require(settings.database_url, "DATABASE_URL")
    mq = require(settings.mqtt_url, "MQTT_URL")
    check_port(host, port)
    cert, key = tls_cert or settings.tls_cert, tls_key or settings.tls_key
    if (cert is None) != (key is None):
        typer.echo("HTTPS needs both a certificate and its key", err=True)
        raise typer.Exit(2)
    _check_plain(host, "the API", cert is not None)
    _run_uvicorn(create_app(settings, database_url=db, mqtt_url=mq), host, port, cert, key)


def ingest(
    metrics_port: Annotated[
        int, typer.Option(help="Serve Prometheus metrics on this port at /metrics (0: off).")
    ] = 0,
) -> None:
    """The ingestion worker alone (production; several may share the load)."""
    from probation.runtime.workers import build_ingestion

    settings = load_settings()
    worker = build_ingestion(
        settings,
        database_url=require(settings.database_url, "DATABASE_URL"),
        mqtt_url=require(settings.mqtt_url, "MQTT_URL"),
    )
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    _on_term(worker)
    worker.start()
    worker.wait()
    worker.stop()


def scheduler() -> None:
    """The scheduler alone (production)."""
    from probation.runtime.scheduler import SchedulerService

    settings = load_settings()
    svc = SchedulerService(
        database_url=require(settings.database_url, "DATABASE_URL"), settings=settings,
        mqtt_url=require(settings.mqtt_url, "MQTT_URL"),
    )
    _on_term(svc)
    svc.start()
    svc.wait()
    svc.stop()
