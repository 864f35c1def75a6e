"""The simulation: a seeded world, a real-time paced loop, MQTT traffic and truth records.

Clocks. Simulated time runs `speed` times faster than real time and fixes carry it in
`ts`. The backend rejects a `ts` more than 5 minutes ahead of its clock, so the
simulated clock starts at ``real start - speed x duration`` by default: it then reaches,
at the very end of the run, the moment the run started, and never passes the real clock.
`--start HH:MM` picks the latest such local time of day before that (to put a run of a
few simulated hours over a curfew night); `--start <RFC 3339>` any earlier instant.

What goes out, per device: a retained `status` online at the start; every
`fix_interval_s` a fix, uploaded every `upload_interval_s` (60/120/300 s by risk level) as
one `fixes` message of several fixes; events (tamper, power, battery, charging) right
away; nothing while switched off; everything buffered during a coverage gap, uploaded
late when it ends (the device keeps its `seq` and `ts`; half the devices send their
newest fixes first and backfill the older ones after, so the backend also sees fixes
older than the newest it has evaluated). Downlink commands are obeyed:
`set_interval` changes the rates (rapid mode), `request_checkin` is answered by the
person's phone with a face embedding close to the enrolled template (or deliberately
not, or with a bad one: the planned check-in violations), every command is acknowledged.

Truth (JSON lines, see `simulator.score` for the format): a `run` record,
then one `violation` record per alert the monitoring rules make due, written when it
becomes due; `noise_due` records for rule-due episodes without a real violation;
`noise` records for the realistic GPS model's spikes and multipath excursions (their
fixes are left out of the rule model, see `simulator.violations`); an `end` record. Real-clock violations (check-ins, communication lost) carry
``"clock": "real"``, the others ``"sim"``.
"""

from __future__ import annotations

import base64
import heapq
import json
import logging
import math
import queue
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import orjson

from simulator.faces import Frames
from simulator.gps import MAX_OUTAGE_S, NOISE_NAMES, SRC_GPS, SRC_NAMES, GpsModel
from simulator.people import (
    Person,
    Stay,
    Trajectory,
    build_trajectory,
    local_hours,
    make_people,
    plan_stays,
)
from simulator.setup import Registered, enrol_from_photos, template
from simulator.violations import (
    ZONE_ALERT,
    Due,
    Plan,
    Rates,
    RuleEvaluator,
    TruthBook,
    ground_truth,
    iso,
    plan_violations,
    truth_record,
)

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

MAX_ITEMS = 500  # per message (the contract's limit)
CHARGE_RATE = 50.0  # % per hour
LOW, CRITICAL = 20.0, 10.0
DEVICE_UPLOAD_S = {"high": 60.0, "medium": 120.0, "low": 300.0}  # simulated seconds
BACKEND_UPLOAD_S = {"high": 60.0, "medium": 120.0, "low": 300.0}  # the backend's defaults
CHECKIN_EARLY_S = 120.0  # a check-in counts for a request from 2 min before it (the backend's)


#: The longest a hold may wait: released at the latest 10 minutes after it began
#: (2 x `geofence.outliers.OutlierConfig.settle_s`; monitoring-rules.md "Holds").
HOLD_MAX_S = 600.0
#: The longest the rules may take to decide a violation that begins in a run's window:
#: the device may be dark when it begins (an outage, up to `MAX_OUTAGE_S`), and the fixes
#: it reappears with may be held (`HOLD_MAX_S`), then confirmed; 5 minutes more for fix
#: intervals and the confirmation. A run goes on this long after its window by default
#: (`SimConfig.tail_s`).
DECISION_TAIL_S = MAX_OUTAGE_S + HOLD_MAX_S + 300.0


@dataclass
class SimConfig:
    """Everything a run needs (the `probation simulate` options)."""

    mqtt: str
    api: str | None = None
    username: str = "admin"
    password: str = ""
    people: int = 100
    fix_interval_s: float = 60.0
    speed: float = 10.0
    duration_s: float = 600.0
    seed: int = 1
    truth: Path = Path("truth.jsonl")
    setup: bool = True
    setup_file: Path | None = None
    start: str = "auto"
    timezone: str = "Asia/Almaty"
    prefix: str = "pm/v1"
    phones: bool = True
    rates: Rates = field(default_factory=Rates)
    checkin_deadline_s: int = 300
    max_inflight: int = 1_000
    tick_s: float = 0.25
    setup_workers: int = 8
    obey_commands: bool = True
    comm_lost_min_s: float = 600.0
    backend_upload_s: dict[str, float] = field(default_factory=lambda: dict(BACKEND_UPLOAD_S))
    tag: str | None = None
    # check-ins as camera frames of real photos (v1.1) instead of app embeddings from
    # phones marked trusted (`simulator.faces`)
    checkin_frames: bool = False
    supervisor_id: str | None = None  # the simulated officers' supervisor
    gps_model: str = "realistic"  # simulator.gps.GPS_MODELS
    #: simulated seconds the run goes on after the scored window (`duration_s`): the rules
    #: may decide a violation late, and a run that stops at the window's end would cut
    #: that decision off (`DECISION_TAIL_S`). Nothing that starts in the tail is scored
    #: (`simulator.score`).
    tail_s: float = DECISION_TAIL_S

    @property
    def total_s(self) -> float:
        """Wall seconds the run lasts: the scored window and the tail."""
        return self.duration_s + self.tail_s / self.speed


class Sink(Protocol):
    """Where messages go (the MQTT `Publisher`, or a list in tests)."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...


@dataclass
class Progress:
    """A snapshot for the live display."""

    elapsed_s: float
    duration_s: float
    sim_time: float
    fixes: int
    fixes_per_s: float
    messages: int
    messages_per_s: float
    outstanding: int
    lag_s: float | None
    open_alerts: int | None
    truths: int
    noise_due: int
    phase: str = "running"


def resolve_start(spec: str, *, now: float, speed: float, duration_s: float, tz: ZoneInfo) -> float:
    """The simulated start (Unix seconds) for `--start`: auto, HH:MM (local) or RFC 3339."""
    latest = now - speed * duration_s
    if spec in ("", "auto"):
        return math.floor(latest)
    if len(spec) <= 5 and ":" in spec:
        hh, mm = (int(x) for x in spec.split(":"))
        d = datetime.fromtimestamp(latest, tz)
        cand = d.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if cand.timestamp() > latest:
            cand = (cand - timedelta(days=1)).replace(hour=hh, minute=mm)
        return cand.timestamp()
    t = datetime.fromisoformat(spec.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    if t.timestamp() > latest + 1:
        raise ValueError(f"--start {spec} is too late: at speed {speed} for {duration_s:.0f} s the "
                         f"simulated clock would pass the real one (latest: {iso(latest)})")
    return t.timestamp()


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    """The seeded plan: people, routines, trajectories, planned violations, ground truth."""

    people: list[Person]
    stays: list[list[Stay]]
    trajectories: list[Trajectory]
    plan: Plan
    book: TruthBook
    charges: list[tuple[float, float, int]]  # (start, end, person)
    sim_start: float
    sim_end: float

    @classmethod
    def build(cls, *, n: int, seed: int, sim_start: float, sim_end: float, tz: ZoneInfo,
              rates: Rates, plan_end: float | None = None) -> World:
        """People, their days and violations planned in [sim_start, plan_end) (default
        sim_end; a run's tail plans none: the same world with or without it)."""
        ss = np.random.SeedSequence(seed)
        s_places, s_routine, s_viol, s_paths, s_charge = ss.spawn(5)
        people = make_people(n, np.random.default_rng(s_places))
        plan_end = sim_end if plan_end is None else min(plan_end, sim_end)
        first = datetime.fromtimestamp(sim_start, tz).date() - timedelta(days=1)
        # a day more than the plan's last: a tail of up to a day has its stays
        days = (datetime.fromtimestamp(plan_end, tz).date() - first).days + 2
        r_routine = np.random.default_rng(s_routine)
        stays = [plan_stays(p, first, days, tz, r_routine) for p in people]
        plan = plan_violations(people, stays, start=sim_start, end=plan_end, rates=rates, tz=tz,
                               rng=np.random.default_rng(s_viol))
        r_paths = np.random.default_rng(s_paths)
        trajectories = [build_trajectory(p, st, plan.excursions[p.index], r_paths)
                        for p, st in zip(people, stays, strict=True)]
        book = TruthBook()
        for p, tr in zip(people, trajectories, strict=True):
            book.add(ground_truth(p, tr, plan.excursions[p.index], tz))
        r_charge = np.random.default_rng(s_charge)
        charges: list[tuple[float, float, int]] = []
        for p, st in zip(people, stays, strict=True):
            for s in st:
                if s.place.kind != "home" or s.end - s.start < 3_600:
                    continue
                h = local_hours(s.start, tz)
                if not 16.0 <= h <= 23.5 or r_charge.random() < rates.forget_charge:
                    continue
                a = s.start + r_charge.uniform(600, 5_400)
                if a < s.end - 600 and s.end > sim_start and a < sim_end:
                    charges.append((a, s.end - 300, p.index))
        return cls(people, stays, trajectories, plan, book, charges, sim_start, sim_end)


# --------------------------------------------------------------------------- truth file


class TruthWriter:
    """JSON lines, one per record, flushed as written (thread-safe)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f = path.open("w", encoding="utf-8")
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def write(self, rec: dict[str, Any]) -> None:
        line = orjson.dumps(rec).decode()
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()
            if rec.get("record") == "violation":
                self.counts[str(rec["type"])] += 1

    def close(self) -> None:
        with self._lock:
            self._f.close()


# --------------------------------------------------------------------------- the simulator


def _take(obs: Any, k: I64) -> Any:
    """The rows `k` of a `NoisyFixes`."""
    from dataclasses import fields, replace

    return replace(obs, **{f.name: getattr(obs, f.name)[k] for f in fields(obs)
                           if getattr(obs, f.name) is not None})


@dataclass(order=True)
class _Edge:
    t: float
    order: int
    kind: str = field(compare=False)
    person: int = field(compare=False)
    end: float = field(compare=False, default=0.0)


@dataclass(order=True)
class _Answer:
    due: float  # real time
    person: int = field(compare=False)
    request_id: str = field(compare=False)
    outcome: str = field(compare=False)  # pass, fail_face, fail_liveness; deadline: a check
    deadline: float = field(compare=False)
    requested: float = field(compare=False, default=0.0)
    challenge: str | None = field(compare=False, default=None)


class Simulator:
    """Runs one simulation against a broker (and the API for setup and probes)."""

    def __init__(self, cfg: SimConfig, *, sink: Sink | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> None:
        self.cfg = cfg
        self.tz = ZoneInfo(cfg.timezone)
        self.sink = sink
        self.on_progress = on_progress
        self.stop_event = threading.Event()
        self.world: World | None = None
        self.registry: list[Registered] = []
        # persons whose face is enrolled (all of them unless enrolment runs alongside)
        self.enrolled: set[int] | None = None
        self.truth: TruthWriter | None = None
        self.commands: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.lag_s: float | None = None
        self.lag_max_s = 0.0
        self.open_alerts: int | None = None
        self.stats: Counter[str] = Counter()
        self._threads: list[threading.Thread] = []
        self._api: Any = None
        self.sim_start = 0.0
        self.real_start = 0.0
        self.real_end = 0.0

    # -- set-up --------------------------------------------------------------------

    def plan(self, now: float | None = None) -> World:
        cfg = self.cfg
        now = time.time() if now is None else now
        self.sim_start = resolve_start(cfg.start, now=now, speed=cfg.speed,
                                       duration_s=cfg.total_s, tz=self.tz)
        sim_end = self.sim_start + cfg.speed * cfg.total_s
        t0 = time.monotonic()
        self.world = World.build(n=cfg.people, seed=cfg.seed, sim_start=self.sim_start,
                                 sim_end=sim_end, tz=self.tz, rates=cfg.rates,
                                 plan_end=self.window_end)
        log.info("planned %d people over %s .. %s (simulated) in %.1f s", cfg.people,
                 iso(self.sim_start), iso(sim_end), time.monotonic() - t0)
        return self.world

    def use_registry(self, registry: list[Registered]) -> None:
        if len(registry) != self.cfg.people:
            raise ValueError(f"the setup has {len(registry)} people, the run {self.cfg.people}")
        self.registry = sorted(registry, key=lambda r: r.person)
        self._serial_map: dict[str, tuple[int, bool]] = {}
        for r in self.registry:
            self._serial_map[r.bracelet] = (r.person, False)
            if r.phone:
                self._serial_map[r.phone] = (r.person, True)

    def on_downlink(self, topic: str, payload: bytes) -> None:
        """MQTT thread: queue a command for the loop."""
        self.commands.put((topic, payload))

    # -- state -----------------------------------------------------------------------

    def _init_state(self) -> None:
        assert self.world is not None
        w = self.world
        cfg = self.cfg
        n = cfg.people
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 99]))
        self.rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 101]))
        lens = np.array([len(t.t) for t in w.trajectories])
        self.off = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
        self.kt = np.concatenate([np.asarray(t.t) for t in w.trajectories])
        self.klat = np.concatenate([np.asarray(t.lat) for t in w.trajectories])
        self.klon = np.concatenate([np.asarray(t.lon) for t in w.trajectories])
        self.kin = np.concatenate([np.asarray(t.indoor, dtype=bool) for t in w.trajectories])
        self.cur = self.off[:-1].copy()
        self.last_knot = self.off[1:] - 2
        fi = float(cfg.fix_interval_s)
        self.fix_iv = np.full(n, fi)
        self.up_iv = np.array([max(DEVICE_UPLOAD_S[p.risk_level], fi) for p in w.people])
        self.next_fix = self.sim_start + rng.uniform(0, fi, n)
        self.next_up = self.sim_start + rng.uniform(0, 1, n) * self.up_iv
        self.on = np.ones(n, dtype=bool)
        self.gap = np.zeros(n, dtype=bool)
        self.planned_off = np.zeros(n, dtype=bool)
        self.depleted = np.zeros(n, dtype=bool)
        self.strap = np.zeros(n, dtype=bool)
        self.drain = rng.uniform(1.6, 2.4, n)
        # charged to 100 % around 21:00 the evening before (a day earlier if forgotten)
        since = (local_hours(self.sim_start, self.tz) - 21.0) % 24 + 24 * (
            rng.random(n) < cfg.rates.forget_charge)
        self.level = np.clip(100.0 - self.drain * since, 21.0, 100.0)
        self.bat_t = np.full(n, self.sim_start)
        self.charging = np.zeros(n, dtype=bool)
        self.low_sent = np.zeros(n, dtype=bool)
        self.crit_sent = np.zeros(n, dtype=bool)
        base = int(time.time()) * 10**7  # seq: increasing across runs of the same devices
        self.seq_fix = np.full(n, base, dtype=np.int64)
        self.seq_ev = np.full(n, base, dtype=np.int64)
        self.seq_ci = np.full(n, base, dtype=np.int64)
        self.fbuf: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        self.ebuf: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        self.ev_dirty: set[int] = set()
        self.gps = GpsModel.named(cfg.gps_model, n, np.random.SeedSequence([cfg.seed, 55]))
        self.rules = RuleEvaluator(w.people, self.tz)
        self.last_pub = np.zeros(n)  # real time of the last uplink (bracelet)
        self.comm_thr = np.array([
            max(3 * cfg.backend_upload_s.get(p.risk_level, 300.0), cfg.comm_lost_min_s)
            for p in w.people
        ])
        self.comm_open = np.zeros(n, dtype=bool)
        self.comm_start = np.zeros(n)
        self.answers: list[_Answer] = []
        self.passes: dict[int, list[float]] = {}  # person -> real times of passing check-ins
        self.seen_commands: set[str] = set()
        self.templates = [template(cfg.seed, i) for i in range(n)]
        self.frames = Frames(np.random.default_rng(cfg.seed + 99)) if cfg.checkin_frames else None
        self.last_frames: dict[int, list[bytes]] = {}
        edges: list[_Edge] = []
        k = 0
        for e in w.plan.events:
            pairs = {"strap": ("strap_open", "strap_closed"), "power_off": ("power_off", "power_on"),
                     "gap": ("gap_start", "gap_end")}[e.kind]
            edges.append(_Edge(e.start, k, pairs[0], e.person, e.end))
            edges.append(_Edge(e.end, k + 1, pairs[1], e.person))
            k += 2
        for a, b, p in w.charges:
            edges.append(_Edge(a, k, "charge_start", p, b))
            edges.append(_Edge(b, k + 1, "charge_end", p))
            k += 2
        edges.sort()
        self.edges = [e for e in edges if e.t >= self.sim_start]
        self.edge_ptr = 0
        self.probe = {r.person for r in self.registry[: min(20, len(self.registry))]}
        self.probe_slot: tuple[int, float, float] | None = None  # (person, newest ts, published)
        self.lag_samples: deque[float] = deque(maxlen=100_000)

    # -- the loop --------------------------------------------------------------------

    @property
    def window_end(self) -> float:
        """The scored window's simulated end (the run goes on for the tail after it)."""
        return self.sim_start + self.cfg.speed * self.cfg.duration_s

    def sim_now(self, real: float) -> float:
        return self.sim_start + self.cfg.speed * (real - self.real_start)

    def run(self, on_started: Callable[[], None] | None = None) -> None:
        """Publish the status, then run for `duration_s` real seconds and the tail (or until
        stopped)."""
        assert self.truth is not None and self.sink is not None
        cfg = self.cfg
        self._init_state()
        self.real_start = time.time()
        self.truth.write(self._run_record())
        self._wrong_side_records()
        if on_started is not None:
            on_started()
        for r in self.registry:
            self._status(r.person, "online", self.sim_start)
        self.last_pub[:] = self.real_start
        last_report = 0.0
        window: deque[tuple[float, int, int]] = deque(maxlen=64)
        while True:
            now = time.time()
            elapsed = now - self.real_start
            done = elapsed >= cfg.total_s or self.stop_event.is_set()
            target = self.sim_now(min(now, self.real_start + cfg.total_s))
            self._advance(target)
            self._commands(now, target)
            self._phones(now)
            self._upload(target, now)
            self._silence(now)
            if now - last_report >= 1.0 or done:
                last_report = now
                window.append((now, self.stats["fixes"], self.stats["messages"]))
                self._report(now, window)
            if done:
                break
            time.sleep(max(0.0, cfg.tick_s - (time.time() - now)))
        self.sim_end = target
        self._finish(time.time())

    def run_offline(self, step_s: float = 15.0) -> None:
        """The whole span as fast as possible, without pacing or downlink (tests, studies).

        Real-clock rules (communication lost) are not meaningful here and not tracked.
        """
        assert self.truth is not None and self.sink is not None
        self._init_state()
        self.real_start = time.time()
        self.truth.write(self._run_record())
        self._wrong_side_records()
        for r in self.registry:
            self._status(r.person, "online", self.sim_start)
        end = self.sim_start + self.cfg.speed * self.cfg.total_s
        t = self.sim_start
        while t < end:
            t = min(end, t + step_s)
            self._advance(t)
            self._upload(t, self.real_start + (t - self.sim_start) / self.cfg.speed)
        self.sim_end = end
        self.comm_open[:] = False
        self._finish(time.time())

    def _report(self, now: float, window: deque[tuple[float, int, int]]) -> None:
        if self.on_progress is None:
            return
        t0, f0, m0 = window[0]
        span = max(now - t0, 1e-9)
        _, f1, m1 = window[-1]
        out = getattr(self.sink, "outstanding", 0)
        assert self.truth is not None
        self.on_progress(Progress(
            elapsed_s=now - self.real_start, duration_s=self.cfg.total_s,
            sim_time=self.sim_now(min(now, self.real_start + self.cfg.total_s)),
            fixes=f1, fixes_per_s=(f1 - f0) / span if len(window) > 1 else 0.0,
            messages=m1, messages_per_s=(m1 - m0) / span if len(window) > 1 else 0.0,
            outstanding=int(out), lag_s=self.lag_s, open_alerts=self.open_alerts,
            truths=sum(self.truth.counts.values()), noise_due=len(self.world.book.noise_due)
            if self.world else 0,
        ))

    def _advance(self, target: float) -> None:
        while self.edge_ptr < len(self.edges) and self.edges[self.edge_ptr].t <= target:
            e = self.edges[self.edge_ptr]
            self._fixes_until(e.t)
            self._edge(e)
            self.edge_ptr += 1
        self._fixes_until(target)

    def _fixes_until(self, until: float) -> None:
        due = np.flatnonzero(self.on & (self.next_fix <= until))
        while due.size:
            ts = self.next_fix[due]
            self._emit_fixes(due, ts)
            self.next_fix[due] += self.fix_iv[due]
            due = due[self.on[due] & (self.next_fix[due] <= until)]

    def _positions(self, dev: I64, ts: F64) -> tuple[F64, F64, npt.NDArray[np.bool_], F64, F64]:
        cur = self.cur[dev]
        last = self.last_knot[dev]
        while True:
            adv = (cur < last) & (self.kt[np.minimum(cur + 1, self.kt.size - 1)] <= ts)
            if not adv.any():
                break
            cur = cur + adv
        self.cur[dev] = cur
        t0, t1 = self.kt[cur], self.kt[cur + 1]
        span = t1 - t0
        f = np.clip((ts - t0) / np.where(span > 0, span, 1.0), 0.0, 1.0)
        la0, la1 = self.klat[cur], self.klat[cur + 1]
        lo0, lo1 = self.klon[cur], self.klon[cur + 1]
        lat = la0 + f * (la1 - la0)
        lon = lo0 + f * (lo1 - lo0)
        dy = (la1 - la0) * 111_195.0
        dx = (lo1 - lo0) * 111_195.0 * np.cos(np.radians(la0))
        dist = np.hypot(dx, dy)
        moving = (span > 0) & (ts < t1)
        spd = np.where(moving, dist / np.where(span > 0, span, 1.0), 0.0)
        hdg = np.mod(np.degrees(np.arctan2(dx, dy)), 360.0)
        return lat, lon, self.kin[cur], spd, hdg

    def _emit_fixes(self, dev: I64, ts: F64) -> None:
        lat, lon, indoor, spd, hdg = self._positions(dev, ts)
        obs = self.gps.observe(dev, ts, lat, lon, indoor, still=spd < 0.3)
        self._battery(dev, ts)
        if obs.valid is not None and not obs.valid.all():  # no fix (an outage)
            k = np.flatnonzero(obs.valid)
            self.stats["fixes_not_obtained"] += int(dev.size - k.size)
            dev, ts, spd, hdg = dev[k], ts[k], spd[k], hdg[k]
            obs = _take(obs, k)
            if not dev.size:
                return
        clean = np.ones(dev.size, dtype=bool)
        if obs.noise is not None and obs.noise.any():
            self._noise(dev, ts, obs)
            clean = obs.noise == 0
        # the rules on the fixes that are not noise: truth treats every spike and
        # excursion fix as an outlier (see simulator.violations, "Noise")
        for due in self.rules.step(dev[clean], ts[clean], obs.lat[clean], obs.lon[clean],
                                   obs.acc[clean]):
            self._zone_due(due)
        seqs = self.seq_fix[dev].tolist()
        self.seq_fix[dev] += 1
        spd_obs = spd * (1 + 0.05 * self.rng.standard_normal(dev.size))
        rows = zip(dev.tolist(), seqs, (ts * 1000).astype(np.int64).tolist(),
                   np.round(obs.lat, 6).tolist(), np.round(obs.lon, 6).tolist(),
                   obs.acc.tolist(), obs.src.tolist(), np.round(np.maximum(spd_obs, 0), 1).tolist(),
                   np.round(hdg).astype(np.int64).tolist(), self.level[dev].astype(np.int64).tolist(),
                   strict=True)
        for p, seq, t, la, lo, acc, src, sp, hd, bat in rows:
            fix: dict[str, Any] = {"seq": seq, "ts": t, "lat": la, "lon": lo, "acc": acc,
                                   "src": SRC_NAMES[src], "bat": bat}
            if src == SRC_GPS:
                fix["spd"] = sp
                if sp >= 0.5:
                    fix["hdg"] = hd % 360
            self.fbuf[p].append(fix)
        self.stats["fixes"] += int(dev.size)

    def _noise(self, dev: I64, ts: F64, obs: Any) -> None:
        """Truth records of the noise bursts that start (spikes, multipath excursions)."""
        assert obs.noise is not None and obs.burst_start is not None
        self.stats["noise_fixes"] += int(np.count_nonzero(obs.noise))
        if self.truth is None:
            return
        for k in np.flatnonzero(obs.burst_start).tolist():
            p = int(dev[k])
            if p >= len(self.registry):
                continue
            r = self.registry[p]
            kind = NOISE_NAMES[int(obs.noise[k])]
            self.stats[f"noise_{kind}"] += 1
            self.truth.write({"record": "noise", "kind": kind, "case_id": r.case_id,
                              "serial": r.bracelet, "person": p, "start": iso(float(ts[k])),
                              "end": iso(float(obs.burst_end[k])),
                              "offset_m": round(float(obs.offset_m[k]), 1),
                              "acc": float(obs.acc[k])})

    # -- devices ---------------------------------------------------------------------

    def _event(self, p: int, t: float, type_: str, detail: dict[str, Any] | None = None) -> None:
        seq = int(self.seq_ev[p])
        self.seq_ev[p] += 1
        ev: dict[str, Any] = {"seq": seq, "ts": int(t * 1000), "type": type_}
        if detail:
            ev["detail"] = detail
        self.ebuf[p].append(ev)
        self.ev_dirty.add(p)
        self.stats[f"event_{type_}"] += 1

    def _truth(self, p: int, type_: str, start: float, end: float | None, clock: str = "sim",
               **detail: Any) -> None:
        assert self.truth is not None
        r = self.registry[p]
        self.truth.write(truth_record(type=type_, case_id=r.case_id, serial=r.bracelet, person=p,
                                      start=start, end=end, clock=clock, **detail))

    def _battery(self, dev: I64, ts: F64) -> None:
        dt_h = np.maximum(ts - self.bat_t[dev], 0.0) / 3600
        self.bat_t[dev] = ts
        on = self.on[dev]
        ch = self.charging[dev]
        rate = np.where(ch, CHARGE_RATE, np.where(on, -self.drain[dev], 0.0))
        new = np.clip(self.level[dev] + rate * dt_h, 0.0, 100.0)
        self.level[dev] = new
        low = ~ch & on & ~self.low_sent[dev] & (new < LOW)
        crit = ~ch & on & ~self.crit_sent[dev] & (new < CRITICAL)
        full = ch & (new >= 100.0)
        dead = on & ~ch & (new <= 1.0)
        for k in np.flatnonzero(low | crit | full | dead):
            p, t = int(dev[k]), float(ts[k])
            if low[k]:
                self.low_sent[p] = True
                self._event(p, t, "battery_low", {"level": int(new[k])})
                self._truth(p, "battery_low", t, None)
            if crit[k]:
                self.crit_sent[p] = True
                self._event(p, t, "battery_critical", {"level": int(new[k])})
                self._truth(p, "battery_critical", t, None)
            if full[k]:
                self.charging[p] = False
                self._event(p, t, "charging_stopped", {"level": 100})
            if dead[k]:
                self.depleted[p] = True
                self._power_off(p, t, reason="battery")
        self.low_sent[dev] &= new < LOW + 5
        self.crit_sent[dev] &= new < CRITICAL + 5

    def _battery_one(self, p: int, t: float) -> None:
        self._battery(np.array([p]), np.array([t]))

    def _power_off(self, p: int, t: float, *, reason: str, end: float | None = None) -> None:
        self._event(p, t, "power_off", {"reason": reason})
        self._truth(p, "power_off", t, end, reason=reason)
        self._flush(p, t)
        self._status(p, "offline", t)
        self.on[p] = False

    def _power_on(self, p: int, t: float) -> None:
        self.on[p] = True
        self.bat_t[p] = t
        self.next_fix[p] = t
        self.next_up[p] = t
        self._event(p, t, "power_on")
        self._status(p, "online", t)

    def _edge(self, e: _Edge) -> None:
        p, t = e.person, e.t
        k = e.kind
        if k == "strap_open":
            if self.on[p]:
                self.strap[p] = True
                self._event(p, t, "strap_open")
                self._truth(p, "strap_tamper", t, e.end)
        elif k == "strap_closed":
            if self.on[p] and self.strap[p]:
                self._event(p, t, "strap_closed")
            self.strap[p] = False
        elif k == "power_off":
            if self.on[p]:
                self._battery_one(p, t)
                self.planned_off[p] = True
                self._power_off(p, t, reason="switched_off", end=e.end)
        elif k == "power_on":
            if self.planned_off[p]:
                self.planned_off[p] = False
                if not self.depleted[p]:
                    self._power_on(p, t)
        elif k == "gap_start":
            self.gap[p] = True
        elif k == "gap_end":
            self.gap[p] = False
            if self.on[p]:
                self._flush(p, t, live_first=(p + int(t)) % 2 == 0)
        elif k == "charge_start":
            self._battery_one(p, t)
            if self.depleted[p]:
                self.depleted[p] = False
                if not self.planned_off[p]:
                    self._power_on(p, t)
            self.charging[p] = True
            if self.on[p]:
                self._event(p, t, "charging_started", {"level": int(self.level[p])})
        elif k == "charge_end" and self.charging[p]:
            self._battery_one(p, t)
            self.charging[p] = False
            if self.on[p]:
                self._event(p, t, "charging_stopped", {"level": int(self.level[p])})

    # -- truth -----------------------------------------------------------------------

    def _wrong_side_records(self) -> None:
        """Every stretch a person really is on a zone's wrong side (the ground truth of
        the planned excursions), due or not: an alert on one is no false alarm even where
        the simulator's own evaluation of the rules did not make it due (their fixes
        differ: it leaves noise bursts out, the engine has its own outlier and transit
        rules), so it is counted apart (`simulator.score`, ``real_not_due``)."""
        assert self.world is not None and self.truth is not None
        for (p, zone), gts in sorted(self.world.book.truths.items()):
            if p >= len(self.registry):
                continue
            r = self.registry[p]
            for g in gts:
                self.truth.write({"record": "wrong_side", "type": ZONE_ALERT[zone],
                                  "case_id": r.case_id, "serial": r.bracelet, "person": p,
                                  "clock": "sim", "start": iso(g.start), "end": iso(g.end),
                                  "kind": g.kind})

    def _zone_due(self, due: Due) -> None:
        assert self.world is not None
        g, new = self.world.book.match(due)
        p = due.person
        if g is None:
            if self.truth is not None and p < len(self.registry):
                r = self.registry[p]
                self.truth.write({"record": "noise_due", "type": ZONE_ALERT[due.zone],
                                  "case_id": r.case_id, "serial": r.bracelet, "person": p,
                                  "ts": iso(due.ts), "first": iso(due.first_ts),
                                  "inferred": due.inferred})
            return
        if not new:
            return
        self._truth(p, ZONE_ALERT[due.zone], g.start, g.end, due=iso(due.ts),
                    first_fix=iso(due.first_ts), late=bool(self.gap[p]), inferred=due.inferred,
                    excursion=g.kind)

    def _silence(self, now: float) -> None:
        silent = ~self.comm_open & (now - self.last_pub > self.comm_thr)
        for p in np.flatnonzero(silent):
            self.comm_open[p] = True
            self.comm_start[p] = self.last_pub[p] + self.comm_thr[p]

    def _talked(self, p: int, now: float) -> None:
        self.last_pub[p] = now
        if self.comm_open[p]:
            self.comm_open[p] = False
            self._truth(p, "communication_lost", float(self.comm_start[p]), now, clock="real")

    # -- uplink ----------------------------------------------------------------------

    def _topic(self, serial: str, stream: str) -> str:
        return f"{self.cfg.prefix}/devices/{serial}/{stream}"

    def _send(self, p: int, stream: str, items: list[dict[str, Any]], *, phone: bool = False,
              probe: bool = False) -> None:
        assert self.sink is not None
        r = self.registry[p]
        serial = (r.phone or r.bracelet) if phone else r.bracelet
        for i in range(0, len(items), MAX_ITEMS):
            chunk = items[i:i + MAX_ITEMS]
            self.sink.publish(self._topic(serial, stream), orjson.dumps({stream: chunk}))
            self.stats["messages"] += 1
            self.stats[f"items_{stream}"] += len(chunk)
        now = time.time()
        if probe and self.probe_slot is None and p in self.probe:
            # the prober times this upload until the API shows its newest fix
            self.probe_slot = (p, max(x["ts"] for x in items) / 1000, now)
        if not phone:
            self._talked(p, now)

    def _status(self, p: int, state: str, t: float) -> None:
        if self.sink is None or p >= len(self.registry):
            return
        body: dict[str, Any] = {"state": state}
        if state == "online":
            body.update(ts=int(t * 1000), fw="2.4.1", bat=int(self.level[p]))
        self.sink.publish(self._topic(self.registry[p].bracelet, "status"), orjson.dumps(body),
                          retain=True)
        self.stats["messages"] += 1
        self._talked(p, time.time())

    def _flush(self, p: int, t: float, *, live_first: bool = False) -> None:
        """Upload everything buffered now (unless out of coverage).

        `live_first`: the newest upload interval's fixes go first and the backlog after
        them (as devices that report live before backfilling do), so the backend sees
        fixes older than the newest it has evaluated.
        """
        if self.gap[p]:
            return
        if self.ebuf[p]:
            self._send(p, "events", self.ebuf[p])
            self.ebuf[p] = []
        buf = self.fbuf[p]
        if buf:
            cut = (t - self.up_iv[p]) * 1000
            k = next((i for i, f in enumerate(buf) if f["ts"] >= cut), len(buf))
            if live_first and 0 < k < len(buf):
                self._send(p, "fixes", buf[k:])
                self._send(p, "fixes", buf[:k])
                self.stats["backfills"] += 1
            else:
                self._send(p, "fixes", buf)
            self.fbuf[p] = []
        self.ev_dirty.discard(p)

    def _upload(self, target: float, now: float) -> None:
        for p in list(self.ev_dirty):
            if self.ebuf[p] and not self.gap[p] and self.on[p]:
                self._send(p, "events", self.ebuf[p])
                self.ebuf[p] = []
            if not self.ebuf[p]:
                self.ev_dirty.discard(p)
        due = np.flatnonzero(self.on & ~self.gap & (self.next_up <= target))
        for p in due.tolist():
            if self.fbuf[p]:
                self._send(p, "fixes", self.fbuf[p], probe=True)
                self.fbuf[p] = []
        self.next_up[due] += self.up_iv[due]
        behind = due[self.next_up[due] <= target]
        self.next_up[behind] = target + self.up_iv[behind]

    # -- downlink and the phones ---------------------------------------------------------

    def _commands(self, now: float, target: float) -> None:
        while True:
            try:
                topic, payload = self.commands.get_nowait()
            except queue.Empty:
                return
            self._command(topic, payload, now, target)

    def _command(self, topic: str, payload: bytes, now: float, target: float) -> None:
        parts = topic.split("/")
        serial = parts[-2] if len(parts) >= 2 else ""
        who = self._serial_map.get(serial)
        if who is None:
            return
        p, is_phone = who
        try:
            cmd = json.loads(payload)
            cid, ctype, params = str(cmd["id"]), str(cmd["type"]), dict(cmd.get("params") or {})
        except (ValueError, KeyError, TypeError):
            self.stats["commands_bad"] += 1
            return
        self.stats[f"command_{ctype}"] += 1
        clock = now if is_phone else target
        result, detail = "ok", None
        if cid in self.seen_commands:
            self.stats["commands_repeated"] += 1
        else:
            self.seen_commands.add(cid)
            if ctype == "set_interval":
                if self.cfg.obey_commands and not is_phone:
                    fi = params.get("fix_interval_s")
                    ui = params.get("upload_interval_s")
                    if fi:
                        self.fix_iv[p] = float(fi)
                        self.next_fix[p] = min(self.next_fix[p], target + float(fi))
                    if ui:
                        self.up_iv[p] = float(ui)
                        self.next_up[p] = min(self.next_up[p], target + float(ui))
            elif ctype == "request_checkin":
                self._checkin_request(p, cid, float(params.get("deadline_s", 900)), now,
                                      params.get("challenge"))
            elif ctype != "notify":
                result, detail = "error", f"unknown command {ctype}"
        ack: dict[str, Any] = {"id": cid, "ts": int(clock * 1000), "result": result}
        if detail:
            ack["detail"] = detail
        r = self.registry[p]
        serial_out = (r.phone or r.bracelet) if is_phone else r.bracelet
        assert self.sink is not None
        self.sink.publish(self._topic(serial_out, "acks"), orjson.dumps(ack))
        self.stats["messages"] += 1

    def _checkin_request(self, p: int, request_id: str, deadline_s: float, now: float,
                         challenge: str | None = None) -> None:
        rates = self.cfg.rates
        u = float(self.rng.random())
        deadline = now + deadline_s
        if u < rates.checkin_missed:  # not answered: judged at the deadline
            heapq.heappush(self.answers, _Answer(deadline, p, request_id, "deadline", deadline, now))
            return
        outcome = "pass"
        if u < rates.checkin_missed + rates.checkin_failed:
            outcome = "fail_face" if self.rng.random() < 0.5 else "fail_liveness"
        delay = float(self.rng.uniform(2.0, max(3.0, min(30.0, 0.3 * deadline_s))))
        heapq.heappush(self.answers, _Answer(now + delay, p, request_id, outcome, deadline,
                                             challenge=challenge))

    def _phones(self, now: float, *, all_now: bool = False) -> None:
        while self.answers and (all_now or self.answers[0].due <= now):
            a = heapq.heappop(self.answers)
            self._answer(a, now)

    def _answer(self, a: _Answer, now: float) -> None:
        p = a.person
        if a.outcome == "deadline":
            # The rules count any passing check-in of the case from 2 minutes before the
            # request (device clocks) to its deadline, e.g. one answering another request.
            covered = any(a.requested - CHECKIN_EARLY_S <= t <= a.deadline
                          for t in self.passes.get(p, ()))
            if covered:
                self.stats["checkins_missed_covered"] += 1
            else:
                self.stats["checkins_missed"] += 1
                self._truth(p, "checkin_missed", a.deadline, a.deadline, clock="real",
                            request_id=a.request_id, requested=iso(a.requested))
            return
        if self.frames is not None:
            self._answer_frames(a, now)
            return
        tpl = self.templates[p]
        if a.outcome == "fail_face":
            v = self.rng.standard_normal(tpl.size)
            emb, live = v / np.linalg.norm(v), float(self.rng.uniform(0.9, 0.99))
        else:
            emb = tpl + self.rng.normal(0, 0.05, tpl.size)
            live = float(self.rng.uniform(0.2, 0.6)) if a.outcome == "fail_liveness" \
                else float(self.rng.uniform(0.9, 0.99))
        seq = int(self.seq_ci[p])
        self.seq_ci[p] += 1
        k = int(self.cur[p])
        item = {
            "seq": seq,
            "ts": datetime.fromtimestamp(now, self.tz).isoformat(timespec="milliseconds"),
            "request_id": a.request_id, "method": "face",
            "embedding": [round(float(x), 5) for x in emb], "liveness": round(live, 3),
            "lat": round(float(self.klat[k]), 6), "lon": round(float(self.klon[k]), 6), "acc": 15.0,
        }
        self._send(p, "checkins", [item], phone=True)
        self.stats[f"checkins_{a.outcome}"] += 1
        if a.outcome == "pass":
            self.passes.setdefault(p, []).append(now)
        if a.outcome != "pass":
            self._truth(p, "checkin_failed", now, now, clock="real", request_id=a.request_id,
                        reason=a.outcome)
            if now + 20 < a.deadline - 5:  # the person tries again, properly
                heapq.heappush(self.answers, _Answer(now + 20, p, a.request_id, "pass", a.deadline))

    def _answer_frames(self, a: _Answer, now: float) -> None:
        """Frames of real photos: the enrolled person performing the asked gesture (pass),
        someone else (fail_face), or a replay of the person's previous check-in, or their
        photo held still when there is none yet (fail_liveness)."""
        assert self.frames is not None
        p = a.person
        frames: list[bytes] | None
        if a.outcome == "fail_face":
            frames = self.frames.impostor()
        elif a.outcome == "fail_liveness":
            frames = self.last_frames.get(p) or self.frames.still()
        else:
            frames = self.frames.honest(a.challenge)
            if frames is None:  # a gesture the photos cannot show: counted as a failure
                a.outcome, frames = "fail_challenge", self.frames.still()
        if a.outcome == "pass":
            self.last_frames[p] = frames
        seq = int(self.seq_ci[p])
        self.seq_ci[p] += 1
        k = int(self.cur[p])
        item: dict[str, Any] = {
            "seq": seq,
            "ts": datetime.fromtimestamp(now, self.tz).isoformat(timespec="milliseconds"),
            "request_id": a.request_id, "method": "face",
            "challenge": a.challenge or "turn_left",
            "frames": [base64.b64encode(f).decode() for f in frames],
            "lat": round(float(self.klat[k]), 6), "lon": round(float(self.klon[k]), 6), "acc": 15.0,
        }
        self._send(p, "checkins", [item], phone=True)
        self.stats[f"checkins_{a.outcome}"] += 1
        if a.outcome == "pass":
            self.passes.setdefault(p, []).append(now)
            return
        self._truth(p, "checkin_failed", now, now, clock="real", request_id=a.request_id,
                    reason=a.outcome)
        if a.outcome == "fail_challenge":  # cannot do better: the request will be missed
            heapq.heappush(self.answers, _Answer(a.deadline, p, a.request_id, "deadline",
                                                 a.deadline, now))
        elif now + 20 < a.deadline - 5:  # the person tries again, properly
            heapq.heappush(self.answers, _Answer(now + 20, p, a.request_id, "pass", a.deadline,
                                                 challenge=a.challenge))

    # -- the end -----------------------------------------------------------------------

    def _finish(self, now: float) -> None:
        """Answer pending check-ins, upload every buffer, close the truth file."""
        self._phones(now, all_now=True)
        self.gap[:] = False
        for p in range(self.cfg.people):
            if self.fbuf[p] or self.ebuf[p]:
                self._flush(p, self.sim_end)
        self.real_end = time.time()
        assert self.truth is not None
        for q in np.flatnonzero(self.comm_open).tolist():
            self._truth(q, "communication_lost", float(self.comm_start[q]), None, clock="real")
        self.truth.write({
            "record": "end", "sim_end": iso(self.sim_end), "real_end": iso(self.real_end),
            # the scored window's end (the run went on for the tail after it)
            "window_end": iso(min(self.sim_end, self.window_end)),
            "real_window_end": iso(min(self.real_end, self.real_start + self.cfg.duration_s)),
            "stats": dict(self.stats), "noise_due": len(self.world.book.noise_due) if self.world else 0,
            "truths": dict(self.truth.counts),
        })

    def _run_record(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "record": "run", "version": 1, "seed": cfg.seed, "people": cfg.people,
            "speed": cfg.speed, "fix_interval_s": cfg.fix_interval_s, "duration_s": cfg.duration_s,
            "sim_start": iso(self.sim_start), "real_start": iso(self.real_start),
            "sim_end_planned": iso(self.sim_start + cfg.speed * cfg.total_s),
            "tail_s": cfg.tail_s,
            "timezone": cfg.timezone, "prefix": cfg.prefix, "tag": cfg.tag,
            "rates": {k: getattr(cfg.rates, k) for k in cfg.rates.__dataclass_fields__},
            "gps_model": cfg.gps_model,
            "cases": [r.case_id for r in self.registry],
        }


# --------------------------------------------------------------------------- orchestration


@dataclass
class RunResult:
    truth: Path
    setup_file: Path | None
    sim_start: float
    sim_end: float
    real_start: float
    real_end: float
    stats: dict[str, int]
    truths: dict[str, int]
    noise_due: int
    lag_max_s: float
    lag_samples: list[float]
    checkin_requests: int
    publisher: dict[str, float]


def _enrol_alongside(sim: Simulator, api: Any, state: Any, setup_file: Path,
                     phase: Callable[[str], None]) -> threading.Thread:
    """Enrol the faces from photos while the people are already simulated (so they appear
    at once); the officer's check-in requests go to enrolled people only."""
    sim.enrolled = set()
    t0 = time.monotonic()

    def on_enrolled(r: Registered) -> None:
        assert sim.enrolled is not None
        sim.enrolled.add(r.person)

    def run() -> None:
        try:
            enrol_from_photos(api, state, on_enrolled=on_enrolled, stop=sim.stop_event)
            state.save(setup_file)
            phase(f"enrolled {len(sim.enrolled or ())} faces from photos in "
                  f"{time.monotonic() - t0:.0f} s")
        except Exception as e:  # the simulation goes on; the score shows the consequences
            log.error("enrolment from photos failed: %s", e)

    t = threading.Thread(target=run, name="sim-enrol", daemon=True)
    t.start()
    return t


def default_setup_file(truth: Path) -> Path:
    return truth.with_name(truth.stem + ".setup.json")


class _Helpers:
    """Background threads: officer check-in requests, the lag probe, the open-alert count."""

    def __init__(self, sim: Simulator, api: Any) -> None:
        self.sim = sim
        self.api = api
        self.requests = 0
        self.errors = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        for name, fn in (("sim-checkins", self._requester), ("sim-probe", self._prober)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _requester(self) -> None:
        sim, cfg = self.sim, self.sim.cfg
        rate = cfg.rates.checkin_requests * cfg.people * cfg.speed / 86_400  # per real second
        if rate <= 0 or not sim.registry:
            return
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 202]))
        n = 0
        while not self._stop.wait(float(rng.exponential(1 / rate))):
            left = sim.real_start + cfg.duration_s - time.time()
            if left < cfg.checkin_deadline_s + 15:
                return
            r = sim.registry[int(rng.integers(len(sim.registry)))]
            if sim.enrolled is not None and r.person not in sim.enrolled:
                continue  # not enrolled yet: an officer would not ask for a check-in
            try:
                self.api.post(f"/cases/{r.case_id}/checkin-requests",
                              {"deadline_s": int(cfg.checkin_deadline_s)},
                              key=f"sim-{cfg.tag}-checkin-{n}")
                self.requests += 1
            except Exception as e:
                self.errors += 1
                log.warning("officer check-in request failed: %s", e)
            n += 1

    def _prober(self) -> None:
        """Lag: publish -> newest fix visible through the API (one probe upload at a time,
        polled after 0.1 s, then every tenth of the time waited so far: a backlog costs the
        API a few requests per sample, not hundreds); and the run's open alerts every 10 s."""
        sim = self.sim
        cases = {r.case_id for r in sim.registry}
        since = iso(sim.real_start - 120)
        last_alerts = time.monotonic()
        pause = 0.1
        while not self._stop.wait(pause):
            slot = sim.probe_slot
            pause = 0.1
            if slot is not None:
                pause = max(0.1, (time.time() - slot[2]) / 10)
                p, newest, t_pub = slot
                try:
                    dev = self.api.get(f"/devices/{sim.registry[p].bracelet_id}")
                    last = dev.get("last_fix_at")
                    stored = datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp() \
                        if last else -math.inf
                    waited = time.time() - t_pub
                    if stored >= newest - 1e-3 or waited > 300:
                        sim.lag_samples.append(waited)
                        sim.lag_s = waited
                        sim.lag_max_s = max(sim.lag_max_s, waited)
                        sim.probe_slot = None
                except Exception as e:
                    log.debug("lag probe failed: %s", e)
                    sim.probe_slot = None
            if time.monotonic() - last_alerts >= 10.0:
                last_alerts = time.monotonic()
                try:
                    sim.open_alerts = sum(1 for a in self.api.pages("/alerts", status="open",
                                                                     since=since)
                                          if a["case_id"] in cases)
                except Exception as e:
                    log.debug("open-alert count failed: %s", e)


def run_simulation(cfg: SimConfig, *, on_progress: Callable[[Progress], None] | None = None,
                   on_phase: Callable[[str], None] | None = None,
                   stop: threading.Event | None = None,
                   on_officers: Callable[[dict[str, str]], None] | None = None) -> RunResult:
    """Plan, connect, register (or load the setup), run, and close. See the module doc."""
    from simulator.publisher import Publisher
    from simulator.setup import ApiClient, SetupState, new_tag, register

    def phase(msg: str) -> None:
        log.info("%s", msg)
        if on_phase is not None:
            on_phase(msg)

    setup_file = cfg.setup_file or default_setup_file(cfg.truth)
    state: SetupState | None = None
    if not cfg.setup:
        state = SetupState.load(setup_file)
        if state.seed != cfg.seed or state.people != cfg.people:
            raise ValueError(f"{setup_file} was set up with --seed {state.seed} --people "
                             f"{state.people}; run with the same values or --setup")
        cfg.tag = state.tag
    cfg.tag = cfg.tag or new_tag()
    sim = Simulator(cfg, on_progress=on_progress)
    if stop is not None:
        sim.stop_event = stop
    world = sim.plan()
    phase(f"planned {cfg.people} people: simulated {iso(world.sim_start)} .. {iso(world.sim_end)}"
          f" ({cfg.speed:g}x), {sum(len(e) for e in world.plan.excursions)} excursions, "
          f"{len(world.plan.events)} device events")
    api = None
    if cfg.api:
        api = ApiClient(cfg.api, cfg.username, cfg.password)
        api.login()
    pub = Publisher(cfg.mqtt, client_id=f"probation-sim-{uuid.uuid4().hex[:8]}", max_inflight=cfg.max_inflight,
                    on_message=sim.on_downlink)
    pub.subscribe(f"{cfg.prefix}/devices/+/commands")
    pub.connect()
    sim.sink = pub
    helpers: _Helpers | None = None
    enrolling: threading.Thread | None = None
    try:
        if state is None:
            if api is None:
                raise ValueError("--setup needs --api (or use --no-setup with a setup file)")
            phase(f"registering {cfg.people} people through {api.base} (tag {cfg.tag}) ...")
            t0 = time.monotonic()
            registered: list[str] = []
            reg_lock = threading.Lock()
            beat_stop = threading.Event()

            def on_person(r: Registered) -> None:
                pub.publish(f"{cfg.prefix}/devices/{r.bracelet}/status",
                            orjson.dumps({"state": "online"}), retain=True)
                with reg_lock:
                    registered.append(r.bracelet)

            def heartbeat() -> None:  # keeps early devices from going silent during the setup
                while not beat_stop.wait(120):
                    with reg_lock:
                        serial_list = list(registered)
                    for s in serial_list:
                        pub.publish(f"{cfg.prefix}/devices/{s}/status",
                                    orjson.dumps({"state": "online"}), retain=True)

            beat = threading.Thread(target=heartbeat, daemon=True)
            beat.start()
            case_start = datetime.fromtimestamp(world.sim_start, sim.tz).date() - timedelta(days=30)
            try:
                state = register(api, world.people, tag=cfg.tag, seed=cfg.seed,
                                 case_start=case_start, phones=cfg.phones,
                                 workers=cfg.setup_workers, timezone=cfg.timezone,
                                 on_person=on_person, frames=cfg.checkin_frames,
                                 supervisor_id=cfg.supervisor_id, on_officers=on_officers)
            finally:
                beat_stop.set()
            state.save(setup_file)
            phase(f"registered {cfg.people} people in {time.monotonic() - t0:.0f} s "
                  f"(saved {setup_file})")
        sim.use_registry(state.persons)
        sim.truth = TruthWriter(cfg.truth)
        if api is not None:
            helpers = _Helpers(sim, api)
        if api is not None and not state.enrolled:
            enrolling = _enrol_alongside(sim, api, state, setup_file, phase)
        phase(f"simulating for {cfg.duration_s:.0f} s and a tail of {cfg.tail_s / cfg.speed:.0f} s "
              f"({cfg.tail_s:.0f} simulated s, not scored) ...")
        sim.run(on_started=helpers.start if helpers is not None else None)
    finally:
        if enrolling is not None:
            enrolling.join()
        if helpers is not None:
            helpers.stop()
        pub.close()
        if sim.truth is not None:
            sim.truth.close()
        if api is not None:
            api.close()
    ps = pub.stats
    lat = sorted(ps.ack_latency_s)
    return RunResult(
        truth=cfg.truth, setup_file=setup_file, sim_start=sim.sim_start, sim_end=sim.sim_end,
        real_start=sim.real_start, real_end=sim.real_end, stats=dict(sim.stats),
        truths=dict(sim.truth.counts) if sim.truth else {},
        noise_due=len(world.book.noise_due), lag_max_s=sim.lag_max_s,
        lag_samples=list(sim.lag_samples),
        checkin_requests=helpers.requests if helpers else 0,
        publisher={"messages": ps.messages, "acked": ps.acked, "bytes": ps.bytes,
                   "max_outstanding": ps.max_outstanding, "blocked_s": round(ps.blocked_s, 2),
                   "ack_p50_ms": round(1000 * lat[len(lat) // 2], 2) if lat else 0.0},
    )
