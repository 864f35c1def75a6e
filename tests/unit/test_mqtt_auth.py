"""Broker account files (devices/mqtt_auth.py) and URL redaction: plain functions."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devices import mqtt_auth
from probation.runtime.embedded import redact


def test_hash_round_trip_and_mosquitto_format() -> None:
    h = mqtt_auth.hash_password("s3cret")
    assert h.startswith(f"$7${mqtt_auth.ITERATIONS}$")
    assert mqtt_auth.verify_password("s3cret", h)
    assert not mqtt_auth.verify_password("s3cret ", h)
    assert not mqtt_auth.verify_password("s3cret", "$6$x$y")
    assert mqtt_auth.hash_password("a") != mqtt_auth.hash_password("a")  # salted


def test_verifies_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    f = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(f), "DEV1", "pw-1"], check=True)
    encoded = f.read_text().strip().split(":", 1)[1]
    assert mqtt_auth.verify_password("pw-1", encoded)
    assert not mqtt_auth.verify_password("pw-2", encoded)


def test_password_file_refuses_names_that_would_break_it() -> None:
    h = mqtt_auth.hash_password("x")
    assert mqtt_auth.password_file_text([("B", h), ("A", h), ("A", h)]) == f"A:{h}\nB:{h}\n"
    for bad in ("", "a:b", "a/b", "a+b", "a#b", "a b", "a\nb"):
        with pytest.raises(ValueError):
            mqtt_auth.password_file_text([(bad, h)])
    with pytest.raises(ValueError):
        mqtt_auth.password_file_text([("A", "plain-text-password")])


def test_no_serial_can_be_a_service_account() -> None:
    import re

    serial = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
    assert not serial.match(mqtt_auth.BACKEND_USER)
    assert not serial.match("probation.simulator")


def test_acl_confines_devices_and_lists_gateways() -> None:
    text = mqtt_auth.acl_text("x/v2", gateways={"probation.sim": "why"})
    lines = text.splitlines()
    assert "pattern write x/v2/devices/%u/fixes" in lines
    assert "pattern read x/v2/devices/%u/commands" in lines
    patterns = [ln.split(" ")[-1] for ln in lines if ln.startswith("pattern")]
    assert len(patterns) == 6 and not any("+" in t or "#" in t for t in patterns)
    sim = lines[lines.index("user probation.sim"):]
    assert "topic write x/v2/devices/+/fixes" in sim and "topic read x/v2/devices/+/commands" in sim


def test_write_private(tmp_path: Path) -> None:
    p = tmp_path / "d" / "f"
    assert mqtt_auth.write_private(p, "a")
    assert p.stat().st_mode & 0o777 == 0o600
    assert not mqtt_auth.write_private(p, "a")  # unchanged: no write, no reload
    assert mqtt_auth.write_private(p, "b") and p.read_text() == "b"


def test_write_private_prepares_the_new_file_before_it_replaces_the_old(tmp_path: Path) -> None:
    """A broker reloading at any moment must read a complete file with its final owner and
    mode: `prepare` (the chown) runs on the temporary file while `path` still holds the old
    content; concurrent writers use distinct temporary files."""
    p = tmp_path / "passwd"
    mqtt_auth.write_private(p, "old")
    seen: list[tuple[str, str, int]] = []

    def prepare(tmp: Path) -> None:
        seen.append((p.read_text(), tmp.read_text(), tmp.stat().st_mode & 0o777))

    assert mqtt_auth.write_private(p, "new", 0o640, prepare=prepare)
    assert seen == [("old", "new", 0o640)] and p.read_text() == "new"
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda i: mqtt_auth.write_private(p, f"text {i}\n" * 1000), range(64)))
    assert p.read_text() in {f"text {i}\n" * 1000 for i in range(64)}
    assert [f.name for f in tmp_path.iterdir()] == ["passwd"]  # no temporary file left


def test_redact() -> None:
    assert redact("postgresql://postgres:pw@127.0.0.1:5/db") == "postgresql://postgres:***@127.0.0.1:5/db"
    assert redact("mqtt://u:p@h") == "mqtt://u:***@h"
    assert redact("mqtt://h:1883") == "mqtt://h:1883"
