"""`probation demo`: the embedded service plus the simulator, with a live line of figures.

The service is what `probation serve` runs (`probation.cli.serve.Service`: embedded PostgreSQL
and broker where no URLs are set, migrations, the API, the ingest worker, the
scheduler), in its own data directory (`<data dir>/demo`) so that it never touches a
`serve` installation. The `admin` password is generated on every start (and reset if the
demo database already has an admin). The simulated clock lags the wall clock, so the
demo raises `location_lost_s` above that lag (see `simulator.score`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from simulator.run import Progress, SimConfig, run_simulation
from simulator.violations import Rates, iso

log = logging.getLogger(__name__)


@dataclass
class DemoOptions:
    people: int = 200
    speed: float = 10.0
    duration_s: float = 300.0  # minutes, not an hour: the run reaches its score
    #: simulated seconds after the window: 10 minutes, a look rather than a measurement
    #: (the benches wait `simulator.run.DECISION_TAIL_S`, 40, so that a break that begins
    #: while a device is dark is decided before the score; here it may count as missed)
    tail_s: float = 600.0
    fix_interval_s: float = 60.0
    seed: int = 1
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path | None = None
    keep_serving: bool = True
    rates: Rates | None = None
    start: str = "auto"
    score_after_s: float = 45.0  # the scheduler's 30 s period, then score


def _reset_admin(database_url: str, password: str) -> None:
    """Give `admin` the demo's password (creating it if the database has other users only)."""
    from sqlmodel import Session, select

    from db.engine import get_engine
    from probation.users.models import Role, User
    from probation.users.security import hash_password

    with Session(get_engine(database_url)) as s:
        user = s.exec(select(User).where(User.username == "admin")).first()
        if user is None:
            user = User(username="admin", password_hash="", role=Role.ADMIN, full_name="Administrator")
        user.password_hash = hash_password(password)
        user.is_active = True
        user.failed_logins = 0
        user.locked_until = None
        s.add(user)
        s.commit()


class _Display:
    """A rich progress bar on a terminal, plain lines every 10 s otherwise."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self._last = 0.0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Display:
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                BarColumn(bar_width=16), TimeRemainingColumn(), TextColumn("{task.description}"),
                console=Console(file=self.out), refresh_per_second=2,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("starting", total=100)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)

    @staticmethod
    def short(p: Progress) -> str:
        lag = "-" if p.lag_s is None else f"{p.lag_s:.1f}s"
        alerts = "-" if p.open_alerts is None else str(p.open_alerts)
        return (f"sim {iso(p.sim_time)[11:16]}Z {p.fixes_per_s:.0f} fixes/s, "
                f"{alerts} open alerts, lag {lag}")

    @staticmethod
    def line(p: Progress) -> str:
        lag = "-" if p.lag_s is None else f"{p.lag_s:.1f} s"
        alerts = "-" if p.open_alerts is None else str(p.open_alerts)
        return (f"sim {iso(p.sim_time)[:16].replace('T', ' ')}Z | {p.fixes_per_s:6.0f} fixes/s | "
                f"{p.messages_per_s:5.0f} msg/s | open alerts {alerts} | lag {lag} | "
                f"truth {p.truths}")

    def update(self, p: Progress) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=100 * p.elapsed_s / p.duration_s,
                                  description=self.short(p))
            return
        now = time.monotonic()
        if now - self._last >= 10 or p.elapsed_s >= p.duration_s:
            self._last = now
            print(f"[{p.elapsed_s:5.0f}/{p.duration_s:.0f} s] {self.line(p)}", file=self.out, flush=True)

    def echo(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.out, flush=True)


def _uvicorn_thread(app: Any, host: str, port: int) -> Any:
    """uvicorn in a daemon thread (it installs no signal handlers off the main thread)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=False))
    server.thread = threading.Thread(target=server.run, name="demo-api", daemon=True)  # type: ignore[attr-defined]
    server.thread.start()  # type: ignore[attr-defined]
    return server


def run_demo(opts: DemoOptions, *, start_service: Callable[[Any], Any],
             out: TextIO = sys.stderr) -> int:
    """Start the service and the simulator; returns the exit code."""
    from db.server import free_port
    from probation.runtime.embedded import redact
    from probation.settings import Settings
    from simulator.faces import SHOWABLE
    from simulator.score import fetch_alerts, format_table, load_truth, score
    from simulator.setup import ApiClient

    base = Settings()
    data_dir = opts.data_dir or base.data_dir / "demo"
    password = secrets.token_urlsafe(12)
    lag_s = opts.speed * opts.duration_s
    settings = base.model_copy(update={
        "data_dir": data_dir, "admin_password": password,
        # a local demonstration: the simulator signs in as admin without a second factor
        "totp_required_roles": [],
        "location_lost_s": max(base.location_lost_s, lag_s + 3_600),
        # the simulated phones send frames of real photos, which show these gestures
        # (no photo with closed eyes: `simulator.faces`)
        "checkin_challenges": list(SHOWABLE),
    })
    port = free_port(opts.port, opts.host)
    svc = start_service(settings)
    server = None
    stop = threading.Event()
    try:
        _reset_admin(svc.rt.database_url, password)
        server = _uvicorn_thread(svc.app, opts.host, port)
        url = f"http://{opts.host}:{port}"
        _wait_health(url)
        sim_url = next(iter(svc.rt.gateway_urls.values()), svc.rt.mqtt_url)
        truth = data_dir / "runs" / f"truth-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        sup_id, sup_password = _demo_supervisor(url, password)
        lines = [
            f"Console:  {url}/   (the people appear once registered, within about a minute)",
            f"Login:    admin / {password}",
            f"Login:    {SUPERVISOR} / {sup_password}   (supervisor of the simulated officers)",
            f"API docs: {url}/docs",
            f"Broker:   {redact(sim_url)} (topic prefix {settings.mqtt_prefix})",
            f"Data dir: {data_dir}",
            f"Simulating {opts.people} people at {opts.speed:g}x for {opts.duration_s:.0f} s; "
            f"truth: {truth}",
        ]
        for line in lines:
            print(line, file=out, flush=True)
        cfg = SimConfig(
            mqtt=sim_url, api=url, username="admin", password=password,
            people=opts.people, fix_interval_s=opts.fix_interval_s, speed=opts.speed,
            duration_s=opts.duration_s, tail_s=opts.tail_s, seed=opts.seed, truth=truth,
            prefix=settings.mqtt_prefix,
            rates=opts.rates or Rates(), start=opts.start, checkin_frames=True,
            supervisor_id=sup_id,
        )
        old = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: object) -> None:
            if stop.is_set():
                raise KeyboardInterrupt
            stop.set()
            print("\nstopping the simulation (Ctrl-C again to quit at once) ...", file=out,
                  flush=True)

        signal.signal(signal.SIGINT, on_sigint)
        signal.signal(signal.SIGTERM, on_sigint)
        tty = out.isatty()
        with _Display(out, tty) as display:

            def officers_ready(logins: dict[str, str]) -> None:
                name, pw = next(iter(logins.items()))
                display.echo(f"Login:    {name} / {pw}   (an officer; "
                             f"{len(logins)} officers, 100 people each)")

            result = run_simulation(cfg, on_progress=display.update, on_phase=display.echo,
                                    stop=stop, on_officers=officers_ready)
        interrupted = stop.is_set()
        print(f"simulation {'stopped' if interrupted else 'done'}: "
              f"{result.stats.get('fixes', 0)} fixes, {result.publisher['messages']} messages; "
              + ("scoring now ..." if interrupted else
                 f"scoring in {opts.score_after_s:.0f} s (Ctrl-C: at once) ..."),
              file=out, flush=True)
        if not interrupted:
            stop.wait(opts.score_after_s)  # the scheduler's period; Ctrl-C scores at once
        api = ApiClient(url, "admin", password)
        try:
            run = load_truth(truth)
            res = score(run, fetch_alerts(api, run))
        finally:
            api.close()
        for line in format_table(res):
            print(line, file=out, flush=True)
        if opts.keep_serving and not stop.is_set():
            print(f"The service keeps running at {url} (Ctrl-C to stop).", file=out, flush=True)
            while not stop.wait(1):
                pass
        signal.signal(signal.SIGINT, old)
        return 0
    finally:
        if server is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                server.thread.join(10)
        svc.stop()


SUPERVISOR = "demo-supervisor"


def _demo_supervisor(url: str, admin_password: str) -> tuple[str, str]:
    """The demo's supervisor (created, or given a new password on a later run): id, password."""
    import httpx

    password = secrets.token_urlsafe(12)
    with httpx.Client(base_url=f"{url}/api/v1", timeout=30) as http:
        token = http.post("/auth/token", data={"username": "admin",
                                               "password": admin_password}).json()["access_token"]
        h = {"Authorization": f"Bearer {token}"}
        r = http.post("/users", headers=h, json={
            "username": SUPERVISOR, "password": password, "role": "supervisor",
            "full_name": "Demo supervisor"})
        if r.status_code == 201:
            return str(r.json()["id"]), password
        users = http.get("/users", headers=h, params={"limit": 500}).json()["items"]
        uid = next(str(u["id"]) for u in users if u["username"] == SUPERVISOR)
        http.patch(f"/users/{uid}", headers=h,
                   json={"password": password, "is_active": True}).raise_for_status()
        return uid, password


def _wait_health(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the API at {url} did not become healthy")
