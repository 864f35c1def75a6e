"""Sign-in under a password-guessing flood: logins/s with correct passwords.

Starts a private PostgreSQL, creates `users` users with real Argon2 hashes, serves the
app with uvicorn in a separate process (one worker, as `probation api` runs it) and
measures in two phases of `seconds` each, in the same run:

* `reference`: `legit` clients sign in with correct passwords, each from its own address;
* `flood`: the same, while `flood` clients post wrong passwords for the same usernames
  (and random ones) from one attacker address, as fast as they are answered.

Client addresses travel in `X-Forwarded-For` from 127.0.0.1 (uvicorn trusts it by
default, as it would a reverse proxy on the host). `--source DIR` serves the app from
another source tree (e.g. an export of an older commit) to compare before and after;
the schema is this tree's (a superset).
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import private_postgres, release_servers
from db.engine import libpq_url

PASSWORD = "bench-correct-horse-battery"


@dataclass(frozen=True, slots=True)
class LoginBenchConfig:
    users: int = 8
    legit: int = 4
    flood: int = 16
    seconds: float = 20.0
    source: Path | None = None
    work_dir: Path | None = None


@dataclass
class Phase:
    seconds: float
    legit_ok: int
    legit_codes: dict[str, int]
    legit_p50_ms: float | None
    legit_p99_ms: float | None
    flood_requests: int
    flood_codes: dict[str, int]

    @property
    def logins_per_s(self) -> float:
        return round(self.legit_ok / self.seconds, 2)


def _serve(url: str, work: Path, port: int, source: Path | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PROBATION_DATABASE_URL": url, "PROBATION_MQTT_URL": "mqtt://127.0.0.1:1",
           "PROBATION_JWT_SECRET": "bench-" + uuid.uuid4().hex * 2,
           "PROBATION_DATA_DIR": str(work / "data"), "PROBATION_LOG_LEVEL": "WARNING",
           "PROBATION_TOTP_REQUIRED_ROLES": "[]"}
    env.pop("PROBATION_ADMIN_PASSWORD", None)
    cwd = None
    if source is not None:
        env["PYTHONPATH"] = str(source)
        cwd = str(source)
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.api:app_from_env", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, cwd=cwd,
    )


def _wait_up(base: str, server: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not start")


def _phase(base: str, names: list[str], cfg: LoginBenchConfig, *, flood: bool) -> Phase:
    import httpx

    stop = threading.Event()
    lock = threading.Lock()
    legit_codes: Counter[str] = Counter()
    flood_codes: Counter[str] = Counter()
    latencies: list[float] = []

    def legit(i: int) -> None:
        name = names[i % len(names)]
        headers = {"X-Forwarded-For": f"10.1.0.{i + 1}"}
        with httpx.Client(base_url=base, timeout=60) as http:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = http.post("/api/v1/auth/token", headers=headers,
                              data={"username": name, "password": PASSWORD})
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    legit_codes[str(r.status_code)] += 1
                    if r.status_code == 200:
                        latencies.append(ms)

    def attacker(i: int) -> None:
        rng = random.Random(i)
        headers = {"X-Forwarded-For": "203.0.113.66"}
        with httpx.Client(base_url=base, timeout=60) as http:
            while not stop.is_set():
                name = rng.choice([*names, f"nobody{rng.randrange(1000)}"])
                r = http.post("/api/v1/auth/token", headers=headers,
                              data={"username": name, "password": f"guess-{rng.random()}"})
                with lock:
                    flood_codes[str(r.status_code)] += 1

    threads = [threading.Thread(target=legit, args=(i,)) for i in range(cfg.legit)]
    if flood:
        threads += [threading.Thread(target=attacker, args=(i,)) for i in range(cfg.flood)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    time.sleep(cfg.seconds)
    stop.set()
    with lock:  # what was answered within the window
        elapsed = time.monotonic() - t0
        ok = legit_codes["200"]
        snapshot = (dict(legit_codes), dict(flood_codes), sorted(latencies))
    for t in threads:
        t.join(120)
    codes, fcodes, lat = snapshot
    return Phase(
        seconds=round(elapsed, 2), legit_ok=ok, legit_codes=codes,
        legit_p50_ms=round(statistics.median(lat), 1) if lat else None,
        legit_p99_ms=round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
        flood_requests=sum(fcodes.values()), flood_codes=fcodes,
    )


def run_login_bench(cfg: LoginBenchConfig, *, out: Any = print) -> dict[str, Any]:
    from db.migrate import upgrade
    from db.server import free_port
    from probation.users.security import hash_password

    work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="probation-bench-login-"))
    pg = None
    server = None
    try:
        pg = private_postgres(work, database="bench", settings={})
        url = pg.url("bench")
        upgrade(url)
        names = [f"officer{i}" for i in range(cfg.users)]
        pw_hash = hash_password(PASSWORD)
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            for n in names:
                conn.execute("INSERT INTO users (id, username, password_hash, role) "
                             "VALUES (%s, %s, %s, 'officer')", (uuid.uuid4(), n, pw_hash))
        port = free_port()
        server = _serve(url, work, port, cfg.source)
        base = f"http://127.0.0.1:{port}"
        _wait_up(base, server)
        out(f"login benchmark: {os.cpu_count()} CPUs, {cfg.legit} legitimate clients, "
            f"{cfg.flood} flooding clients, {cfg.seconds:.0f} s per phase, source "
            f"{cfg.source or 'this tree'}")
        ref = _phase(base, names, cfg, flood=False)
        out(f"  reference: {ref.logins_per_s} logins/s ({ref.legit_codes})")
        fl = _phase(base, names, cfg, flood=True)
        out(f"  flood:     {fl.logins_per_s} logins/s ({fl.legit_codes}); flood "
            f"{fl.flood_requests} requests {fl.flood_codes}")
        return {
            "benchmark": "login", "config": {k: str(v) if isinstance(v, Path) else v
                                             for k, v in asdict(cfg).items()},
            "cpus": os.cpu_count(),
            "reference": {**asdict(ref), "logins_per_s": ref.logins_per_s},
            "flood": {**asdict(fl), "logins_per_s": fl.logins_per_s},
            "flood_vs_reference": round(fl.logins_per_s / ref.logins_per_s, 3)
            if ref.logins_per_s else None,
        }
    finally:
        if server is not None:
            server.terminate()
            server.wait(20)
        release_servers(None, pg, work if cfg.work_dir is None else None)
