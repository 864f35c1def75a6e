"""The console's browser tests: `probation serve` on the suite's PostgreSQL and mosquitto,
driven by Debian's Chromium through Playwright (no browser is ever downloaded)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from db.server import LocalPostgres, free_port

PROBATION = str(Path(sys.executable).parent / "probation")
CHROMIUM = os.environ.get("PROBATION_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTEFACTS = Path(__file__).parent / "artefacts"
ADMIN_PASSWORD = "admin-console-password-1"
JWT_SECRET = "e2e-console-" + "s" * 40


@dataclass
class Service:
    base: str
    mqtt_url: str
    prefix: str
    database_url: str
    proc: subprocess.Popen[bytes]
    log: Path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBATION_")}
    env.update(extra)
    return env


def wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"service not healthy in {timeout} s:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def console_assets() -> None:
    """The console's npm packages (what `serve` installs on first start)."""
    from probation.console import ensure_assets

    note = ensure_assets()
    assert note is None, note


@pytest.fixture(scope="module")
def service(pg_server: LocalPostgres, mqtt_url: str, console_assets: None,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`probation serve` (API, ingestion, scheduler) on a fresh database."""
    from tests.conftest import _drop_database, _new_database

    name = _new_database(pg_server)
    work = tmp_path_factory.mktemp("console-serve")
    port = free_port()
    prefix = f"e2e{uuid.uuid4().hex[:8]}/v1"
    log = work / "serve.log"
    env = _env(PROBATION_DATABASE_URL=pg_server.url(name), PROBATION_MQTT_URL=mqtt_url,
               PROBATION_MQTT_PREFIX=prefix, PROBATION_DATA_DIR=str(work / "data"),
               PROBATION_ADMIN_PASSWORD=ADMIN_PASSWORD, PROBATION_JWT_SECRET=JWT_SECRET,
               PROBATION_MQTT_CLIENT_ID=f"ingest-{uuid.uuid4().hex[:8]}",
               PROBATION_MAP_TILES="",
               # the admin signs in with a password alone (the world is made over the API);
               # test_console_sets_up_the_second_factor requires it of its own admin
               PROBATION_TOTP_REQUIRED_ROLES="[]")
    proc = subprocess.Popen([PROBATION, "serve", "--port", str(port)], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, log)
        yield Service(base, mqtt_url, prefix, pg_server.url(name), proc, log)
    finally:
        stop(proc)
        _drop_database(pg_server, name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def artefacts() -> Path:
    ARTEFACTS.mkdir(exist_ok=True)
    return ARTEFACTS
