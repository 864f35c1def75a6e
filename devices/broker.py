"""MQTT brokers the project starts itself.

`EmbeddedBroker` runs amqtt in a background thread for the no-configuration
default of `probation serve`. `Mosquitto` runs a private mosquitto process
(tests, benchmarks) with the configuration the gateway contract requires:
persistence, no queue-count limit, a high in-flight window.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


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
        return shutil.which("mosquitto") is not None

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
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(port=self.port, data=self.data_dir))
        exe = shutil.which("mosquitto") or "mosquitto"
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
