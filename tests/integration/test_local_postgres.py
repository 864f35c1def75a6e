"""The private PostgreSQL runner (`db.server.LocalPostgres`) with a real server."""

from __future__ import annotations

from pathlib import Path

from db.server import LocalPostgres, embedded_bin_dir, system_bin_dirs


def _pg(data_dir: Path) -> LocalPostgres:
    bins = system_bin_dirs()
    return LocalPostgres(
        bin_dir=bins[0] if bins else embedded_bin_dir(), data_dir=data_dir,
        settings={"fsync": "off", "synchronous_commit": "off"},
    )


def test_existing_cluster_stays_reachable_when_a_parent_loses_search_permission(
    tmp_path: Path,
) -> None:
    """Run as root, the server runs as another user, which needs o+x on every parent of
    the cluster. A parent can lose it after the cluster was made (pytest resets its temp
    root to 0700 whenever a session starts): a second process (`probation user add`
    beside a running `serve`) must still find the running server, and a later start must
    still start it. (Not run as root, the server runs as its owner and the case is
    trivially true; CI runs as root.)"""
    home = tmp_path / "home"
    pg = _pg(home / "pg")
    pg.start()
    try:
        home.chmod(0o700)  # others lose search permission on a parent
        other = _pg(home / "pg")
        assert other.running_port() == pg.port
    finally:
        pg.stop()
    home.chmod(0o700)
    again = _pg(home / "pg")
    assert again.running_port() is None
    again.start()
    again.stop()
