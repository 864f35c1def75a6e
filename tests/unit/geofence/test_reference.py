"""The vectorised engine against the per-fix reference implementation of the rules.

Random small worlds (home curfew with random windows and exceptions in Almaty or
London time, exclusion polygons with holes and buffers, circles, a shared zone),
random walks with mixed accuracy and sampling intervals, split into random batches.
Every transition (open/update/close, inferred or not, with its evidence) must match.
``GF_SEEDS=500`` runs more worlds (default 40).
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from geofence import (
    CaseZones,
    EngineState,
    FixBatch,
    GeofenceConfig,
    ZoneEntry,
    advance,
    compile_zone,
)

from .helpers import DAYS, Reference, RefFix, RefZone, canon, circle_zone, ll, ring, star


def _schedule(rng: np.random.Generator) -> dict[str, Any] | None:
    if rng.random() < 0.2:
        return None
    wins = []
    for _ in range(int(rng.integers(1, 3))):
        days = [d for d in DAYS if rng.random() < 0.6] or ["mon"]
        s = int(rng.integers(0, 24 * 4)) * 15
        e = int(rng.integers(0, 24 * 4)) * 15
        wins.append(
            {
                "days": days,
                "start": f"{s // 60:02d}:{s % 60:02d}",
                "end": f"{e // 60:02d}:{e % 60:02d}",
            }
        )
    return {"windows": wins}


def make_world(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    dst = rng.random() < 0.5
    t0 = (
        int(datetime(2026, 3, 28, 22, 0, tzinfo=UTC).timestamp() * 1000)
        if dst
        else int(datetime(2026, 6, 10, 14, 0, tzinfo=UTC).timestamp() * 1000)
    )
    span = int(rng.integers(2, 30)) * 3_600_000
    shared_c = rng.uniform(-600, 600, 2)
    shared = RefZone(
        "shared",
        compile_zone(
            zone_id="shared",
            kind="exclusion",
            geometry={"type": "Polygon", "coordinates": [ring(star(rng, *shared_c, 150, 10))]},
            buffer_m=float(rng.choice([0.0, 60.0])),
        ),
    )
    cases: dict[str, tuple[str, list[RefZone]]] = {}
    centres: list[tuple[float, float]] = [tuple(shared_c)]
    for c in range(int(rng.integers(1, 4))):
        tz = str(rng.choice(["Asia/Almaty", "Europe/London"]))
        home = rng.uniform(-800, 800, 2)
        exc: list[tuple[int, int]] = []
        if rng.random() < 0.4:
            a = t0 + int(rng.integers(0, span // 60_000)) * 60_000
            exc.append((a, a + int(rng.integers(10, 300)) * 60_000))
        zones = [
            RefZone(
                f"c{c}-home",
                compile_zone(
                    zone_id=f"c{c}-home",
                    kind="inclusion",
                    geometry={"type": "Polygon", "coordinates": [ring(star(rng, *home, 120, 12))]},
                ),
                _schedule(rng),
                exc,
            ),
        ]
        ex_c = home + rng.normal(0, 400, 2)
        outer = star(rng, *ex_c, float(rng.uniform(120, 300)), 16)
        hole = [
            (ex_c[0] + 25 * math.cos(a), ex_c[1] + 25 * math.sin(a))
            for a in np.linspace(2 * math.pi, 0, 6, endpoint=False)
        ]
        zones.append(
            RefZone(
                f"c{c}-excl",
                compile_zone(
                    zone_id=f"c{c}-excl",
                    kind="exclusion",
                    geometry={"type": "Polygon", "coordinates": [ring(outer), ring(hole)]},
                    buffer_m=float(rng.choice([0.0, 80.0])),
                ),
                _schedule(rng) if rng.random() < 0.3 else None,
            )
        )
        cc = home + rng.normal(0, 400, 2)
        zones.append(
            RefZone(
                f"c{c}-circle",
                compile_zone(
                    zone_id=f"c{c}-circle",
                    kind="exclusion",
                    circle=circle_zone(*cc, float(rng.uniform(30, 150))),
                    buffer_m=float(rng.choice([0.0, 100.0])),
                ),
            )
        )
        zones.append(shared)
        cases[f"case-{c}"] = (tz, zones)
        centres += [tuple(home), tuple(ex_c), tuple(cc)]
    # Trajectories: one or two devices per case.
    fixes: list[RefFix] = []
    for cid in cases:
        for dv in range(1 if rng.random() < 0.7 else 2):
            dev = f"{cid}-d{dv}"
            t = t0 + int(rng.integers(0, 3_600_000))
            x, y = centres[int(rng.integers(0, len(centres)))]
            while t < t0 + span:
                r = rng.random()
                if r < 0.05:
                    x, y = centres[int(rng.integers(0, len(centres)))]
                    x += rng.normal(0, 60)
                    y += rng.normal(0, 60)
                else:
                    x += rng.normal(0, 40)
                    y += rng.normal(0, 40)
                u = rng.random()
                acc = (
                    float(rng.uniform(3, 40))
                    if u < 0.8
                    else float(rng.uniform(40, 200))
                    if u < 0.95
                    else float(rng.uniform(600, 2000))
                )
                la, lo = ll(x, y)
                fixes.append(RefFix(dev, cid, t, float(la), float(lo), acc))
                t += int(rng.choice([20_000, 60_000, 180_000, 420_000, 900_000, 2_400_000]))
    # Sometimes a device is reassigned to another case halfway (keys are per device+case).
    if len(cases) >= 2 and rng.random() < 0.3:
        mine = [f for f in fixes if f.device == "case-0-d0"]
        for f in mine[len(mine) // 2 :]:
            f.case = "case-1"
    return {"cases": cases, "fixes": fixes, "rng": rng}


def registry(cases: dict[str, tuple[str, list[RefZone]]], shared_min: int) -> CaseZones:
    zones: dict[str, ZoneEntry] = {}
    att: dict[str, list[str]] = {}
    for cid, (_, zs) in cases.items():
        for z in zs:
            zones[z.zone_id] = ZoneEntry.make(z.compiled, z.schedule, z.exceptions)
            att.setdefault(z.zone_id, []).append(cid)
    return CaseZones(
        {c: tz for c, (tz, _) in cases.items()},
        zones,
        att,
        shared_min_cases=shared_min,
        near_m=60.0,
        grid_cell_m=200.0,
    )


def to_batch(reg: CaseZones, fixes: list[RefFix]) -> FixBatch:
    return FixBatch.from_columns(
        reg,
        [f.case for f in fixes],
        [f.device for f in fixes],
        np.array([f.ts for f in fixes], np.int64),
        [f.lat for f in fixes],
        [f.lon for f in fixes],
        [f.acc for f in fixes],
    )


@pytest.mark.parametrize("seed", range(int(__import__("os").environ.get("GF_SEEDS", "40"))))
def test_engine_matches_reference(seed: int) -> None:
    w = make_world(seed)
    rng: np.random.Generator = w["rng"]
    fixes: list[RefFix] = sorted(w["fixes"], key=lambda f: f.ts)
    reg = registry(w["cases"], shared_min=int(rng.choice([1, 2, 8])))
    cuts = sorted(set(int(c) for c in rng.integers(0, len(fixes) + 1, int(rng.integers(0, 4)))))
    bounds = [0, *cuts, len(fixes)]
    ref = Reference(w["cases"])
    state = EngineState.empty()
    got: list[dict[str, Any]] = []
    want: list[dict[str, Any]] = []
    for a, b in itertools.pairwise(bounds):
        if a == b:
            continue
        part = fixes[a:b]
        order = rng.permutation(len(part))  # arrival order does not matter
        shuffled = [part[i] for i in order]
        state, tr = advance(state, to_batch(reg, shuffled), reg, GeofenceConfig(threads=1))
        got += tr.records()
        want += ref.run(part)
        if rng.random() < 0.5:
            state = EngineState.from_dict(state.to_dict())
    assert canon(got) == canon(want)
