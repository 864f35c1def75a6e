"""MQTT probes against the embedded broker (`probation serve`) and the shipped compose
configuration (deploy/mosquitto): who may connect, publish where, read what, and how big.

Every probe runs on both brokers. A refused publish is invisible to the publisher under
MQTT 3.1.1 (the broker acknowledges and drops it), so each is judged by what the backend
receives: a marker the same device publishes on its own topic afterwards must arrive,
the refused message must not.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices import mqtt_auth
from devices.broker import check_listener
from devices.mqtt_auth import MESSAGE_SIZE_LIMIT, new_password
from tests.security import brokers
from tests.security.brokers import BACKEND, PREFIX, Broker, accepted, connect, subscribed, wait_for

# (mosquitto is required: these tests fail, never skip, without it)

UPLINK = ("fixes", "events", "checkins", "status", "acks")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return brokers.make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module", params=["embedded", "shipped"])
def broker(request: pytest.FixtureRequest, certs: Path) -> Iterator[Broker]:
    make = brokers.embedded if request.param == "embedded" else brokers.shipped
    with brokers.private_dir() as tmp:
        yield from make(tmp, certs)


@pytest.fixture
def backend(broker: Broker) -> Iterator[brokers.Client]:
    cl = connect(broker, BACKEND, broker.backend_password)
    assert not cl.connack.is_failure
    assert subscribed(cl, f"{PREFIX}/devices/#", f"{PREFIX}/ingest/#") == [1, 1]
    yield cl
    cl.stop()


def _delivered(broker: Broker, backend: brokers.Client, user: str, topic: str,
               payload: bytes = b"{}") -> bool:
    """Publish as `user` (a fresh connection), then a marker on its own fixes topic; True if
    the backend received the first one."""
    n = len(backend.received)
    cl = connect(broker, user, broker.passwords[user])
    with contextlib.suppress(RuntimeError, ValueError):
        cl.c.publish(topic, payload, qos=1).wait_for_publish(5)
    cl.stop()
    marker = f"{PREFIX}/devices/{user}/fixes"
    m = connect(broker, user, broker.passwords[user])
    m.c.publish(marker, b"marker", qos=1).wait_for_publish(5)
    m.stop()
    assert wait_for(lambda: (marker, 6) in backend.received[n:]), "the marker never arrived"
    return any(t == topic and size == len(payload) for t, size in backend.received[n:])


def test_anonymous_and_wrong_credentials_are_refused(broker: Broker) -> None:
    a, b = broker.passwords["DEV_A"], broker.passwords["DEV_B"]
    assert accepted(broker, "DEV_A", a)  # control
    assert not accepted(broker, None, None)  # anonymous
    assert not accepted(broker, "DEV_A", None)  # a username without a password
    assert not accepted(broker, "DEV_A", "wrong-" + a)
    assert not accepted(broker, "DEV_A", b)  # another device's password
    assert not accepted(broker, "DEV_UNKNOWN", a)
    assert not accepted(broker, BACKEND, a)  # the backend's account with a device's password
    assert not accepted(broker, "", a)


def test_a_device_publishes_only_under_its_own_topics(broker: Broker,
                                                      backend: brokers.Client) -> None:
    for stream in UPLINK:
        assert _delivered(broker, backend, "DEV_A", f"{PREFIX}/devices/DEV_A/{stream}")
        assert not _delivered(broker, backend, "DEV_A", f"{PREFIX}/devices/DEV_B/{stream}")
    for topic in (f"{PREFIX}/devices/DEV_A/commands",  # forging its own downlink
                  f"{PREFIX}/devices/DEV_B/commands",
                  f"{PREFIX}/ingest/probation-ingest/probe",  # the ingest's watermark probe
                  f"{PREFIX}/devices/DEV_A/fixes/extra",
                  f"{PREFIX}/devices/DEV_B"):
        assert not _delivered(broker, backend, "DEV_A", topic), topic


def test_a_device_reads_only_its_own_commands(broker: Broker, backend: brokers.Client) -> None:
    spy = connect(broker, "DEV_A", broker.passwords["DEV_A"])
    victim = connect(broker, "DEV_B", broker.passwords["DEV_B"])
    try:
        codes = subscribed(spy, f"{PREFIX}/devices/DEV_B/commands",
                           f"{PREFIX}/devices/DEV_B/fixes", f"{PREFIX}/devices/+/commands",
                           f"{PREFIX}/devices/#", "#", f"{PREFIX}/devices/DEV_A/commands")
        assert codes[-1] == 1  # its own commands: granted
        assert subscribed(victim, f"{PREFIX}/devices/DEV_B/commands") == [1]
        backend.c.publish(f"{PREFIX}/devices/DEV_B/commands", b'{"id":"x"}', qos=1)
        victim.c.publish(f"{PREFIX}/devices/DEV_B/fixes", b"{}", qos=1).wait_for_publish(5)
        backend.c.publish(f"{PREFIX}/devices/DEV_A/commands", b'{"id":"own"}', qos=1)
        assert wait_for(lambda: (f"{PREFIX}/devices/DEV_B/commands", 10) in victim.received)
        assert wait_for(lambda: (f"{PREFIX}/devices/DEV_A/commands", 12) in spy.received)
        # DEV_A got its own command and nothing of DEV_B's, through any of its filters
        assert all(t == f"{PREFIX}/devices/DEV_A/commands" for t, _ in spy.received), spy.received
    finally:
        spy.stop()
        victim.stop()


def test_the_broker_enforces_the_message_size_limit(broker: Broker,
                                                    backend: brokers.Client) -> None:
    topic = f"{PREFIX}/devices/DEV_A/checkins"
    assert _delivered(broker, backend, "DEV_A", topic, b"x" * MESSAGE_SIZE_LIMIT)
    assert not _delivered(broker, backend, "DEV_A", topic, b"x" * (MESSAGE_SIZE_LIMIT + 1))
    big = connect(broker, "DEV_A", broker.passwords["DEV_A"])
    n = len(backend.received)
    with contextlib.suppress(RuntimeError, ValueError):
        big.c.publish(topic, b"x" * (10 * 1024 * 1024), qos=1).wait_for_publish(10)
    assert big.disconnected.wait(10), "a 10 MB packet did not cost the connection"
    big.c.loop_stop()
    assert _delivered(broker, backend, "DEV_A", f"{PREFIX}/devices/DEV_A/fixes")
    assert all(size < 10 * 1024 * 1024 for _, size in backend.received[n:])


def test_tls_listener_with_device_passwords(broker: Broker) -> None:
    a = broker.passwords["DEV_A"]
    assert accepted(broker, "DEV_A", a, tls=True)
    assert not accepted(broker, "DEV_A", "wrong-" + a, tls=True)
    assert not accepted(broker, None, None, tls=True)
    plain = connect(broker, "DEV_A", a, tls=False, wait=False)
    plain.c.loop_stop()
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    raw = mqtt.Client(CallbackAPIVersion.VERSION2)  # plain MQTT on the TLS port
    raw.username_pw_set("DEV_A", a)
    got: list[object] = []
    raw.on_connect = lambda *args: got.append(args[3])
    raw.connect("127.0.0.1", broker.tls_port)
    raw.loop_start()
    assert not wait_for(lambda: bool(got), 2)  # no CONNACK over plain TCP
    raw.loop_stop()


def test_registration_and_rotation_reach_the_broker(broker: Broker) -> None:
    fresh, old = new_password(), broker.passwords["DEV_A"]
    assert not accepted(broker, "DEV_C", fresh)
    broker.set_account("DEV_C", fresh)  # registration
    assert brokers.wait_accepts(broker, "DEV_C", fresh)
    session = connect(broker, "DEV_A", old)  # connected with the password about to go
    bystander = connect(broker, "DEV_B", broker.passwords["DEV_B"])
    broker.set_account("DEV_A", new_password())  # rotation
    assert brokers.wait_accepts(broker, "DEV_A", broker.passwords["DEV_A"])
    assert not accepted(broker, "DEV_A", old)
    assert session.disconnected.wait(10), "a session with the rotated password stayed open"
    assert not bystander.disconnected.is_set()  # the reload cut only that one
    session.c.loop_stop()
    bystander.stop()


def test_registrations_at_once_never_drop_connected_clients(broker: Broker,
                                                            backend: brokers.Client) -> None:
    """Devices registered by concurrent requests each rewrite the password file and reload
    the broker; a reload must never find the file missing or unreadable (mosquitto then
    drops every client: the backend's ingest was cut off five times while a demo
    registered 200 people)."""
    bystander = connect(broker, "DEV_B", broker.passwords["DEV_B"])
    lock = threading.Lock()
    fresh = {f"DEV_N{i}": new_password() for i in range(24)}

    def register(user: str) -> None:
        with lock:  # publish a new dict: the broker's accounts() reads it unlocked
            broker.hashes = {**broker.hashes, user: mqtt_auth.hash_password(fresh[user])}
        for _ in range(3):  # and the retries and rotations that follow
            broker.sync()

    busy = threading.Event()

    def spin() -> None:  # the API's other requests: the GIL switches threads mid-write
        while not busy.is_set():
            sum(range(10_000))

    spinners = [threading.Thread(target=spin) for _ in range(4)]
    threads = [threading.Thread(target=register, args=(u,)) for u in fresh]
    for t in spinners + threads:
        t.start()
    for t in threads:
        t.join(60)
    busy.set()
    for t in spinners:
        t.join()
    for user in list(fresh)[::6]:
        assert brokers.wait_accepts(broker, user, fresh[user])
    time.sleep(1.0)  # the shipped broker's watcher reloads within its poll period
    assert not backend.disconnected.is_set(), "the backend was disconnected by a reload"
    assert not bystander.disconnected.is_set(), "a device was disconnected by a reload"
    bystander.stop()


def test_no_anonymous_listener_beyond_loopback() -> None:
    check_listener("127.0.0.1", authenticated=False)
    check_listener("0.0.0.0", authenticated=True)
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.org"):
        with pytest.raises(ValueError):
            check_listener(host, authenticated=False)
