"""paho clients from `mqtt://user:pass@host:port` URLs, and the connect/callback boilerplate.

`Link` is what every long-lived client of ours but the ingest worker needs: a client
that connects in the background, reconnects on its own, knows whether it is connected,
and subscribes again after a reconnect. Used by the downlink command publisher, the
simulator's publisher and the benchmarks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)


def mqtt_client(
    mqtt_url: str, client_id: str, *, clean: bool = True, v5: bool = False,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A paho client configured from an `mqtt://user:pass@host:port` URL (not yet connected)."""
    u = urlparse(mqtt_url)
    protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    kwargs: dict[str, object] = {}
    if not v5:
        kwargs["clean_session"] = clean
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
        manual_ack=manual_ack, **kwargs,  # type: ignore[arg-type]
    )
    if u.username:
        client.username_pw_set(u.username, u.password)
    if u.scheme in ("mqtts", "ssl"):
        # `?cafile=/path/ca.crt`: a private CA (a pilot's, see scripts/make-local-ca.sh)
        cafile = parse_qs(u.query).get("cafile", [None])[0]
        client.tls_set(ca_certs=cafile)
    return client


def broker_address(mqtt_url: str) -> tuple[str, int]:
    u = urlparse(mqtt_url)
    return u.hostname or "127.0.0.1", u.port or (8883 if u.scheme in ("mqtts", "ssl") else 1883)


def is_v5(protocol: str | int) -> bool:
    """`"5"`, `"5.0"`, `"mqttv5"`, 5 → MQTT 5; `"3.1.1"`, `"mqttv311"`, 4 → MQTT 3.1.1."""
    p = str(protocol).lower().removeprefix("mqttv").removeprefix("v")
    if p in ("5", "5.0", "50"):
        return True
    if p in ("3.1.1", "311", "4"):
        return False
    raise ValueError(f"unknown MQTT protocol version {protocol!r}: use 3.1.1 or 5")


class Link:
    """One paho client with the connect/callback boilerplate written once.

    `start` connects in the background (paho's network thread; paho reconnects on its
    own with `reconnect_s` as the delay bounds) and waits up to `timeout` for the
    broker; `connected` tells whether the link is up now; topics given to `subscribe`
    are subscribed again after every reconnect. Set `client.on_publish` and the like
    for anything else. `name` labels the log lines.
    """

    def __init__(
        self, mqtt_url: str, client_id: str, *, name: str = "mqtt", clean: bool = True,
        v5: bool = False, keepalive: int = 30, session_expiry_s: int | None = None,
        reconnect_s: tuple[int, int] = (1, 10),
        on_message: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.mqtt_url = mqtt_url
        self.name = name
        self.v5 = v5
        self.keepalive = keepalive
        self.session_expiry_s = session_expiry_s
        self.connected = threading.Event()
        self.closing = False
        self._subscriptions: list[tuple[str, int]] = []
        self._on_message = on_message
        self.client = mqtt_client(mqtt_url, client_id, clean=clean, v5=v5)
        self.client.reconnect_delay_set(min_delay=reconnect_s[0], max_delay=reconnect_s[1])
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        if on_message is not None:
            self.client.on_message = self._on_msg

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("%s: the broker refused the connection: %s", self.name, reason)
            return
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos=qos)
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected.clear()
        if not self.closing:
            log.warning("%s: disconnected from the broker (%s); paho reconnects", self.name,
                        reason)

    def _on_msg(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        assert self._on_message is not None
        try:
            self._on_message(msg.topic, bytes(msg.payload))
        except Exception:
            log.exception("%s: handling a message on %s failed", self.name, msg.topic)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe now (when connected) and after every reconnect."""
        self._subscriptions.append((topic, qos))
        if self.connected.is_set():
            self.client.subscribe(topic, qos=qos)

    def start(self, timeout: float = 10) -> bool:
        """Connect in the background; True when connected within `timeout`."""
        host, port = broker_address(self.mqtt_url)
        if self.v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if self.session_expiry_s is not None:
                props.SessionExpiryInterval = self.session_expiry_s
            self.client.connect_async(host, port, keepalive=self.keepalive, properties=props)
        else:
            self.client.connect_async(host, port, keepalive=self.keepalive)
        self.client.loop_start()
        return self.connected.wait(timeout)

    def stop(self) -> None:
        self.closing = True
        self.client.disconnect()
        self.client.loop_stop()
