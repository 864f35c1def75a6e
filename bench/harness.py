"""What the benchmarks share: private servers, child processes, waiting, percentiles, JSON.

- `private_postgres` starts a throwaway PostgreSQL (TimescaleDB when a system install
  has it) with the bench's settings and one database; `release_servers` stops and
  removes whatever a bench started;
- `Child` runs a function in a spawned process driven over a pipe; `serve_child` is
  the command loop such a child runs (report, lags, reset, stop);
- `wait_until`, `pct`, `has_timescaledb`, `drop_session`;
- `write_json` writes a result object (numpy values allowed), creating the directory.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import psycopg

from db.engine import libpq_url
from db.server import LocalPostgres, embedded_bin_dir, system_bin_dirs, timescaledb_available
from devices.mqtt import Link

UNSAFE_FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def private_postgres(
    work: Path, *, database: str, settings: dict[str, str], durable: bool = True,
    timescale_settings: dict[str, str] | None = None,
) -> LocalPostgres:
    """Start a PostgreSQL in `work / "pg"` (with TimescaleDB when a system install has it,
    then also `timescale_settings`) and create `database` unless it exists (a cluster
    kept from an earlier run is started again). `durable=False` turns fsync, synchronous
    commit and full-page writes off."""
    bins = system_bin_dirs()
    ts_bin = next((b for b in bins if timescaledb_available(b)), None)
    conf = dict(settings)
    if ts_bin is not None:
        conf.update(timescale_settings or {})
    if not durable:
        conf.update(UNSAFE_FAST)
    pg = LocalPostgres(
        bin_dir=ts_bin or (bins[0] if bins else embedded_bin_dir()), data_dir=work / "pg",
        timescaledb=ts_bin is not None, settings=conf,
    )
    pg.start()
    with psycopg.connect(pg.url(), autocommit=True) as c:
        if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            c.execute(f'CREATE DATABASE "{database}"')
    return pg


def has_timescaledb(url: str) -> bool:
    with psycopg.connect(libpq_url(url)) as c:
        return c.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone() == (1,)


def release_servers(broker: Any, pg: LocalPostgres | None, work: Path | None) -> None:
    """Stop a bench's private broker, destroy its private PostgreSQL, remove its work dir
    (each when there is one)."""
    if broker is not None:
        broker.stop()
    if pg is not None:
        pg.destroy()
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)


class Child:
    """A spawned child process driven over a pipe: `target(conn, *args)` sends a truthy
    value when ready, then answers `ask`s; `close` asks it to stop."""

    def __init__(self, target: Any, *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        if not self.conn.recv():
            raise RuntimeError(f"{target.__name__} did not get ready")

    def ask(self, cmd: str) -> Any:
        self.conn.send(cmd)
        return self.conn.recv()

    def close(self) -> None:
        try:
            self.ask("stop")
        finally:
            self.proc.join(20)
            if self.proc.is_alive():
                self.proc.kill()


def serve_child(
    conn: Connection, *, lock: threading.Lock, state: dict[str, Any],
    reset: Callable[[], None], stop: Callable[[], None],
    extra: Callable[[], dict[str, Any]] = dict,
) -> None:
    """A bench child's command loop: report (state without lags, plus `extra()`), lags,
    reset, and anything else stops the worker and returns."""
    while True:
        cmd = conn.recv()
        if cmd == "report":
            with lock:
                rep = {k: v for k, v in state.items() if k != "lags"}
                rep.update(extra())
                conn.send(rep)
        elif cmd == "lags":
            with lock:
                conn.send(list(state["lags"]))
        elif cmd == "reset":
            with lock:
                reset()
            conn.send(True)
        else:
            stop()
            conn.send(True)
            return


def wait_until(cond: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError(f"benchmark: timed out waiting for {what}")


def pct(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of `values`, nearest rank on the sorted values (NaN if empty)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def drop_session(mqtt_url: str, client_id: str) -> None:
    """End a persistent session (a clean connect with its client id), so that the broker
    stops queueing the later phases' messages for it."""
    link = Link(mqtt_url, client_id, name="bench", clean=True, keepalive=10)
    link.start(10)
    link.stop()


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Write a result object (indented; numpy numbers and arrays allowed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
                     + b"\n")


def app_from_env() -> Any:
    """The app for `uvicorn --factory` in a bench's server process (URLs from the
    environment)."""
    from probation.app import create_app
    from probation.settings import Settings

    s = Settings()
    assert s.database_url and s.mqtt_url
    return create_app(s, database_url=s.database_url, mqtt_url=s.mqtt_url)


# Subjects and their cases, spread over the officers, for `%(n)s` people: ids are
# md5(tag || 'p' || i) (subject), md5(tag || 'c' || i) (case), md5(tag || 'o' || k) (officer)
CASELOAD_SQL = (
    """INSERT INTO subjects (id, iin, full_name, birth_date)
       SELECT md5(%(tag)s || 'p' || i)::uuid, lpad(i::text, 12, '0'), 'Person ' || i,
              '1990-01-01'
       FROM generate_series(1, %(n)s) i""",
    """INSERT INTO cases (id, subject_id, officer_id, court_order_ref, starts_on, ends_on,
                          risk_level, created_at, updated_at)
       SELECT md5(%(tag)s || 'c' || i)::uuid, md5(%(tag)s || 'p' || i)::uuid,
              md5(%(tag)s || 'o' || (1 + (i - 1) %% %(officers)s))::uuid, 'B-' || i,
              '2026-01-01', '2027-12-31', (ARRAY['low','medium','high'])[1 + i %% 3],
              now() - i * interval '1 minute', now() - i * interval '1 minute'
       FROM generate_series(1, %(n)s) i""",
)

