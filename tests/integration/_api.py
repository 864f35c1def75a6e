"""Helpers of the API tests: a small world of users, people, cases, devices, zones, fixes
and alerts across two supervisors' teams, alerts, a uvicorn runner. The fixtures are in
`tests/integration/_api_fixtures.py` (a test module names it in `pytest_plugins`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

import psycopg

from probation.subjects.iin import make_iin

__all__ = ["PASSWORD", "SQUARE", "World", "auth", "insert_alert", "make_world", "running_server"]

PASSWORD = "correct-horse-battery"


@lru_cache(maxsize=1)
def password_hash() -> str:
    from probation.users.security import hash_password

    return hash_password(PASSWORD)


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


@dataclass
class World:
    """Who and what exists; `tokens[name]` signs in as that user."""

    users: dict[str, uuid.UUID] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    cases: dict[str, uuid.UUID] = field(default_factory=dict)
    subjects: dict[str, uuid.UUID] = field(default_factory=dict)
    devices: dict[str, uuid.UUID] = field(default_factory=dict)
    zones: dict[str, uuid.UUID] = field(default_factory=dict)
    alerts: dict[str, uuid.UUID] = field(default_factory=dict)
    audit_ids: dict[str, int] = field(default_factory=dict)

    def h(self, who: str, **extra: str) -> dict[str, str]:
        return auth(self.tokens[who], **extra)


def insert_alert(
    conn: psycopg.Connection[Any], *, case_id: uuid.UUID, device_id: uuid.UUID | None = None,
    zone_id: uuid.UUID | None = None, type: str = "exclusion_zone_entered",
    severity: str = "critical", status: str = "open", episode_open: bool = True,
    started_at: datetime | None = None,
) -> uuid.UUID:
    aid = uuid.uuid4()
    started = started_at or datetime.now(UTC) - timedelta(minutes=5)
    conn.execute(
        "INSERT INTO alerts (id, case_id, device_id, zone_id, type, severity, status, "
        "episode_key, episode_open, started_at, evidence) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (aid, case_id, device_id, zone_id, type, severity, status, f"k-{aid}", episode_open,
         started, json.dumps({"first_fix": {"lat": 43.25, "lon": 76.9}, "max_depth_m": 42.0})),
    )
    conn.execute(
        "INSERT INTO alert_events (alert_id, kind, data) VALUES (%s, 'opened', '{}')", (aid,)
    )
    return aid


SQUARE = {
    "type": "Polygon",
    "coordinates": [[[76.90, 43.20], [76.92, 43.20], [76.92, 43.22], [76.90, 43.22], [76.90, 43.20]]],
}


def make_world(database_url: str, settings: Any) -> World:
    """Two teams: sup1 supervises off1 and off2, sup2 supervises off3; an admin. Each officer
    (and sup1) has one active case with a device, a zone, fixes and an open alert."""
    from probation.users.auth import create_access_token
    from probation.users.models import Role, User

    w = World()
    roles = {"admin": "admin", "sup1": "supervisor", "sup2": "supervisor", "off1": "officer",
             "off2": "officer", "off3": "officer"}
    sup_of = {"off1": "sup1", "off2": "sup1", "off3": "sup2"}
    now = datetime.now(UTC)
    with psycopg.connect(database_url, autocommit=True) as c:
        for name, role in roles.items():
            uid = uuid.uuid4()
            w.users[name] = uid
            row = c.execute(
                "INSERT INTO users (id, username, password_hash, role, full_name, supervisor_id) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING tokens_valid_after",
                (uid, name, password_hash(), role, name.upper(),
                 w.users.get(sup_of.get(name, ""), None)),
            ).fetchone()
            assert row is not None
            user = User(id=uid, username=name, password_hash="", role=Role(role),
                        tokens_valid_after=row[0])
            w.tokens[name] = create_access_token(user, settings)[0]
        for i, owner in enumerate(("off1", "off2", "off3", "sup1"), start=1):
            sid, cid, did, zid = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
            born = date(1980 + i, 1 + i, 10 + i)
            c.execute(
                "INSERT INTO subjects (id, iin, full_name, birth_date) VALUES (%s, %s, %s, %s)",
                (sid, make_iin(born, serial=100 + i), f"Person {owner}", born),
            )
            c.execute(
                "INSERT INTO cases (id, subject_id, officer_id, court_order_ref, starts_on, "
                "ends_on, risk_level) VALUES (%s, %s, %s, %s, %s, %s, 'high')",
                (cid, sid, w.users[owner], f"ORD-{i}", date(2026, 1, 1), date(2027, 1, 1)),
            )
            c.execute("INSERT INTO devices (id, serial, kind, online, battery, last_seen) "
                      "VALUES (%s, %s, 'bracelet', true, 80, now())", (did, f"BR-{owner}"))
            c.execute(
                "INSERT INTO device_assignments (id, device_id, case_id, assigned_at) "
                "VALUES (%s, %s, %s, %s)", (uuid.uuid4(), did, cid, now - timedelta(days=30)),
            )
            c.execute(
                "INSERT INTO zones (id, name, kind, geometry) VALUES (%s, %s, 'exclusion', %s)",
                (zid, f"zone {owner}", json.dumps(SQUARE)),
            )
            c.execute("INSERT INTO case_zones (case_id, zone_id) VALUES (%s, %s)", (cid, zid))
            with c.cursor() as cur:
                cur.executemany(
                    "INSERT INTO fixes (device_id, seq, ts, lat, lon, acc) "
                    "VALUES (%s, %s, %s, %s, %s, 8)",
                    [(did, k, now - timedelta(minutes=60 - k), 43.19 + k * 0.001, 76.91)
                     for k in range(60)],
                )
            c.execute(
                "INSERT INTO device_events (device_id, seq, ts, type) VALUES (%s, 1, %s, 'strap_open')",
                (did, now - timedelta(minutes=10)),
            )
            w.subjects[owner] = sid
            w.cases[owner] = cid
            w.devices[owner] = did
            w.zones[owner] = zid
            w.alerts[owner] = insert_alert(c, case_id=cid, device_id=did, zone_id=zid)
    return w


@contextmanager
def running_server(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free port in a thread (for streaming responses)."""
    import threading
    import time

    import uvicorn

    from db.server import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
