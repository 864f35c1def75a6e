"""Tracks: GeoJSON, thinned to max_points keeping the ends and every zone crossing, on a
week at one fix per 30 s (20,160 fixes). How fast that week is served is measured by
`probation bench api` (the `track_week` figure), not here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from fastapi.testclient import TestClient

from probation.tracks.service import thin
from tests.integration._api import World

WEEK_END = datetime(2026, 11, 23, tzinfo=UTC)
WEEK_START = WEEK_END - timedelta(days=7)

pytest_plugins = ["tests.integration._api_fixtures"]


def _week_of_fixes(database_url: str, device_id: uuid.UUID, case_id: uuid.UUID) -> None:
    """20,160 fixes: laps of a ~2 km ellipse centred on the east edge of the zone SQUARE, so
    the track enters and leaves the zone once per lap (4 h), plus GPS noise."""
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute("UPDATE device_assignments SET assigned_at = %s WHERE case_id = %s",
                  (WEEK_START - timedelta(days=1), case_id))
        c.execute(
            """
            INSERT INTO fixes (device_id, seq, ts, lat, lon, acc)
            SELECT %(dev)s, 1000 + g, %(t0)s + g * interval '30 seconds',
                   43.21 + 0.008 * sin(g / 480.0 * 2 * pi()) + 0.00005 * sin(g * 7.1),
                   76.92 + 0.012 * cos(g / 480.0 * 2 * pi()) + 0.00005 * cos(g * 3.3),
                   5 + (g %% 20)
            FROM generate_series(0, 20159) AS g
            """,
            {"dev": device_id, "t0": WEEK_START},
        )


def test_week_track_is_thinned_keeping_what_matters(
    app_client: TestClient, world: World, database_url: str
) -> None:
    c, w = app_client, world
    _week_of_fixes(database_url, w.devices["off1"], w.cases["off1"])
    url = (f"/api/v1/cases/{w.cases['off1']}/track?from={WEEK_START.isoformat().replace('+00:00', 'Z')}"
           f"&to={WEEK_END.isoformat().replace('+00:00', 'Z')}")
    r = c.get(url, headers=w.h("off1"))
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "FeatureCollection"
    line, *points = body["features"]
    assert line["geometry"]["type"] == "LineString"
    assert line["properties"]["fixes"] == 20160
    assert len(points) == line["properties"]["points"] == 2000
    assert len(line["geometry"]["coordinates"]) == 2000
    assert points[0]["properties"]["ts"] == "2026-11-16T00:00:00.000Z"
    assert points[-1]["properties"]["ts"] == "2026-11-22T23:59:30.000Z"
    assert all(p["geometry"]["type"] == "Point" and isinstance(p["properties"]["acc"], float)
               for p in points)
    stamps = [p["properties"]["ts"] for p in points]
    assert stamps == sorted(stamps)
    # every crossing of the zone boundary is kept: each lap goes in and out once, and both
    # fixes around each crossing are kept
    crossings = [p for p in points if p["properties"]["crossing"]]
    assert len(crossings) >= 2 * 2 * 42
    # max_points, and the window
    small = c.get(url + "&max_points=50", headers=w.h("off1")).json()
    assert len(small["features"]) - 1 <= 50
    day = c.get(f"/api/v1/cases/{w.cases['off1']}/track?from=2026-11-16T00:00:00Z"
                f"&to=2026-11-16T01:00:00Z", headers=w.h("off1")).json()
    assert day["features"][0]["properties"]["fixes"] == 120
    assert len(day["features"]) == 121  # under max_points: every fix
    bad = c.get(f"/api/v1/cases/{w.cases['off1']}/track?from=2026-11-16T01:00:00Z"
                f"&to=2026-11-16T00:00:00Z", headers=w.h("off1"))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "to"


def test_empty_and_single_fix_tracks(app_client: TestClient, world: World) -> None:
    c, w = app_client, world
    r = c.get(f"/api/v1/cases/{w.cases['off1']}/track?from=2020-01-01T00:00:00Z"
              f"&to=2020-01-02T00:00:00Z", headers=w.h("off1"))
    assert r.status_code == 200
    line = r.json()["features"][0]
    assert line["geometry"] is None and line["properties"]["fixes"] == 0


def test_thinning_keeps_mandatory_points_and_the_shape() -> None:
    n = 10_000
    t = np.linspace(0, 6 * np.pi, n)
    x, y = t * 100, np.sin(t) * 1000
    keep = np.zeros(n, dtype=bool)
    keep[[10, 5000, 7777]] = True
    idx = thin(x, y, keep, 200)
    assert len(idx) == 200 and idx[0] == 0 and idx[-1] == n - 1
    assert {10, 5000, 7777} <= set(idx.tolist())
    assert np.all(np.diff(idx) > 0)
    # the thinned line stays close to the original (a sine of amplitude 1000)
    err = np.abs(np.interp(x, x[idx], y[idx]) - y).max()
    assert err < 20
    # straight lines thin to their ends
    assert thin(np.arange(5000.0), np.zeros(5000), np.zeros(5000, dtype=bool), 100).tolist() == [0, 4999]


def test_track_follows_the_case_across_a_device_swap(
    app_client: TestClient, world: World, database_url: str
) -> None:
    """Fixes belong to the case only while their device was assigned to it."""
    c, w = app_client, world
    t0 = datetime(2026, 11, 20, tzinfo=UTC)
    new_dev = uuid.uuid4()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE device_assignments SET assigned_at = %s, unassigned_at = %s "
                     "WHERE case_id = %s", (t0 - timedelta(days=1), t0 + timedelta(hours=1),
                                            w.cases["off1"]))
        conn.execute("INSERT INTO devices (id, serial, kind) VALUES (%s, 'BR-swap', 'bracelet')",
                     (new_dev,))
        conn.execute("INSERT INTO device_assignments (id, device_id, case_id, assigned_at) "
                     "VALUES (%s, %s, %s, %s)", (uuid.uuid4(), new_dev, w.cases["off1"],
                                                 t0 + timedelta(hours=1)))
        for dev, lon in ((w.devices["off1"], 76.0), (new_dev, 77.0)):  # 2 h of each, 1/min
            conn.execute(
                "INSERT INTO fixes (device_id, seq, ts, lat, lon, acc) SELECT %s, 5000 + g, "
                "%s + g * interval '1 minute', 43.0, %s, 5 FROM generate_series(0, 119) g",
                (dev, t0, lon))
    r = c.get(f"/api/v1/cases/{w.cases['off1']}/track?from=2026-11-20T00:00:00Z"
              f"&to=2026-11-20T03:00:00Z", headers=w.h("off1"))
    line, *points = r.json()["features"]
    assert line["properties"]["fixes"] == 60 + 60  # old device's first hour, new device's second
    lons = [p["geometry"]["coordinates"][0] for p in points]
    assert lons == [76.0] * 60 + [77.0] * 60
    stamps = [p["properties"]["ts"] for p in points]
    assert stamps == sorted(stamps) and len(set(stamps)) == 120
