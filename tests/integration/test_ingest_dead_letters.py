"""The dead-letter store as admins read it: `GET /api/v1/dead-letters` and `probation dead-letters`."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
from fastapi.testclient import TestClient

from devices.ingest import IngestWorker
from devices.pipeline import fingerprint
from simulator.publisher import Publisher
from tests.integration._api import World
from tests.integration.test_ingest import add_device, dead_letters, start_worker, wait_for

pytest_plugins = ["tests.integration._api_fixtures"]
__all__ = ["start_worker"]  # the fixture, shared with test_ingest


def _insert(url: str, n: int, *, reason: str = "not_json", payload: bytes = b"{oops",
            received_at: datetime | None = None) -> None:
    with psycopg.connect(url) as c:
        for i in range(n):
            c.execute(
                "INSERT INTO dead_letters (received_at, topic, reason, detail, item_index, "
                "payload, fingerprint) VALUES (coalesce(%s, now()), %s, %s, 'why', %s, %s, %s)",
                (received_at, f"pm/v1/devices/D{i}/fixes", reason, None if i % 2 else i, payload,
                 fingerprint(f"t{uuid.uuid4()}", i, payload)),
            )


def test_admins_page_through_dead_letters_others_may_not(
    app_client: TestClient, world: World, database_url: str,
) -> None:
    _insert(database_url, 3, reason="bad_type", payload=b"\xff\xfe not utf-8",
            received_at=datetime.now(UTC) - timedelta(days=2))
    _insert(database_url, 5)
    big = b'{"fixes": "' + b"x" * 10_000 + b'"}'
    _insert(database_url, 1, reason="too_large", payload=big)

    r = app_client.get("/api/v1/dead-letters?limit=4", headers=world.h("admin"))
    assert r.status_code == 200, r.text
    page = r.json()
    assert len(page["items"]) == 4 and page["next_cursor"]
    first = page["items"][0]
    assert first["reason"] == "too_large"  # newest first
    assert first["payload_size"] == len(big) and first["payload_truncated"] is True
    assert len(base64.b64decode(first["payload_base64"])) == 4096
    seen = [it["id"] for it in page["items"]]
    while page["next_cursor"]:
        r = app_client.get("/api/v1/dead-letters", params={"limit": 4, "cursor": page["next_cursor"]},
                           headers=world.h("admin"))
        page = r.json()
        seen += [it["id"] for it in page["items"]]
    assert len(seen) == len(set(seen)) == 9 and seen == sorted(seen, reverse=True)

    r = app_client.get("/api/v1/dead-letters", params={"reason": "bad_type"}, headers=world.h("admin"))
    items = r.json()["items"]
    assert len(items) == 3 and {it["reason"] for it in items} == {"bad_type"}
    assert base64.b64decode(items[0]["payload_base64"]) == b"\xff\xfe not utf-8"
    assert "\ufffd" in items[0]["payload"]

    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    r = app_client.get("/api/v1/dead-letters", params={"since": since}, headers=world.h("admin"))
    assert len(r.json()["items"]) == 6

    one = app_client.get(f"/api/v1/dead-letters/{first['id']}", headers=world.h("admin"))
    assert one.status_code == 200 and one.json()["payload_truncated"] is False
    assert base64.b64decode(one.json()["payload_base64"]) == big
    assert app_client.get("/api/v1/dead-letters/999999", headers=world.h("admin")).status_code == 404

    for who in ("off1", "sup1"):
        assert app_client.get("/api/v1/dead-letters", headers=world.h(who)).status_code == 403
    assert app_client.get("/api/v1/dead-letters").status_code == 401
    bad = app_client.get("/api/v1/dead-letters?reason=nonsense", headers=world.h("admin"))
    assert bad.status_code == 422
    with psycopg.connect(database_url) as c:
        assert c.execute(
            "SELECT count(*) FROM audit_log WHERE action LIKE 'dead_letter.%%'"
        ).fetchone() == (6,)  # 3 pages, 2 filtered lists, 1 read


def test_a_rejected_message_is_readable_through_the_api_and_the_cli(
    app_client: TestClient, world: World, database_url: str, mqtt_url: str, mqtt_prefix: str,
    start_worker: Callable[..., IngestWorker],
) -> None:
    add_device(database_url, "DL-1")
    start_worker()
    topic = f"{mqtt_prefix}/devices/DL-1/fixes"
    with Publisher(mqtt_url) as pub:
        pub.publish(topic, orjson.dumps({"fixes": [{"seq": 1, "ts": 0, "lat": 95, "lon": 1,
                                                    "acc": 3}]}))
    wait_for(lambda: bool(dead_letters(database_url)), what="the dead letter")
    items = app_client.get("/api/v1/dead-letters", headers=world.h("admin")).json()["items"]
    assert [(it["topic"], it["reason"], it["item_index"]) for it in items] == [
        (topic, "out_of_range", 0)]
    assert orjson.loads(items[0]["payload"])["lat"] == 95

    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBATION_")}
    env.update(PROBATION_DATABASE_URL=database_url, PROBATION_LOG_LEVEL="WARNING")
    out = subprocess.run(
        [sys.executable, "-m", "probation.cli", "dead-letters", "--reason", "out_of_range"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert "out_of_range" in out and topic in out and "item 0" in out and '"lat":95' in out
    out = subprocess.run(
        [sys.executable, "-m", "probation.cli", "dead-letters", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert [r["reason"] for r in rows] == ["out_of_range"]
