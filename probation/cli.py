"""The `probation` command line: run the service or its parts, manage the database and users."""

from __future__ import annotations

import logging
import signal
import sys
import time
from typing import Annotated

import typer

from probation import __version__
from probation.settings import Settings

app = typer.Typer(help="Probation electronic monitoring backend.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")

log = logging.getLogger("probation")

HostOpt = Annotated[str, typer.Option(help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option(help="Port to listen on.")]


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("transitions", "amqtt", "apscheduler.scheduler", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings() -> Settings:
    settings = Settings()
    _setup_logging(settings)
    return settings


def _require(value: str | None, name: str) -> str:
    if not value:
        typer.echo(f"PROBATION_{name} is not set (only `probation serve` starts embedded servers).", err=True)
        raise typer.Exit(2)
    return value


def _on_term(stop: object) -> None:
    def handler(signum: int, frame: object) -> None:
        log.info("received signal %d, shutting down", signum)
        stop.stop()  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _run_uvicorn(fastapi_app: object, host: str, port: int) -> None:
    """Run uvicorn until SIGTERM/SIGINT, then return (so the caller can stop its parts).

    uvicorn re-raises the captured signal after its own shutdown, which would kill the
    process before `serve` stops the worker, the scheduler and the embedded servers.
    """
    import contextlib

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

    config = uvicorn.Config(fastapi_app, host=host, port=port, log_level="info", access_log=False)  # type: ignore[arg-type]
    Server(config).run()


@app.command()
def serve(host: HostOpt = "127.0.0.1", port: PortOpt = 8000) -> None:
    """API, ingestion worker and scheduler in one process (embedded servers if no URLs)."""
    from db.migrate import upgrade
    from devices.ingest import IngestWorker
    from probation.app import create_app
    from probation.runtime import start_embedded
    from probation.scheduler import SchedulerService

    settings = _settings()
    t0 = time.monotonic()
    rt = start_embedded(settings)
    worker: IngestWorker | None = None
    scheduler: SchedulerService | None = None
    try:
        upgrade(rt.database_url)
        fastapi_app = create_app(settings, database_url=rt.database_url, mqtt_url=rt.mqtt_url)
        worker = IngestWorker(
            database_url=rt.database_url, mqtt_url=rt.mqtt_url, prefix=settings.mqtt_prefix,
            client_id=settings.mqtt_client_id, share_group=settings.mqtt_share_group,
        )
        worker.start()
        scheduler = SchedulerService(database_url=rt.database_url)
        scheduler.start()
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        lines = [
            f"API:      http://{shown}:{port}/api/v1",
            f"Docs:     http://{shown}:{port}/docs",
            f"Database: {rt.database_url}",
            f"Broker:   {rt.mqtt_url} (topic prefix {settings.mqtt_prefix})",
            f"Data dir: {settings.data_dir}",
            *rt.notes,
            f"ready to start the API after {time.monotonic() - t0:.2f} s",
        ]
        for line in lines:
            typer.echo(line, err=True)
        _run_uvicorn(fastapi_app, host, port)
    finally:
        if scheduler is not None:
            scheduler.stop()
        if worker is not None:
            worker.stop()
        rt.stop()
        log.info("serve stopped")


@app.command()
def api(host: HostOpt = "127.0.0.1", port: PortOpt = 8000) -> None:
    """The HTTP API alone (production)."""
    from probation.app import create_app

    settings = _settings()
    db = _require(settings.database_url, "DATABASE_URL")
    mq = _require(settings.mqtt_url, "MQTT_URL")
    _run_uvicorn(create_app(settings, database_url=db, mqtt_url=mq), host, port)


@app.command()
def ingest() -> None:
    """The ingestion worker alone (production; several may share the load)."""
    from devices.ingest import IngestWorker

    settings = _settings()
    worker = IngestWorker(
        database_url=_require(settings.database_url, "DATABASE_URL"),
        mqtt_url=_require(settings.mqtt_url, "MQTT_URL"),
        prefix=settings.mqtt_prefix,
        client_id=settings.mqtt_client_id,
        share_group=settings.mqtt_share_group,
    )
    _on_term(worker)
    worker.start()
    worker.wait()
    worker.stop()


@app.command()
def scheduler() -> None:
    """The scheduler alone (production)."""
    from probation.scheduler import SchedulerService

    settings = _settings()
    svc = SchedulerService(database_url=_require(settings.database_url, "DATABASE_URL"))
    _on_term(svc)
    svc.start()
    svc.wait()
    svc.stop()


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the migrations (embedded database if no URL is set)."""
    from db.migrate import upgrade
    from probation.runtime import start_embedded

    settings = _settings()
    rt = start_embedded(settings, need_broker=False)
    try:
        upgrade(rt.database_url, revision)
        typer.echo(f"database at revision {revision}: {rt.database_url}")
    finally:
        rt.stop()


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Option(help="Login name.")],
    role: Annotated[str, typer.Option(help="officer, supervisor or admin.")],
    password: Annotated[str | None, typer.Option(help="Password (prompted if not given).")] = None,
    supervisor: Annotated[str | None, typer.Option(help="Username of the officer's supervisor.")] = None,
    full_name: Annotated[str, typer.Option(help="Full name.")] = "",
) -> None:
    """Create a user (embedded database if no URL is set)."""
    from db.migrate import upgrade
    from probation.runtime import start_embedded
    from probation.users import UserError, create_user_cli

    settings = _settings()
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    rt = start_embedded(settings, need_broker=False)
    try:
        upgrade(rt.database_url)
        try:
            uid = create_user_cli(
                rt.database_url, username=username, role=role, password=password,
                supervisor=supervisor, full_name=full_name,
            )
        except UserError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"created user {username} ({role}) {uid}")
    finally:
        rt.stop()


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
