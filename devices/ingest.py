"""The ingest worker: MQTT uplink → validated, deduplicated rows in TimescaleDB."""

from __future__ import annotations

import logging
import threading
import uuid
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)


def mqtt_client(mqtt_url: str, client_id: str, *, clean: bool = True, v5: bool = False) -> mqtt.Client:
    """A paho client configured from an `mqtt://user:pass@host:port` URL (not yet connected)."""
    u = urlparse(mqtt_url)
    protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    kwargs: dict[str, object] = {}
    if not v5:
        kwargs["clean_session"] = clean
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs  # type: ignore[arg-type]
    )
    if u.username:
        client.username_pw_set(u.username, u.password)
    if u.scheme in ("mqtts", "ssl"):
        client.tls_set()
    return client


def broker_address(mqtt_url: str) -> tuple[str, int]:
    u = urlparse(mqtt_url)
    return u.hostname or "127.0.0.1", u.port or (8883 if u.scheme in ("mqtts", "ssl") else 1883)


class IngestWorker:
    """Connects to the broker and the database and ingests uplink traffic."""

    def __init__(
        self, *, database_url: str, mqtt_url: str, prefix: str = "pm/v1",
        client_id: str = "probation-ingest", share_group: str | None = None,
    ) -> None:
        self.database_url = database_url
        self.mqtt_url = mqtt_url
        self.prefix = prefix
        self.client_id = client_id or f"probation-ingest-{uuid.uuid4().hex[:8]}"
        self.share_group = share_group
        self._stopped = threading.Event()
        self._client: mqtt.Client | None = None

    def start(self) -> None:
        client = mqtt_client(self.mqtt_url, self.client_id, clean=False)
        host, port = broker_address(self.mqtt_url)
        client.connect(host, port, keepalive=30)
        client.loop_start()
        self._client = client
        log.info("ingest worker connected to %s:%d as %s", host, port, self.client_id)

    def stop(self) -> None:
        self._stopped.set()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        log.info("ingest worker stopped")

    def wait(self) -> None:
        self._stopped.wait()
