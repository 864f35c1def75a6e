"""Real servers for the test suite: a private PostgreSQL (TimescaleDB when installed) and a
private MQTT broker (mosquitto when on PATH), started once per session on free ports.

Each test that asks for `database_url` gets a fresh database cloned from a migrated
template. `PROBATION_TEST_REQUIRE_TIMESCALE=1` / `PROBATION_TEST_REQUIRE_MOSQUITTO=1`
turn a missing TimescaleDB / mosquitto into a failure instead of a fallback.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from db.server import LocalPostgres, embedded_bin_dir, system_bin_dirs, timescaledb_available
from devices.broker import EmbeddedBroker, Mosquitto

TEMPLATE_DB = "probation_template"
_counter = itertools.count()


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def _postgres_choice() -> tuple[Path, bool]:
    """The PostgreSQL binaries the session uses and whether they have TimescaleDB."""
    bins = system_bin_dirs()
    for bin_dir in bins:
        if timescaledb_available(bin_dir):
            return bin_dir, True
    return (bins[0] if bins else embedded_bin_dir()), False


def _choose_postgres(data_dir: Path) -> LocalPostgres:
    bin_dir, timescaledb = _postgres_choice()
    fast = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    if timescaledb:
        return LocalPostgres(
            bin_dir=bin_dir, data_dir=data_dir, timescaledb=True,
            settings={"timescaledb.max_background_workers": "0", **fast},
        )
    if _flag("PROBATION_TEST_REQUIRE_TIMESCALE"):
        raise RuntimeError(
            "PROBATION_TEST_REQUIRE_TIMESCALE=1 but no system PostgreSQL with TimescaleDB "
            "is installed (see .ci/install-timescaledb.sh)"
        )
    return LocalPostgres(bin_dir=bin_dir, data_dir=data_dir, settings=fast)


def _version_output(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def _timescaledb_version(bin_dir: Path) -> str:
    sharedir = _version_output([str(bin_dir / "pg_config"), "--sharedir"])
    control = Path(sharedir) / "extension" / "timescaledb.control"
    m = re.search(r"default_version\s*=\s*'([^']+)'", control.read_text()) if control.exists() else None
    return m.group(1) if m else "installed (version unknown)"


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which real servers this run uses: a fallback is visible in every test log."""
    bin_dir, timescaledb = _postgres_choice()
    postgres = _version_output([str(bin_dir / "postgres"), "--version"])
    if timescaledb:
        tsdb = _timescaledb_version(bin_dir)
    else:
        tsdb = "not installed: plain PostgreSQL tables"
        if _flag("PROBATION_TEST_REQUIRE_TIMESCALE"):
            tsdb += " (PROBATION_TEST_REQUIRE_TIMESCALE=1: the run will fail)"
    if Mosquitto.available():
        broker = _version_output(["mosquitto", "-h"])
    else:
        broker = "amqtt, embedded (mosquitto is not on PATH)"
        if _flag("PROBATION_TEST_REQUIRE_MOSQUITTO"):
            broker += " (PROBATION_TEST_REQUIRE_MOSQUITTO=1: the run will fail)"
    return [f"PostgreSQL: {postgres} ({bin_dir})", f"TimescaleDB: {tsdb}",
            f"MQTT broker: {broker}"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    """The session's PostgreSQL server, with a migrated template database."""
    from db.migrate import upgrade

    # Not under pytest's temp root: every pytest start resets that root to 0700, which takes
    # the server's own user (postgres, when run as root) off its data directory while it runs
    # when another pytest starts on the same machine.
    root = Path(tempfile.mkdtemp(prefix="probation-test-pg-"))
    pg = _choose_postgres(root / "pg")
    pg.start()
    with psycopg.connect(pg.url(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    upgrade(pg.url(TEMPLATE_DB))
    try:
        yield pg
    finally:
        pg.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def timescale(pg_server: LocalPostgres) -> bool:
    """Whether the suite runs on TimescaleDB."""
    return pg_server.timescaledb


def _new_database(pg: LocalPostgres) -> str:
    name = f"t_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg.url(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    return name


def _drop_database(pg: LocalPostgres, name: str) -> None:
    from db.engine import get_engine

    get_engine(pg.url(name)).dispose()  # close this test's pooled connections first
    with psycopg.connect(pg.url(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_server: LocalPostgres) -> Iterator[str]:
    """A clean, migrated database for this test."""
    name = _new_database(pg_server)
    try:
        yield pg_server.url(name)
    finally:
        _drop_database(pg_server, name)


@pytest.fixture(scope="session")
def mqtt_url() -> Iterator[str]:
    """The session's MQTT broker."""
    if Mosquitto.available():
        # Outside pytest's temp root for the same reason as the PostgreSQL server's.
        root = Path(tempfile.mkdtemp(prefix="probation-test-mqtt-"))
        broker = Mosquitto(data_dir=root / "mosquitto")
        broker.start()
        try:
            yield broker.url
        finally:
            broker.stop()
            shutil.rmtree(root, ignore_errors=True)
        return
    if _flag("PROBATION_TEST_REQUIRE_MOSQUITTO"):
        raise RuntimeError("PROBATION_TEST_REQUIRE_MOSQUITTO=1 but mosquitto is not on PATH")
    from db.server import free_port

    embedded = EmbeddedBroker(port=free_port())
    embedded.start()
    try:
        yield embedded.url
    finally:
        embedded.stop()


@pytest.fixture
def mqtt_prefix() -> str:
    """A topic prefix private to this test, so tests sharing the broker never cross."""
    return f"test{uuid.uuid4().hex[:10]}/v1"


@pytest.fixture
def settings(database_url: str, mqtt_url: str, mqtt_prefix: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    from probation.settings import Settings

    return Settings(
        database_url=database_url, mqtt_url=mqtt_url, mqtt_prefix=mqtt_prefix,
        data_dir=tmp_path / "data", jwt_secret="test-secret-" + "x" * 40,
        mqtt_client_id=f"ingest-{uuid.uuid4().hex[:8]}",
    )
