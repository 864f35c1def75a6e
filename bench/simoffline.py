"""`probation bench sim-offline`: the simulator's fixes through the geofence engine in this
process (no broker, no database, no pacing), for a quick look at the zone alerts a GPS
model causes.

The simulator runs offline (`Simulator.run_offline`) with the short soak's plan (21:00
start, raised violation rates; ``--start`` takes an RFC 3339 time instead: "21:00" is the
latest 21:00 in Almaty that lets the run end before now, so a day's figures and the next
day's differ: the weekday, hence the plan, moves); its published fixes go in time order,
in batches, through `geofence.engine.advance` with each person's home (curfew) and
exclusion zone. An opening
whose first fix lies outside every truth record of its case and type (± 5 minutes, as
`simulator.score` matches zone alerts) and of every stretch the person really was on the
zone's wrong side (`real_not_due`: the truth's replay of the rules did not make it due) is
a false alarm; the ones within 5 minutes of a noise burst of the realistic model are
counted apart. A truth of the soak's bar (an
exclusion entry, a curfew break over 2 minutes) with no opening of its case and type
within those 5 minutes is missed (`bar_missed`; `examples` lists the first ones;
`bar_missed_held_at_end`: of them, those whose device is in a hold when the run ends,
a reappearance the rules are still waiting on, `geofence.outliers`). Not
modelled: rapid mode (no downlink), late uploads' re-evaluation, the reopening of alerts
(the database's part).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.violations import Rates

if TYPE_CHECKING:
    from geofence.engine.config import GeofenceConfig
    from simulator.run import SimConfig

SOAK_RATES = Rates(curfew=8.0, exclusion=4.0, strap=1.0, power_off=1.0, gap=2.0)
TOLERANCE_S = 300.0


class _Fixes:
    def __init__(self) -> None:
        self.by_serial: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if topic.endswith("/fixes"):
            self.by_serial[topic.split("/")[-2]] += json.loads(payload)["fixes"]


def engine_openings(cfg: SimConfig, config: GeofenceConfig | None = None
                    ) -> tuple[list[dict[str, Any]], int, dict[str, float]]:
    """Run the simulator offline (`cfg`, its truth written to ``cfg.truth``) and its
    published fixes, in time order, in batches as the ingest worker would cut them,
    through `geofence.engine.advance` with each person's home (curfew) and exclusion
    zone; the engine's openings (`Transitions.records`, kind ``open``), the number
    of fixes and the cases whose device is in a hold when the run ends, with the
    hold's start (epoch s; its fixes count but have not confirmed yet: what they
    open comes after the run)."""
    from geofence import CaseZones, EngineState, FixBatch, advance, compile_zone
    from geofence.engine.config import DEFAULT_CONFIG
    from simulator.run import Simulator, TruthWriter
    from simulator.setup import CURFEW_SCHEDULE, Registered

    sink = _Fixes()
    sim = Simulator(cfg, sink=sink)
    world = sim.plan()
    sim.use_registry([Registered(i, "s", f"c{i}", f"d{i}", f"B{i}", None, None, f"h{i}",
                                 f"e{i}", "o") for i in range(cfg.people)])
    sim.truth = TruthWriter(cfg.truth)
    sim.run_offline()
    sim.truth.close()
    cases = {}
    for p in world.people:
        home = compile_zone(zone_id=f"h{p.index}", kind="inclusion",
                            circle={"center": [p.home.lon, p.home.lat],
                                    "radius_m": p.home_radius_m})
        excl = compile_zone(zone_id=f"e{p.index}", kind="exclusion", **p.exclusion.geojson())  # type: ignore[arg-type]
        cases[f"c{p.index}"] = ("Asia/Almaty", [(f"h{p.index}", home, CURFEW_SCHEDULE, None),
                                                (f"e{p.index}", excl, None, None)])
    reg = CaseZones.from_cases(cases)
    recs = sorted(
        ({"case_id": f"c{s[1:]}", "device_id": s, "ts": f["ts"], "lat": f["lat"],
          "lon": f["lon"], "acc": f["acc"]} for s, fl in sink.by_serial.items() for f in fl),
        key=lambda r: r["ts"],
    )
    state = EngineState.empty()
    opened: list[dict[str, Any]] = []
    for k in range(0, len(recs), 5_000):
        state, tr = advance(state, FixBatch.from_records(reg, recs[k:k + 5_000]), reg,
                            config or DEFAULT_CONFIG)
        opened += [o for o in tr.records() if o["kind"] == "open"]
    holding = {f"c{str(d)[1:]}": since / 1000 for d, h, since in zip(
        state.o_id.tolist(), state.col("o_hold").tolist(), state.col("o_since").tolist(),
        strict=True) if h and since}
    return opened, len(recs), holding


def run_offline(*, model: str, fix_interval_s: float = 60.0, people: int = 200,
                sim_hours: float = 2.0, seed: int = 1, start: str = "21:00",
                rates: Rates = SOAK_RATES, config: GeofenceConfig | None = None,
                examples: int = 20) -> dict[str, Any]:
    from simulator.run import SimConfig
    from simulator.score import CURFEW_BAR_S, parse_truth

    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="probation-simoffline-"))
    speed = 60.0
    cfg = SimConfig(mqtt="unused", people=people, speed=speed, duration_s=sim_hours * 3600 / speed,
                    seed=seed, truth=tmp / "truth.jsonl", start=start, rates=rates,
                    gps_model=model, fix_interval_s=fix_interval_s)
    records, n_fixes, holding = engine_openings(cfg, config)
    opened = [(o["case_id"], o["alert_type"], o["first_fix"]["ts"] / 1000, bool(o.get("inferred")))
              for o in records]
    run = parse_truth(cfg.truth.read_text().splitlines())
    truths: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    barred: list[tuple[str, str, float, float]] = []  # the soak bar's truths
    for t in run.truths:
        if t.type not in ("inclusion_zone_left", "exclusion_zone_entered"):
            continue
        truths[(t.case_id, t.type)].append((t.start, t.end or 0.0))
        if t.type == "exclusion_zone_entered" or (t.raw.get("duration_s") or 0) > CURFEW_BAR_S:
            barred.append((t.case_id, t.type, t.start, t.end or 0.0))
    wrong: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for c, typ, a, b in run.wrong_side:
        wrong[(c, typ)].append((a, b))
    bursts: dict[str, list[tuple[float, float]]] = defaultdict(list)
    kinds: dict[str, int] = defaultdict(int)
    for c, kind, a, b in run.noise:
        bursts[c].append((a, b))
        kinds[kind] += 1

    def near(t: float, spans: list[tuple[float, float]]) -> bool:
        return any(a - TOLERANCE_S <= t <= b + TOLERANCE_S for a, b in spans)

    missed = [t for t in barred
              if not any(o[0] == t[0] and o[1] == t[1] and near(o[2], [(t[2], t[3])])
                         for o in opened)]
    # an opening that starts in the run's tail (after the scored window) and matches no
    # truth is not scored (`simulator.score`: after the run)
    unmatched = [o for o in opened if not near(o[2], truths[(o[0], o[1])])
                 and o[2] <= run.sim_end]
    # on the wrong side for real, though the simulator's rules did not make it due
    real = [o for o in unmatched if near(o[2], wrong[(o[0], o[1])])]
    false = [o for o in unmatched if not near(o[2], wrong[(o[0], o[1])])]
    noisy = [o for o in false if near(o[2], bursts[o[0]])]
    by_type: dict[str, int] = defaultdict(int)
    for o in false:
        by_type[o[1] + (" (inferred)" if o[3] else "")] += 1
    pdays = people * sim_hours / 24
    return {
        "gps_model": model, "fix_interval_s": fix_interval_s, "people": people, "seed": seed,
        "sim_hours": sim_hours, "start": start,
        "sim_start": datetime.fromtimestamp(run.sim_start, UTC).isoformat(),
        "person_days": round(pdays, 2), "fixes": n_fixes,
        "noise_bursts": dict(kinds), "openings": len(opened),
        "truths": sum(len(v) for v in truths.values()),
        "real_not_due": len(real),
        "false_alarms": len(false), "false_alarms_per_person_day": round(len(false) / pdays, 3),
        "false_alarms_by_type": dict(by_type), "false_alarms_near_noise": len(noisy),
        "bar_truths": len(barred), "bar_missed": len(missed),
        "bar_missed_held_at_end": sum(1 for t in missed if t[0] in holding
                                      and (t[3] or math.inf) >= holding[t[0]] - TOLERANCE_S),
        "examples": {"missed": missed[:examples], "false_alarms": false[:examples]},
        "seconds": round(time.monotonic() - t0, 1),
    }


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> None:
    import argparse

    from bench.harness import write_json

    p = argparse.ArgumentParser(prog="probation bench sim-offline")
    p.add_argument("--gps-model", nargs="*", default=["simple", "realistic"])
    p.add_argument("--fix-interval", nargs="*", type=float, default=[60.0, 30.0])
    p.add_argument("--people", type=int, default=200)
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", default="21:00",
                   help="HH:MM in Almaty (the latest that ends before now) or RFC 3339")
    p.add_argument("--json", type=Path, default=Path("bench-results/sim-offline.json"))
    args = p.parse_args(argv)
    results = []
    for model in args.gps_model:
        for fi in args.fix_interval:
            r = run_offline(model=model, fix_interval_s=fi, people=args.people,
                            sim_hours=args.hours, seed=args.seed, start=args.start)
            results.append(r)
            out(f"{model:<9} fixes every {fi:g} s from {r['sim_start']}: "
                f"{r['person_days']} person-days, "
                f"{r['truths']} truths, {r['openings']} openings, false alarms "
                f"{r['false_alarms']} = {r['false_alarms_per_person_day']} per person-day "
                f"{r['false_alarms_by_type']}, near a noise burst {r['false_alarms_near_noise']}"
                f", on a real wrong-side stretch not due {r['real_not_due']}"
                f"; bar truths {r['bar_truths']}, missed {r['bar_missed']}"
                f" ({r['bar_missed_held_at_end']} held when the run ends)"
                f" (bursts {r['noise_bursts']}; {r['seconds']} s)")
    write_json(args.json, {"runs": results})
    out(f"written {args.json}")


if __name__ == "__main__":
    main()
