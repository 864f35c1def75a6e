"""MQTT brokers the project starts itself.

`EmbeddedMosquitto` is the broker of `probation serve` when no broker URL is set: a
mosquitto process with the production rules (every account authenticated, the ACL of
`devices.mqtt_auth`, the contract's message size limit, a persistent store, optional
TLS), on a port that stays the same across restarts. It runs in its own session, like the
embedded PostgreSQL, so a crash of `serve` (even kill -9) leaves it running with what it
acknowledged; the restarted `serve` adopts it. `Mosquitto` runs a private, anonymous
mosquitto on loopback for tests and benchmarks. `EmbeddedBroker` (amqtt in a thread) is
only the test suite's fallback when mosquitto is not installed: amqtt has no message
size limit (it reads any packet whole), keeps queued QoS 1 messages in memory only, and
its persistence plugin stores no queued messages, so it cannot be the locked-down
default.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from devices import mqtt_auth

log = logging.getLogger(__name__)


def mosquitto_exe() -> str | None:
    """mosquitto on PATH, or where Debian puts it (/usr/sbin is not on a user's PATH)."""
    found = shutil.which("mosquitto")
    if found is None:
        for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
            if os.access(candidate, os.X_OK):
                return candidate
    return found


def wait_port(host: str, port: int, timeout: float = 15) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


class EmbeddedBroker:
    """amqtt on 127.0.0.1:`port`, in a daemon thread with its own event loop."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: object | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 15) -> None:
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("embedded broker did not start")
        if self._error is not None:
            raise RuntimeError(f"embedded broker failed: {self._error}") from self._error
        log.info("embedded MQTT broker (amqtt) on %s", self.url)

    def _run(self) -> None:
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        async def main() -> None:
            broker = Broker(config)
            self._broker = broker
            try:
                await broker.start()
            except BaseException as e:  # reported to the starting thread
                self._error = e
                raise
            finally:
                self._ready.set()

        try:
            loop.run_until_complete(main())
            loop.run_forever()
        except BaseException as e:
            self._error = e
            self._ready.set()

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or not loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)  # type: ignore[attr-defined]
        try:
            fut.result(timeout=10)
        except Exception:
            log.warning("embedded broker did not shut down cleanly", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)


MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {data}/
autosave_interval 60
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 1000
max_packet_size 1048576
message_size_limit 0
persistent_client_expiration 7d
log_dest file {data}/mosquitto.log
log_type error
log_type warning
"""


@dataclass
class Mosquitto:
    """A private mosquitto process on 127.0.0.1:`port` with a data directory."""

    data_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @staticmethod
    def available() -> bool:
        return mosquitto_exe() is not None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        from db.server import free_port, make_traversable

        if not self.port:
            self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o777)  # mosquitto drops privileges when started as root
        make_traversable(self.data_dir)
        check_listener("127.0.0.1", authenticated=False)
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(port=self.port, data=self.data_dir))
        exe = mosquitto_exe() or "mosquitto"
        self.proc = subprocess.Popen(
            [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_port("127.0.0.1", self.port)
        except TimeoutError:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"mosquitto did not start: {err}") from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listener(host: str, *, authenticated: bool) -> None:
    """Refuse to listen beyond this machine without authentication."""
    if not authenticated and not is_loopback(host):
        raise ValueError(f"refusing an anonymous MQTT listener on {host}: only loopback may "
                         "go without authentication")


EMBEDDED_CONF = """\
# Generated by `probation serve` (devices/broker.py); rewritten on every start.
per_listener_settings false
allow_anonymous false
password_file {dir}/passwd
acl_file {dir}/acl
{listeners}
persistence true
persistence_location {dir}/
autosave_interval 10
max_queued_messages 0
max_queued_bytes 1073741824
max_inflight_messages 1000
persistent_client_expiration 7d
# device-mqtt-v1.md: at most 256 KiB per message. A larger payload is dropped; a packet
# larger than that plus room for the topic is refused before it is read (disconnect).
message_size_limit {size}
max_packet_size {packet}
log_dest file {dir}/mosquitto.log
log_type error
log_type warning
log_type notice
"""


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener: the server certificate chain and key (PEM files)."""

    cert: Path
    key: Path
    host: str = "0.0.0.0"
    port: int = 8883


def _mosquitto_user() -> pwd.struct_passwd | None:
    """mosquitto started as root drops to the `mosquitto` user: it must own its files."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("mosquitto")
    except KeyError:
        return None


@dataclass
class EmbeddedMosquitto:
    """The embedded broker of `probation serve` (see the module docstring).

    `accounts()` gives the (username, hash) of every account but the backend's: it is
    called on `start()` and `sync()`; the backend's account is `backend_password`'s.
    """

    data_dir: Path
    backend_password: str
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "pm/v1"
    tls: BrokerTls | None = None
    accounts: Callable[[], Iterable[tuple[str, str]]] = lambda: ()
    gateways: dict[str, str] = field(default_factory=dict)
    pid: int | None = field(default=None, init=False)
    adopted: bool = field(default=False, init=False)
    _sync_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "passwd"

    @property
    def connect_host(self) -> str:
        if self.tls is not None or self.host in ("0.0.0.0", "::"):
            return "127.0.0.1"
        return self.host

    @property
    def url(self) -> str:
        """The backend's URL (plain, on this machine)."""
        return (f"mqtt://{mqtt_auth.BACKEND_USER}:{self.backend_password}"
                f"@{self.connect_host}:{self.port}")

    @property
    def public_url(self) -> str:
        """Where devices connect, without credentials."""
        if self.tls is not None:
            return f"mqtts://{self.tls.host}:{self.tls.port}"
        return f"mqtt://{self.host}:{self.port}"

    def _listeners(self) -> str:
        plain_host = "127.0.0.1" if self.tls is not None else self.host
        check_listener(plain_host, authenticated=True)
        lines = [f"listener {self.port} {plain_host}"]
        if self.tls is not None:
            check_listener(self.tls.host, authenticated=True)
            lines += [f"listener {self.tls.port} {self.tls.host}",
                      f"certfile {self.data_dir}/tls/server.crt",
                      f"keyfile {self.data_dir}/tls/server.key",
                      "tls_version tlsv1.2"]
        return "\n".join(lines)

    def config_text(self) -> str:
        size = mqtt_auth.MESSAGE_SIZE_LIMIT
        return EMBEDDED_CONF.format(dir=self.data_dir, listeners=self._listeners(), size=size,
                                    packet=size + 2048)

    def _own(self, path: Path) -> None:
        user = _mosquitto_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    def _write(self, name: str, text: str, mode: int = 0o600) -> bool:
        path = self.data_dir / name
        changed = mqtt_auth.write_private(path, text, mode, prepare=self._own)
        self._own(path)  # an unchanged file keeps its content; its owner is made sure of
        return changed

    def _password_text(self) -> str:
        backend = mqtt_auth.reuse_or_hash(mqtt_auth.BACKEND_USER, self.backend_password,
                                          self.password_file)
        return mqtt_auth.password_file_text([(mqtt_auth.BACKEND_USER, backend),
                                             *self.accounts()])

    def _prepare(self) -> None:
        from db.server import make_traversable

        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._own(self.data_dir)
        make_traversable(self.data_dir)
        if self.tls is not None:
            (self.data_dir / "tls").mkdir(exist_ok=True, mode=0o700)
            self._own(self.data_dir / "tls")
            self._write("tls/server.crt", self.tls.cert.read_text(), 0o644)
            self._write("tls/server.key", self.tls.key.read_text())
        self._write("acl", mqtt_auth.acl_text(self.prefix, gateways=self.gateways))
        self._write("passwd", self._password_text())

    def _running_pid(self) -> int | None:
        """The pid of a mosquitto already running on this data dir (a crashed serve's)."""
        try:
            pid = int((self.data_dir / "mosquitto.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if str(self.conf_path).encode() in cmdline else None

    def start(self, timeout: float = 15) -> None:
        """Adopt the broker left running on this data dir if its configuration is the
        same (reloading its accounts), else start one (stopping a stale one first)."""
        exe = mosquitto_exe()
        if exe is None:
            raise RuntimeError("the embedded MQTT broker needs mosquitto (Debian/Ubuntu: apt "
                               "install mosquitto), or set PROBATION_MQTT_URL to a broker")
        pid = self._running_pid()
        same = self.conf_path.exists() and self.conf_path.read_text() == self.config_text()
        self._prepare()
        if pid is not None and same:
            self.pid, self.adopted = pid, True
            self.reload()
            log.info("embedded MQTT broker (mosquitto, pid %d) adopted on %s", pid, self.public_url)
            return
        if pid is not None:
            _terminate(pid)
        self._write("mosquitto.conf", self.config_text(), 0o644)
        log_path = self.data_dir / "stderr.log"
        with log_path.open("ab") as err:
            proc = subprocess.Popen(
                [exe, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True,  # outlives a crash of serve, like the database
            )
        self.pid = proc.pid
        (self.data_dir / "mosquitto.pid").write_text(str(proc.pid))
        try:
            wait_port(self.connect_host, self.port, timeout)
            if self.tls is not None:
                wait_port("127.0.0.1" if self.tls.host in ("0.0.0.0", "::") else self.tls.host,
                          self.tls.port, timeout)
        except TimeoutError:
            proc.kill()
            tail = (self.data_dir / "mosquitto.log").read_text()[-2000:] if (
                self.data_dir / "mosquitto.log").exists() else ""
            raise RuntimeError(f"mosquitto did not start: {log_path.read_text()[-2000:]}"
                               f"{tail}") from None
        log.info("embedded MQTT broker (mosquitto, pid %d) on %s", proc.pid, self.public_url)

    def sync(self) -> bool:
        """Rewrite the password file from `accounts()`; reload the broker if it changed.
        One at a time: devices registered at once must not interleave their writes."""
        with self._sync_lock:
            changed = self._write("passwd", self._password_text())
            if changed:
                self.reload()
            return changed

    def reload(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGHUP)

    def stop(self) -> None:
        """Stop the broker (it saves its store first)."""
        if self.pid is not None:
            _terminate(self.pid)
            self.pid = None
            with contextlib.suppress(OSError):
                (self.data_dir / "mosquitto.pid").unlink()


def _terminate(pid: int, timeout: float = 10) -> None:
    """SIGTERM `pid` and wait for it to go (SIGKILL after `timeout`)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(ProcessLookupError, ChildProcessError):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return
    deadline = time.monotonic() + timeout  # not our child (adopted): poll for it
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def device_accounts(database_url: str) -> list[tuple[str, str]]:
    """(serial, hash) of every device with broker credentials; none before the migration
    that adds them has run (the broker starts before the migrations)."""
    import psycopg

    from db.engine import libpq_url
    from devices import service

    try:
        with psycopg.connect(libpq_url(database_url)) as conn:
            return service.broker_accounts(conn)
    except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable):
        return []


@dataclass
class PasswordFileSync:
    """Keeps an external mosquitto's password file (compose: a volume both share) equal to
    the backend's account plus the devices' credentials; that broker reloads the file when
    it changes (deploy/mosquitto/run.sh)."""

    path: Path
    database_url: str
    backend_user: str
    backend_password: str
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def sync(self) -> bool:
        with self._lock:
            backend = mqtt_auth.reuse_or_hash(self.backend_user, self.backend_password,
                                              self.path)
            text = mqtt_auth.password_file_text(
                [(self.backend_user, backend), *device_accounts(self.database_url)]
            )
            return mqtt_auth.write_private(self.path, text)

