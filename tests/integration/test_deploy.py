"""compose.yaml and the broker's production configuration (no Docker engine here).

The shipped broker configuration is probed on a real mosquitto (its run.sh, conf and acl,
with ports and paths rewritten for a private instance) in tests/security/test_mqtt_broker.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from probation.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_services_and_images() -> None:
    services = _compose()["services"]
    assert services["db"]["image"].startswith("timescale/timescaledb:") and "pg17" in services["db"]["image"]
    assert services["mqtt"]["image"] == "eclipse-mosquitto:2"
    for name in ("api", "ingest", "scheduler"):
        assert services[name]["build"] == "."
        assert "healthcheck" in services["db"] and "healthcheck" in services["mqtt"]
    assert services["api"]["command"][0] == "api"
    assert services["ingest"]["command"] == ["ingest"]
    assert services["scheduler"]["command"] == ["scheduler"]
    assert set(_compose()["volumes"]) >= {"pgdata", "mqttdata"}


def test_compose_env_names_are_settings() -> None:
    fields = {f"PROBATION_{name.upper()}" for name in Settings.model_fields}
    for name, svc in _compose()["services"].items():
        for key in (svc.get("environment") or {}):
            if key.startswith("PROBATION_"):
                assert key in fields, f"{name}: {key} is not a setting"


def test_compose_holds_no_secret() -> None:
    text = (ROOT / "compose.yaml").read_text()
    for m in re.finditer(r"(PASSWORD|SECRET|KEY)[A-Z_]*:\s*(\S+)", text):
        value = m.group(2)
        assert value.startswith("${") or value.startswith("postgresql://") is False, m.group(0)
    for url in re.findall(r"(?:postgresql|mqtt)://[^\s]+", text):
        assert "${" in url, url


def test_broker_config_meets_the_contract() -> None:
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    assert re.search(r"^persistence true$", conf, re.M)
    assert re.search(r"^max_queued_messages 0$", conf, re.M)
    assert re.search(r"^max_inflight_messages 1000$", conf, re.M)
    assert re.search(r"^allow_anonymous false$", conf, re.M)
    assert re.search(r"^message_size_limit 262144$", conf, re.M)  # the contract's 256 KiB
    assert re.search(r"^listener 8883$\n^certfile ", conf, re.M)


def test_shipped_acl_is_the_generated_one() -> None:
    """deploy/mosquitto/acl and the embedded broker's ACL come from one function."""
    from devices.mqtt_auth import acl_text

    assert (ROOT / "deploy/mosquitto/acl").read_text() == acl_text("pm/v1")


def test_compose_publishes_plain_ports_on_loopback_only() -> None:
    services = _compose()["services"]
    assert services["mqtt"]["ports"] == ["127.0.0.1:1883:1883", "8883:8883"]
    api = services["api"]
    assert api["environment"]["PROBATION_TLS_CERT"] and api["environment"]["PROBATION_TLS_KEY"]
    assert "https://" in " ".join(api["healthcheck"]["test"])
