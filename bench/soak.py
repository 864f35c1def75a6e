"""`probation bench soak`: the whole chain under simulated load, compose-like.

Separate `probation api`, `probation ingest` and `probation scheduler` processes (as in
compose.yaml) on a private PostgreSQL (TimescaleDB when installed for a system
PostgreSQL) and a private mosquitto (the project's broker configuration), fed by
`probation simulate`'s simulator running in this process. Defaults: 5,000 people at 60x
for 30 real minutes. Reported (printed and as JSON): throughput (fixes published and
stored per second), lag (the simulator's end-to-end probe: publish -> visible through the
API), the RSS of every process sampled every 10 s (it must stay flat), and the score
against the simulator's truth, with the bar of the soak test.

The processes get `PROBATION_LOCATION_LOST_S` above the simulated clock's lag behind the
wall clock (`speed x duration`, more with `--start`): otherwise the wall-clock
`location_lost` rule fires on every device (see `simulator.score`, "clock
artifacts").
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.harness import private_postgres
from simulator.run import DECISION_TAIL_S, Progress, SimConfig, run_simulation
from simulator.violations import Rates

log = logging.getLogger(__name__)

PROBATION = str(Path(sys.executable).parent / "probation")


@dataclass
class SoakConfig:
    people: int = 5_000
    speed: float = 60.0
    minutes: float = 30.0  # scored
    tail_s: float = DECISION_TAIL_S  # simulated seconds after them, not scored (SimConfig.tail_s)
    fix_interval_s: float = 60.0
    seed: int = 1
    start: str = "auto"
    rates: Rates = field(default_factory=Rates)
    checkin_deadline_s: int = 300
    work_dir: Path | None = None
    keep: bool = False
    sample_s: float = 10.0
    durable: bool = True
    setup_workers: int = 8
    max_inflight: int = 1_000
    settle_timeout_s: float = 1_800.0  # a backlog is drained before scoring (reported)
    ingest_workers: int = 1  # more than one: a shared subscription ($share/ingest/...)
    gps_model: str = "realistic"  # simulator.gps.GPS_MODELS
    scheduler_interval_s: float = 30.0  # the clock rules' period (scoring waits 1.5 of it)


# --------------------------------------------------------------------------- processes


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process (MiB), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pss_mb(pid: int) -> float | None:
    """Proportional set size (MiB): shared pages split between their users, so that the
    PSS of PostgreSQL's processes adds up to what the server really uses."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def memory_summary(samples: list[tuple[float, float]]) -> dict[str, Any]:
    """Start/end RSS, growth after warm-up (median of the last quarter vs the second
    quarter) and the slope; flat = growth <= max(15 %, 25 MiB)."""
    if len(samples) < 4:
        vals = [v for _, v in samples]
        return {"samples": len(samples), "start_mb": vals[0] if vals else None,
                "end_mb": vals[-1] if vals else None, "max_mb": max(vals) if vals else None,
                "growth_pct": None, "slope_mb_per_h": None, "flat": None}
    t = np.array([s[0] for s in samples])
    v = np.array([s[1] for s in samples])
    n = len(v)
    early = float(np.median(v[n // 4: n // 2]))
    late = float(np.median(v[3 * n // 4:]))
    slope = float(np.polyfit(t[n // 4:] - t[0], v[n // 4:], 1)[0] * 3600) if n >= 8 else None
    growth = late - early
    return {
        "samples": n, "start_mb": round(float(v[0]), 1), "end_mb": round(float(v[-1]), 1),
        "max_mb": round(float(v.max()), 1), "early_median_mb": round(early, 1),
        "late_median_mb": round(late, 1),
        "growth_pct": round(100 * growth / early, 1) if early else None,
        "slope_mb_per_h": None if slope is None else round(slope, 1),
        "flat": bool(growth <= max(0.15 * early, 25.0)),
    }


def _metrics(port: int) -> dict[str, float]:
    """A few series from the ingest worker's Prometheus endpoint."""
    out: dict[str, float] = {}
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=3).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith("probation_ingest_items_stored_total"):
            stream = name.split('stream="')[1].split('"')[0] if 'stream="' in name else "?"
            out[f"stored_{stream}"] = float(value)
        elif name == "probation_ingest_queue_depth":
            out["queue_depth"] = float(value)
        elif name.startswith("probation_ingest_receive_to_commit_seconds_sum"):
            out["r2c_sum"] = float(value)
        elif name.startswith("probation_ingest_receive_to_commit_seconds_count"):
            out["r2c_count"] = float(value)
    return out


class _Stack:
    """PostgreSQL, mosquitto and the three service processes."""

    def __init__(self, cfg: SoakConfig, work: Path, out: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.work = work
        self.out = out
        self.pg: Any = None
        self.broker: Any = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.password = secrets.token_urlsafe(12)
        self.api_port = 0
        self.metrics_ports: list[int] = []
        self.timescaledb = False
        self.database_url = ""
        self.mqtt_url = ""

    def start(self) -> None:
        from db.migrate import upgrade
        from db.server import free_port
        from devices.broker import EmbeddedBroker, Mosquitto

        self.pg = private_postgres(
            self.work, database="probation", durable=self.cfg.durable,
            settings={"max_connections": "200", "shared_buffers": "512MB"},
            timescale_settings={"timescaledb.max_background_workers": "2"},
        )
        self.timescaledb = self.pg.timescaledb
        if not self.timescaledb:
            self.out("warning: no TimescaleDB for a system PostgreSQL: plain PostgreSQL tables")
        self.database_url = self.pg.url("probation")
        upgrade(self.database_url)
        if Mosquitto.available():
            self.broker = Mosquitto(data_dir=self.work / "mosquitto")
        else:
            self.out("warning: mosquitto is not installed: the embedded amqtt broker")
            self.broker = EmbeddedBroker(port=free_port())
        self.broker.start()
        self.mqtt_url = self.broker.url
        self.api_port = free_port()
        self.metrics_ports = [free_port() for _ in range(max(1, self.cfg.ingest_workers))]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROBATION_")}
        lag = self.clock_lag_s()
        env.update({
            "PROBATION_DATABASE_URL": self.database_url, "PROBATION_MQTT_URL": self.mqtt_url,
            "PROBATION_DATA_DIR": str(self.work / "data"),
            "PROBATION_ADMIN_PASSWORD": self.password,
            "PROBATION_TOTP_REQUIRED_ROLES": "[]",  # the simulator signs in as admin
            "PROBATION_JWT_SECRET": secrets.token_urlsafe(48),
            "PROBATION_BIOMETRIC_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "PROBATION_LOCATION_LOST_S": str(int(lag)),
            "PROBATION_LOG_LEVEL": "INFO",
            "PROBATION_SCHEDULER_INTERVAL_S": str(self.cfg.scheduler_interval_s),
        })
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        several = len(self.metrics_ports) > 1
        runs: list[tuple[str, list[str], dict[str, str]]] = [
            ("api", ["api", "--port", str(self.api_port)], {}),
            ("scheduler", ["scheduler"], {}),
        ]
        for k, port in enumerate(self.metrics_ports):
            runs.append((f"ingest{k}" if several else "ingest",
                         ["ingest", "--metrics-port", str(port)],
                         {"PROBATION_MQTT_SHARE_GROUP": "ingest",
                          "PROBATION_MQTT_CLIENT_ID": f"probation-ingest-{k}"} if several else {}))
        for name, args, extra in runs:
            self.procs[name] = subprocess.Popen(
                [PROBATION, *args], env={**env, **extra},
                stdout=(logs / f"{name}.log").open("ab"), stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"`probation {name}` exited with {p.returncode}: "
                                       f"{self.log_tail(name)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200 and \
                        all(_metrics(p) for p in self.metrics_ports):
                    return
            time.sleep(0.3)
        raise TimeoutError("the API or the ingest worker did not come up in 90 s")

    def clock_lag_s(self) -> float:
        """How far the simulated clock will lag the wall clock at most (at its start, plus
        3 hours for planning and registration)."""
        from zoneinfo import ZoneInfo

        from simulator.run import resolve_start

        now = time.time()
        duration = self.cfg.minutes * 60 + self.cfg.tail_s / self.cfg.speed
        start = resolve_start(self.cfg.start, now=now, speed=self.cfg.speed, duration_s=duration,
                              tz=ZoneInfo("Asia/Almaty"))
        return now - start + 3 * 3_600

    def metrics(self) -> dict[str, float]:
        """The ingest workers' series, summed."""
        out: dict[str, float] = {}
        for port in self.metrics_ports:
            for k, v in _metrics(port).items():
                out[k] = out.get(k, 0.0) + v
        return out

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def log_tail(self, name: str, n: int = 3000) -> str:
        p = self.work / "logs" / f"{name}.log"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    def pids(self) -> dict[str, list[int]]:
        out = {name: [p.pid] for name, p in self.procs.items() if p.poll() is None}
        if self.pg is not None:
            pid_file = self.pg.pgdata / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError, IndexError):
                out["postgres"] = descendants(int(pid_file.read_text().split()[0]))
        proc = getattr(self.broker, "proc", None)
        if proc is not None:
            out["mosquitto"] = [proc.pid]
        out["simulator"] = [os.getpid()]
        return out

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.broker is not None:
            self.broker.stop()
        if self.pg is not None:
            if self.cfg.keep:
                self.pg.stop()
            else:
                self.pg.destroy()


# --------------------------------------------------------------------------- the run


def run_soak(cfg: SoakConfig, *, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Start the stack, simulate, settle, score; the result as a JSON-able dict."""
    from simulator.score import fetch_alerts, load_truth, score
    from simulator.setup import ApiClient

    work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="probation-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    stack = _Stack(cfg, work, out)
    memory: dict[str, list[tuple[float, float]]] = {}
    metrics: list[tuple[float, dict[str, float]]] = []
    progress: list[Progress] = []
    stop_sampling = threading.Event()
    errors: list[str] = []
    t_sim0 = [0.0]

    def sampler() -> None:
        while True:
            now = time.time()
            for name, pids in stack.pids().items():
                # PostgreSQL: PSS summed over its processes (RSS would count the shared
                # buffers once per backend); every other process: its RSS
                fn = pss_mb if name == "postgres" else rss_mb
                vals = [fn(p) for p in pids]
                total = sum(v for v in vals if v is not None)
                if total:
                    memory.setdefault(name, []).append((now, round(total, 1)))
            metrics.append((now, stack.metrics()))
            if stop_sampling.wait(cfg.sample_s):
                return

    def on_progress(p: Progress) -> None:
        progress.append(p)
        if not t_sim0[0]:
            t_sim0[0] = time.time() - p.elapsed_s
        if int(p.elapsed_s) % 10 == 0 or p.elapsed_s >= p.duration_s:
            lag = "-" if p.lag_s is None else f"{p.lag_s:.1f}"
            out(f"[{p.elapsed_s:6.0f}/{p.duration_s:.0f} s] {p.fixes_per_s:7.0f} fixes/s "
                f"{p.messages_per_s:6.0f} msg/s, lag {lag} s, in flight {p.outstanding}, "
                f"open alerts {p.open_alerts}, truth {p.truths}")

    result: dict[str, Any] = {"config": {**asdict(cfg), "work_dir": str(work)}}
    result["config"]["rates"] = asdict(cfg.rates)
    t0 = time.monotonic()
    try:
        out(f"starting PostgreSQL, mosquitto, api, ingest and scheduler in {work} ...")
        stack.start()
        result["backend"] = {"timescaledb": stack.timescaledb,
                             "broker": "mosquitto" if hasattr(stack.broker, "proc") else "amqtt",
                             "api": stack.api_url, "started_s": round(time.monotonic() - t0, 1)}
        sim_cfg = SimConfig(
            mqtt=stack.mqtt_url, api=stack.api_url, username="admin", password=stack.password,
            people=cfg.people, fix_interval_s=cfg.fix_interval_s, speed=cfg.speed,
            duration_s=cfg.minutes * 60, tail_s=cfg.tail_s, seed=cfg.seed,
            truth=work / "truth.jsonl",
            start=cfg.start, rates=cfg.rates, checkin_deadline_s=cfg.checkin_deadline_s,
            setup_workers=cfg.setup_workers, max_inflight=cfg.max_inflight,
            gps_model=cfg.gps_model,
        )
        sampling = threading.Thread(target=sampler, name="soak-sampler", daemon=True)
        sampling.start()
        t_setup = time.time()
        sim = run_simulation(sim_cfg, on_progress=on_progress, on_phase=out)
        result["setup_s"] = round(sim.real_start - t_setup, 1)  # planning and registration
        out("simulation finished; waiting for the backend to drain ...")
        drained = _drain(stack, cfg.settle_timeout_s)
        time.sleep(1.5 * cfg.scheduler_interval_s)  # a scheduler pass: silence, missed check-ins
        stop_sampling.set()
        sampling.join(15)
        alive = {name: p.poll() is None for name, p in stack.procs.items()}
        api = ApiClient(stack.api_url, "admin", stack.password)
        try:
            run = load_truth(sim_cfg.truth)
            alerts = fetch_alerts(api, run)
        finally:
            api.close()
        result["score"] = score(run, alerts)
        dur = max(sim.real_end - sim.real_start, 1e-9)
        stored = _stored_fixes(metrics, sim.real_start, sim.real_end)
        lags = sim.lag_samples
        r2c = metrics[-1][1] if metrics else {}
        result.update({
            "drained_s": drained,
            "processes_alive": alive,
            "simulation": {
                "sim_start": run.meta["sim_start"], "sim_end": run.sim_end,
                "real_seconds": round(dur, 1), "person_days": round(run.person_days, 2),
                "stats": sim.stats, "truths": sim.truths, "noise_due": sim.noise_due,
                "publisher": sim.publisher, "checkin_requests": sim.checkin_requests,
            },
            "throughput": {
                "fixes_published_per_s": round(sim.stats.get("fixes", 0) / dur, 1),
                "messages_published_per_s": round(sim.publisher["messages"] / dur, 1),
                "fixes_stored_per_s": stored,
            },
            "lag": {
                "probe_samples": len(lags),
                "probe_p50_s": _pct(lags, 50), "probe_p95_s": _pct(lags, 95),
                "probe_max_s": round(max(lags), 2) if lags else None,
                "receive_to_commit_mean_s": round(r2c["r2c_sum"] / r2c["r2c_count"], 4)
                if r2c.get("r2c_count") else None,
            },
            # flatness over the simulation only (planning and registration come before)
            "memory": {name: memory_summary([x for x in s if x[0] >= sim.real_start])
                       for name, s in memory.items()},
            "memory_series": {name: [(round(t - t_sim0[0], 1), v) for t, v in s]
                              for name, s in memory.items()},
        })
        app_flat = [m.get("flat") for n, m in result["memory"].items()
                    if n.startswith(("api", "ingest", "scheduler"))]
        result["memory_flat"] = all(f is not False for f in app_flat)
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
        raise
    finally:
        stop_sampling.set()
        result["errors"] = errors
        if errors or any(p.poll() is not None for p in stack.procs.values()):
            result["logs"] = {name: stack.log_tail(name) for name in stack.procs}
        stack.stop()
        if not cfg.keep and cfg.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return result


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def _stored_fixes(metrics: list[tuple[float, dict[str, float]]], t0: float, t1: float
                  ) -> float | None:
    pts = [(t, m["stored_fixes"]) for t, m in metrics if "stored_fixes" in m and t0 <= t <= t1 + 5]
    if len(pts) < 2:
        return None
    return round((pts[-1][1] - pts[0][1]) / max(pts[-1][0] - pts[0][0], 1e-9), 1)


def _drain(stack: _Stack, timeout: float) -> float | None:
    """Seconds until the ingest worker's stored count stops moving and its queue is empty."""
    t0 = time.monotonic()
    last = -1.0
    still = 0
    while time.monotonic() - t0 < timeout:
        m = stack.metrics()
        stored = sum(v for k, v in m.items() if k.startswith("stored_"))
        if stored == last and m.get("queue_depth", 0) == 0:
            still += 1
            if still >= 3:
                return round(time.monotonic() - t0, 1)
        else:
            still = 0
        last = stored
        time.sleep(2)
    return None


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The headline figures of a soak result."""
    from simulator.score import format_table

    lines = []
    sim = r.get("simulation", {})
    th = r.get("throughput", {})
    lag = r.get("lag", {})
    lines.append(f"{r['config']['people']} people at {r['config']['speed']:g}x for "
                 f"{sim.get('real_seconds')} s ({sim.get('person_days')} person-days); setup "
                 f"{r.get('setup_s')} s; backend {r.get('backend')}")
    lines.append(f"throughput: {th.get('fixes_published_per_s')} fixes/s published, "
                 f"{th.get('fixes_stored_per_s')} stored/s, {th.get('messages_published_per_s')} "
                 f"messages/s")
    lines.append(f"lag (publish -> visible in the API, {lag.get('probe_samples')} probes): p50 "
                 f"{lag.get('probe_p50_s')} s, p95 "
                 f"{lag.get('probe_p95_s')} s, max {lag.get('probe_max_s')} s; ingest receive -> "
                 f"commit mean {lag.get('receive_to_commit_mean_s')} s; drained in "
                 f"{r.get('drained_s')} s")
    for name, m in r.get("memory", {}).items():
        lines.append(f"{'PSS' if name == 'postgres' else 'RSS'} {name:<10} start {m.get('start_mb')} MiB, end {m.get('end_mb')} MiB, "
                     f"max {m.get('max_mb')} MiB, growth {m.get('growth_pct')} %, slope "
                     f"{m.get('slope_mb_per_h')} MiB/h, flat {m.get('flat')}")
    lines.append(f"processes alive at the end: {r.get('processes_alive')}")
    if "score" in r:
        lines += format_table(r["score"])
    return lines
