"""The live positions stream (the console's map): each case's newest fix as it is stored,
within the caller's scope, with the token in the query as a browser's EventSource sends it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import orjson
import psycopg
from fastapi.testclient import TestClient

from tests.integration._api import World, running_server
from tests.integration.test_api_alerts import _next_event, _Reader

pytest_plugins = ["tests.integration._api_fixtures"]


class _Positions(_Reader):
    def __init__(self, base: str, token: str) -> None:
        super().__init__(base, token, in_query=True)
        self.path = self.path.replace("/alerts/stream", "/positions/stream")


def _fix(conn: psycopg.Connection[bytes], device: object, seq: int, ts: datetime,
         lat: float) -> None:
    conn.execute("INSERT INTO fixes (device_id, seq, ts, lat, lon, acc) "
                 "VALUES (%s, %s, %s, %s, 76.91, 9)", (device, seq, ts, lat))


def test_positions_stream_scoped_newest_only(app_client: TestClient, world: World,
                                             database_url: str) -> None:
    w = world
    with running_server(app_client.app) as base:
        bad = httpx.get(f"{base}/api/v1/positions/stream?access_token=x", timeout=5)
        assert bad.status_code == 401
        reader = _Positions(base, w.tokens["off1"])
        reader.start()
        assert reader.q.get(timeout=5)[1] == 200
        assert reader.q.get(timeout=5) == ("comment", ": connected")
        now = datetime.now(UTC)
        with psycopg.connect(database_url, autocommit=True) as conn:
            _fix(conn, w.devices["off3"], 1000, now, 43.3)  # another officer's person
            _fix(conn, w.devices["off1"], 1000, now, 43.2501)
        event = _next_event(reader.q)
        data = orjson.loads(event["data"])
        assert event["event"] == "position"
        assert data["case_id"] == str(w.cases["off1"]) and data["lat"] == 43.2501
        with psycopg.connect(database_url, autocommit=True) as conn:
            # a late fix older than the one sent moves nothing; a newer one does
            _fix(conn, w.devices["off1"], 1001, now - timedelta(minutes=5), 43.1)
            _fix(conn, w.devices["off1"], 1002, now + timedelta(seconds=1), 43.2502)
        data = orjson.loads(_next_event(reader.q)["data"])
        assert data["lat"] == 43.2502
        reader.close()
