"""`probation serve` as a newcomer runs it: no configuration, embedded servers, data kept."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from db.server import free_port

PROBATION = str(Path(sys.executable).parent / "probation")


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBATION_")}
    env["PROBATION_DATA_DIR"] = str(data_dir)
    env["PROBATION_ADMIN_PASSWORD"] = "admin-password-1"
    env["PROBATION_NOTIFY_INTERVAL_S"] = "1"  # scheduler runs within the test's lifetime
    return env


def _start(data_dir: Path, port: int, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [PROBATION, "serve", "--port", str(port)], env=_env(data_dir),
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    deadline = t0 + 60  # the target is 30 s on an idle machine; the bound leaves room for load
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"serve not healthy in 60 s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=20)


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) (\S+): ", re.M)


def _database_url(log: Path) -> str:
    """The URL the last start printed (never with its password: that is in the data dir)."""
    printed = re.findall(r"Database: (postgresql://\S+)", log.read_text())[-1]
    assert "***" in printed  # the banner never shows the database password
    data_dir = Path(re.findall(r"Data dir: (\S+)", log.read_text())[-1])
    return printed.replace("***", (data_dir / "postgres" / "password").read_text().strip())


def _wait_for_scheduler_runs(log: Path, job: str, n: int) -> None:
    """Until the scheduler ran `job` n times (so the log had the chance to fill)."""
    url = _database_url(log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg.connect(url) as c:
            runs = c.execute("SELECT count(*) FROM scheduler_runs WHERE job_id = %s",
                             (job,)).fetchone()
        if runs is not None and runs[0] >= n:
            return
        time.sleep(0.5)
    raise AssertionError(f"{job} did not run {n} times in 30 s:\n{log.read_text()}")


def _assert_quiet(text: str) -> None:
    """Errors only for errors (`/ready` included), routine runs not at the default level."""
    lines = _LOG_LINE.findall(text)
    errors = [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]
    assert errors == [], "\n".join(errors)
    routine = [name for _level, name in lines if name.startswith("apscheduler")]
    assert routine == [], text
    assert len(lines) <= 25, text


def test_serve_embedded_starts_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    log = tmp_path / "serve.log"

    proc, first_start = _start(data_dir, port, log)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/ready").json()
        assert ready == {"status": "ready", "database": True, "broker": True}
        out = subprocess.run(
            [PROBATION, "user", "add", "--username", "officer1", "--role", "officer",
             "--password", "officer-password-1"],
            env=_env(data_dir), capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        for _ in range(2):
            assert httpx.get(f"http://127.0.0.1:{port}/ready").json()["broker"] is True
        _wait_for_scheduler_runs(log, "notify", 3)
    finally:
        assert _stop(proc) == 0, log.read_text()
    text = log.read_text()
    for what in ("API:", "Docs:", "Database:", "Broker:"):
        assert what in text
    assert "serve stopped" in text
    _assert_quiet(text)

    proc, second_start = _start(data_dir, port, log)
    try:
        with psycopg.connect(_database_url(log)) as c:
            users = {r[0] for r in c.execute("SELECT username FROM users")}
        assert users == {"admin", "officer1"}
    finally:
        assert _stop(proc) == 0
    print(f"serve start: first {first_start:.2f} s, restart {second_start:.2f} s")


def test_serve_with_no_configuration_prints_a_working_login(tmp_path: Path) -> None:
    """The README's run command exactly: no PROBATION_* variable but the data dir."""
    data_dir = tmp_path / "data"
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBATION_")}
    env["PROBATION_DATA_DIR"] = str(data_dir)
    proc = subprocess.Popen([PROBATION, "serve", "--port", str(port)], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        m = re.search(r"Login:\s+admin, password generated into (\S+)", log.read_text())
        assert m, log.read_text()
        password = Path(m.group(1)).read_text().strip()
        r = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/token",
                       data={"username": "admin", "password": password})
        assert r.status_code == 200, r.text
        me = httpx.get(f"http://127.0.0.1:{port}/api/v1/me",
                       headers={"Authorization": f"Bearer {r.json()['access_token']}"})
        assert me.json()["role"] == "admin"
    finally:
        assert _stop(proc) == 0


def test_serve_on_a_busy_port_fails_at_once_in_one_line(tmp_path: Path) -> None:
    """The port is checked before anything starts: one line naming it and --port, exit 1,
    no embedded server started (no cluster in the data dir)."""
    data_dir = tmp_path / "data"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        out = subprocess.run([PROBATION, "serve", "--port", str(port)], env=_env(data_dir),
                             capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
    assert out.returncode == 1, out.stderr
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"port {port} on 127.0.0.1 is already in use" in lines[0] and "--port" in lines[0]
    assert not (data_dir / "postgres").exists()
    print(f"serve on a busy port: failed after {took:.2f} s")
