"""The `probation` command line: run the service or its parts, manage the database and users."""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from probation import __version__
from probation.settings import Settings

app = typer.Typer(help="Probation electronic monitoring backend.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

log = logging.getLogger("probation")

HostOpt = Annotated[str, typer.Option(help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option(help="Port to listen on.")]


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("transitions", "amqtt", "apscheduler.scheduler", "alembic"):
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


def _run_uvicorn(fastapi_app: object, host: str, port: int, tls_cert: Path | None = None,
                 tls_key: Path | None = None) -> None:
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

    def start(self) -> Service:
        """Start everything but the HTTP server (on failure, stop what was started)."""
        from db.migrate import upgrade
        from probation.app import create_app
        from probation.runtime import start_embedded
        from probation.scheduler import SchedulerService
        from probation.workers import build_ingestion

        settings = self.settings
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
    from probation.runtime import SIMULATOR_USER

    return {SIMULATOR_USER: "The simulator (`probation demo`, `probation simulate`) "
                            "publishes for every simulated device."}


def start_demo_service(settings: Settings) -> Service:
    """The service with a gateway account for the simulator on the embedded broker."""
    return Service(settings, gateways=_simulator_gateway()).start()


TlsOpt = Annotated[Path | None, typer.Option(help="Server certificate chain (PEM): HTTPS for "
                                             "the API and MQTT over TLS for the embedded broker.")]


def _check_plain(host: str, what: str, tls: bool) -> None:
    from devices.broker import is_loopback

    if not tls and not is_loopback(host):
        log.warning("%s listens on %s without TLS: passwords and data cross the network in "
                    "clear (give --tls-cert/--tls-key)", what, host)


@app.command()
def serve(
    host: HostOpt = "127.0.0.1", port: PortOpt = 8000,
    mqtt_host: Annotated[str | None, typer.Option(
        help="Where the embedded broker listens for devices (default PROBATION_MQTT_HOST, "
        "127.0.0.1).")] = None,
    tls_cert: TlsOpt = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key (PEM).")] = None,
) -> None:
    """API, ingestion worker and scheduler in one process (embedded servers if no URLs)."""
    settings = _settings()
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
            from probation.bootstrap import ensure_embedded_admin

            login = ensure_embedded_admin(rt.database_url, settings)
        from probation.runtime import redact

        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        scheme = "https" if tls else "http"
        lines = [
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


@app.command()
def api(
    host: HostOpt = "127.0.0.1", port: PortOpt = 8000, tls_cert: TlsOpt = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key (PEM).")] = None,
) -> None:
    """The HTTP API alone (production). HTTPS with PROBATION_TLS_CERT/KEY or the options."""
    from probation.app import create_app

    settings = _settings()
    db = _require(settings.database_url, "DATABASE_URL")
    mq = _require(settings.mqtt_url, "MQTT_URL")
    cert, key = tls_cert or settings.tls_cert, tls_key or settings.tls_key
    if (cert is None) != (key is None):
        typer.echo("HTTPS needs both a certificate and its key", err=True)
        raise typer.Exit(2)
    _check_plain(host, "the API", cert is not None)
    _run_uvicorn(create_app(settings, database_url=db, mqtt_url=mq), host, port, cert, key)


@app.command()
def ingest(
    metrics_port: Annotated[
        int, typer.Option(help="Serve Prometheus metrics on this port at /metrics (0: off).")
    ] = 0,
) -> None:
    """The ingestion worker alone (production; several may share the load)."""
    from probation.workers import build_ingestion

    settings = _settings()
    worker = build_ingestion(
        settings,
        database_url=_require(settings.database_url, "DATABASE_URL"),
        mqtt_url=_require(settings.mqtt_url, "MQTT_URL"),
    )
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    _on_term(worker)
    worker.start()
    worker.wait()
    worker.stop()


@app.command()
def scheduler() -> None:
    """The scheduler alone (production)."""
    from probation.scheduler import SchedulerService

    settings = _settings()
    svc = SchedulerService(
        database_url=_require(settings.database_url, "DATABASE_URL"), settings=settings,
        mqtt_url=_require(settings.mqtt_url, "MQTT_URL"),
    )
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
        from probation.runtime import redact

        typer.echo(f"database at revision {revision}: {redact(rt.database_url)}")
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


@app.command("dead-letters")
def dead_letters(
    reason: Annotated[str | None, typer.Option(help="Only this reason code.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only since this time (RFC 3339, e.g. 2026-11-25T10:00:00Z).")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """What ingestion refused: topic, reason code, detail, payload (embedded database if no URL)."""
    from datetime import datetime

    import orjson

    from db.engine import connect
    from devices.service import list_dead_letters
    from probation.runtime import start_embedded

    settings = _settings()
    try:
        since_dt = datetime.fromisoformat(since) if since else None
    except ValueError:
        since_dt = None
    if since and (since_dt is None or since_dt.tzinfo is None):
        typer.echo("--since needs an RFC 3339 time with Z or an offset", err=True)
        raise typer.Exit(2)
    rt = start_embedded(settings, need_broker=False)
    try:
        with connect(rt.database_url) as conn:
            rows = list_dead_letters(conn, reason=reason, since=since_dt, limit=limit,
                                     payload_cap=200)
    finally:
        rt.stop()
    for r in rows:
        payload = bytes(r["payload"])
        if as_json:
            typer.echo(orjson.dumps({**r, "payload": payload.decode("utf-8", "replace")}).decode())
            continue
        index = "" if r["item_index"] is None else f" item {r['item_index']}"
        typer.echo(f"{r['id']:>8} {r['received_at']:%Y-%m-%d %H:%M:%S%z} {r['reason']:<18} "
                   f"{r['topic']}{index}: {r['detail']}")
        typer.echo(f"         {payload[:120]!r}{' …' if r['payload_size'] > 120 else ''} "
                   f"({r['payload_size']} bytes)")
    if not rows and not as_json:
        typer.echo("no dead letters", err=True)


@bench_app.command("geofence")
def bench_geofence(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here (flat JSON object).")
    ] = None,
    cases: Annotated[int, typer.Option(help="Cases (4 own zones each, 200 shared).")] = 10_000,
    fixes: Annotated[int, typer.Option(help="Fixes per batch.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Workload seed.")] = 1,
    uniform_mix: Annotated[
        bool, typer.Option(help="Daytime position mix all day (no one at home at night).")
    ] = False,
) -> None:
    """The numpy geofence engine against a shapely 2 reference, same workload, same run."""
    from geofence import bench

    argv = ["--cases", str(cases), "--fixes", str(fixes), "--seed", str(seed)]
    if uniform_mix:
        argv.append("--uniform-mix")
    if json_path is not None:
        argv += ["--json", str(json_path)]
    bench.main(argv)


@bench_app.command("ingest")
def bench_ingest(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here (flat JSON object).")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="A throwaway database to use (its fixes table is truncated!). "
                     "Default: a private PostgreSQL, with TimescaleDB when installed."),
    ] = None,
    mqtt_url: Annotated[
        str | None, typer.Option(help="A broker to use. Default: a private mosquitto.")
    ] = None,
    scale: Annotated[
        float, typer.Option(help="Scale the volumes (1: 1,000,000 batched fixes, 100,000 "
                            "single-fix messages).")
    ] = 1.0,
    latency_seconds: Annotated[
        float, typer.Option(help="Length of the steady 2,000 fixes/s latency run.")
    ] = 20.0,
    durable: Annotated[
        bool, typer.Option(help="Private PostgreSQL with fsync and synchronous commit (as in "
                           "production); --no-durable turns them off.")
    ] = True,
    geofence: Annotated[
        bool, typer.Option(help="Instead: the worker of `probation ingest` (geofence, check-in "
                           "and rapid-mode stages) on the simulator's world, one fix per message.")
    ] = False,
    people: Annotated[int, typer.Option(help="--geofence: people (devices).")] = 5_000,
    fixes_per_device: Annotated[
        int, typer.Option(help="--geofence: backlog messages per device.")
    ] = 20,
    live_rate: Annotated[
        float, typer.Option(help="--geofence: also publish live at this many msgs/s (0: no).")
    ] = 10_000.0,
    live_seconds: Annotated[float, typer.Option(help="--geofence: length of the live run.")] = 30.0,
) -> None:
    """Throughput and latency of ingestion through a real broker into the real database."""
    import orjson

    from devices.bench import BenchConfig, run_ingest_bench

    _setup_logging(Settings(log_level="WARNING"))
    if geofence:
        from probation.bench_geofence import GeofenceBenchConfig, run_geofence_bench

        result = run_geofence_bench(
            GeofenceBenchConfig(people=people, fixes_per_device=fixes_per_device,
                                live_rate=live_rate, live_seconds=live_seconds, durable=durable),
            out=typer.echo,
        )
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        if json_path is not None:
            json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        return
    result = run_ingest_bench(
        BenchConfig(
            database_url=database_url, mqtt_url=mqtt_url,
            batched_fixes=max(50_000, int(1_000_000 * scale)),
            single_messages=max(5_000, int(100_000 * scale)),
            latency_seconds=latency_seconds, durable=durable,
        ),
        out=typer.echo,
    )
    typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")


@bench_app.command("scheduler")
def bench_scheduler(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here (flat JSON object).")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="An empty, throwaway database to fill. Default: a private "
                     "PostgreSQL, with TimescaleDB when installed."),
    ] = None,
    devices: Annotated[int, typer.Option(help="Assigned devices (one case and zone each).")] = 100_000,
    repeat: Annotated[int, typer.Option(help="Runs per pass (the median is reported).")] = 3,
    violations_pct: Annotated[
        float, typer.Option(help="Percent of devices that go silent, lose their fixes, or "
                            "are outside at the curfew start (each opens an alert).")
    ] = 0.2,
) -> None:
    """Time the silence and curfew-start passes over N assigned devices (target <= 1 s)."""
    import orjson

    from probation.bench_scheduler import SchedulerBenchConfig, run_scheduler_bench

    _setup_logging(Settings(log_level="WARNING"))
    result = run_scheduler_bench(
        SchedulerBenchConfig(devices=devices, repeat=repeat, database_url=database_url,
                             silent_pct=violations_pct, nofix_pct=violations_pct,
                             outside_pct=violations_pct),
        out=typer.echo,
    )
    typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")


@bench_app.command("api")
def bench_api(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here (JSON object).")
    ] = Path("bench/api.json"),
    database_url: Annotated[
        str | None,
        typer.Option(help="An empty, throwaway database to fill (or one an earlier run "
                     "filled, to reuse). Default: a private PostgreSQL, with TimescaleDB."),
    ] = None,
    cases: Annotated[int, typer.Option(help="Active cases (50 per officer).")] = 2000,
    fixes: Annotated[int, typer.Option(help="Fixes in total, spread over the cases' devices.")] = 5_000_000,
    requests: Annotated[int, typer.Option(help="Caseload requests measured.")] = 1000,
    acks: Annotated[int, typer.Option(help="Alert acknowledgements measured.")] = 1000,
    durable: Annotated[
        bool, typer.Option(help="Private PostgreSQL with fsync and synchronous commit (as in "
                           "production); --no-durable turns them off.")
    ] = True,
) -> None:
    """Caseload page (p99 <= 50 ms) and alert acknowledgement (p99 <= 30 ms) under load."""
    import orjson

    from probation.bench_api import ApiBenchConfig, run_api_bench

    _setup_logging(Settings(log_level="WARNING"))
    result = run_api_bench(
        ApiBenchConfig(cases=cases, fixes=fixes, caseload_requests=requests, acks=acks,
                       database_url=database_url, durable=durable),
        out=typer.echo,
    )
    typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    if not result["pass"]:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- simulation

RateOpt = typer.Option


def _rates(curfew: float, exclusion: float, strap: float, power_off: float, gaps: float,
           checkins: float, checkin_missed: float, checkin_failed: float) -> Any:
    from probation.simulator.violations import Rates

    return Rates(curfew=curfew, exclusion=exclusion, strap=strap, power_off=power_off, gap=gaps,
                 checkin_requests=checkins, checkin_missed=checkin_missed,
                 checkin_failed=checkin_failed)


@app.command()
def simulate(
    mqtt: Annotated[str, typer.Option(help="Broker URL, mqtt://user:pass@host:port.")],
    api_url: Annotated[str | None, typer.Option("--api", help="API base URL (for the setup, "
                                                "officer check-in requests and the lag probe).")] = None,
    username: Annotated[str, typer.Option(help="An admin's username.")] = "admin",
    password: Annotated[str, typer.Option(help="Its password.", envvar="PROBATION_SIM_PASSWORD")] = "",
    people: Annotated[int, typer.Option(help="Simulated people (one bracelet and phone each).")] = 100,
    fix_interval: Annotated[float, typer.Option(help="Seconds (simulated) between fixes.")] = 60.0,
    speed: Annotated[float, typer.Option(help="Simulated time runs this many times faster.")] = 10.0,
    duration: Annotated[float, typer.Option(help="Real seconds to run.")] = 600.0,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same people and plan.")] = 1,
    truth: Annotated[Path, typer.Option(help="Truth records (JSON lines) for `probation score`.")] = Path("truth.jsonl"),
    setup: Annotated[bool, typer.Option("--setup/--no-setup", help="Register subjects, cases, "
                     "devices and zones through the API first (--no-setup: reuse --setup-file).")] = True,
    setup_file: Annotated[Path | None, typer.Option(help="Where the registered ids are kept "
                          "(default: <truth>.setup.json).")] = None,
    start: Annotated[str, typer.Option(help="Simulated start: auto (now - speed x duration), "
                     "HH:MM (latest such local time before that), or an RFC 3339 time.")] = "auto",
    prefix: Annotated[str, typer.Option(help="Topic prefix.", envvar="PROBATION_MQTT_PREFIX")] = "pm/v1",
    phones: Annotated[bool, typer.Option("--phones/--no-phones", help="A check-in phone per person "
                      "(else the bracelet answers check-ins).")] = True,
    curfew: Annotated[float, RateOpt(help="Curfew breaks per person per simulated day.")] = 0.2,
    exclusion: Annotated[float, RateOpt(help="Exclusion-zone entries per person per day.")] = 0.1,
    strap: Annotated[float, RateOpt(help="Strap openings per person per day.")] = 0.05,
    power_off: Annotated[float, RateOpt(help="Devices switched off per person per day.")] = 0.05,
    gaps: Annotated[float, RateOpt(help="Coverage gaps (late uploads) per person per day.")] = 1.0,
    checkins: Annotated[float, RateOpt(help="Officer check-in requests per person per day.")] = 0.5,
    checkin_missed: Annotated[float, RateOpt(help="Share of check-in requests left unanswered.")] = 0.1,
    checkin_failed: Annotated[float, RateOpt(help="Share answered with a wrong face or a spoof.")] = 0.1,
    checkin_deadline: Annotated[int, typer.Option(help="Deadline of the officer requests (s).")] = 300,
    max_inflight: Annotated[int, typer.Option(help="Unacknowledged QoS 1 messages at most.")] = 1000,
) -> None:
    """Publish the traffic of N simulated people (bracelets and check-in phones) over MQTT."""
    from probation.simulator.run import Progress, SimConfig, run_simulation

    _setup_logging(Settings(log_level="WARNING"))
    cfg = SimConfig(
        mqtt=mqtt, api=api_url, username=username, password=password, people=people,
        fix_interval_s=fix_interval, speed=speed, duration_s=duration, seed=seed, truth=truth,
        setup=setup, setup_file=setup_file, start=start, prefix=prefix, phones=phones,
        rates=_rates(curfew, exclusion, strap, power_off, gaps, checkins, checkin_missed,
                     checkin_failed),
        checkin_deadline_s=checkin_deadline, max_inflight=max_inflight,
    )
    last = [0.0]

    def show(p: Progress) -> None:
        if p.elapsed_s - last[0] >= 10 or p.elapsed_s >= p.duration_s:
            last[0] = p.elapsed_s
            lag = "-" if p.lag_s is None else f"{p.lag_s:.1f} s"
            typer.echo(f"[{p.elapsed_s:5.0f}/{p.duration_s:.0f} s] {p.fixes_per_s:6.0f} fixes/s, "
                       f"{p.messages_per_s:5.0f} msg/s, lag {lag}, open alerts {p.open_alerts}, "
                       f"truth {p.truths}", err=True)

    res = run_simulation(cfg, on_progress=show, on_phase=lambda m: typer.echo(m, err=True))
    typer.echo(f"done: {res.stats.get('fixes', 0)} fixes in {res.publisher['messages']} messages; "
               f"truth {res.truths} ({res.noise_due} GPS-noise episodes) -> {res.truth}", err=True)


@app.command()
def score(
    api_url: Annotated[str, typer.Option("--api", help="API base URL.")],
    truth: Annotated[Path, typer.Option(help="The simulator's truth file.")],
    username: Annotated[str, typer.Option(help="A user who sees the run's cases.")] = "admin",
    password: Annotated[str, typer.Option(help="Its password.", envvar="PROBATION_SIM_PASSWORD")] = "",
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the score here.")] = None,
    slack: Annotated[float, typer.Option(help="Widen every matching window by this (s).")] = 0.0,
) -> None:
    """Recall, precision and delay per alert type, false alarms per person-day, vs the truth."""
    import orjson

    from probation.simulator.score import fetch_alerts, format_table, load_truth
    from probation.simulator.score import score as score_run
    from probation.simulator.setup import ApiClient

    _setup_logging(Settings(log_level="WARNING"))
    run = load_truth(truth)
    client = ApiClient(api_url, username, password)
    try:
        result = score_run(run, fetch_alerts(client, run), slack_s=slack)
    finally:
        client.close()
    for line in format_table(result):
        typer.echo(line)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")


@app.command()
def demo(
    people: Annotated[int, typer.Option(help="Simulated people.")] = 200,
    speed: Annotated[float, typer.Option(help="Simulated time runs this many times faster.")] = 10.0,
    duration: Annotated[float, typer.Option(help="Real seconds of simulation.")] = 3600.0,
    fix_interval: Annotated[float, typer.Option(help="Seconds (simulated) between fixes.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    keep_serving: Annotated[bool, typer.Option("--keep-serving/--exit", help="Keep the service "
                            "running after the simulation (until Ctrl-C).")] = True,
    score_after: Annotated[float, typer.Option(help="Seconds to wait after the simulation "
                           "before scoring.")] = 45.0,
) -> None:
    """The service (embedded servers, own data dir) plus the simulator, with live figures."""
    from probation.simulator.demo import DemoOptions, run_demo

    _setup_logging(Settings(log_level="WARNING"))
    code = run_demo(
        DemoOptions(people=people, speed=speed, duration_s=duration, fix_interval_s=fix_interval,
                    seed=seed, host=host, port=port, keep_serving=keep_serving,
                    score_after_s=score_after),
        start_service=start_demo_service,
    )
    raise typer.Exit(code)


@bench_app.command("soak")
def bench_soak(
    people: Annotated[int, typer.Option(help="Simulated people.")] = 5000,
    speed: Annotated[float, typer.Option(help="Simulated time runs this many times faster.")] = 60.0,
    minutes: Annotated[float, typer.Option(help="Real minutes of simulation.")] = 30.0,
    fix_interval: Annotated[float, typer.Option(help="Seconds (simulated) between fixes.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    start: Annotated[str, typer.Option(help="Simulated start (see `simulate --start`).")] = "auto",
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results here.")] = Path("bench/soak.json"),
    durable: Annotated[bool, typer.Option(help="PostgreSQL with fsync and synchronous commit "
                       "(production); --no-durable turns them off.")] = True,
    keep: Annotated[bool, typer.Option(help="Keep the work directory (logs, truth, data).")] = False,
    ingest_workers: Annotated[int, typer.Option(help="`probation ingest` processes (a shared "
                              "subscription when more than one).")] = 1,
    curfew: Annotated[float, RateOpt(help="Curfew breaks per person per simulated day.")] = 0.2,
    exclusion: Annotated[float, RateOpt(help="Exclusion-zone entries per person per day.")] = 0.1,
    checkins: Annotated[float, RateOpt(help="Officer check-in requests per person per day.")] = 0.5,
) -> None:
    """Soak: api, ingest and scheduler processes, TimescaleDB, mosquitto, N simulated people."""
    import orjson

    from probation.bench_soak import SoakConfig, run_soak, summary_lines
    from probation.simulator.violations import Rates

    _setup_logging(Settings(log_level="WARNING"))
    cfg = SoakConfig(people=people, speed=speed, minutes=minutes, fix_interval_s=fix_interval,
                     seed=seed, start=start, durable=durable, keep=keep,
                     ingest_workers=ingest_workers,
                     rates=Rates(curfew=curfew, exclusion=exclusion, checkin_requests=checkins))
    result = run_soak(cfg, out=lambda m: typer.echo(m, err=True))
    for line in summary_lines(result):
        typer.echo(line)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    if not (result.get("score", {}).get("bar", {}).get("passed") and result.get("memory_flat")):
        raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
