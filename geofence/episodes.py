"""Episode state machine: states, transitions and a vectorised scan.

Per (device, case, zone, alert type) an episode is in one of four states::

    C0  closed, no pending wrong-side fix (idle: not stored)
    C1  closed, one definite wrong-side fix seen (the pending fix)
    O0  open
    O1  open, one definite right-side fix seen

Each evaluated fix is a symbol (see `SYM_*`):

    W  definite wrong side, acc <= 500        C0->C1, C1->C1, O*->O0
    D  W that confirms (its run holds N fixes   C*->O0, O*->O0
       spanning T seconds, `geofence.confirm`)
    X  definite wrong side, acc > 500          no-op when closed, O*->O0 when open
    R  definite right side                     C*->C0, O0->O1, O1->O1
    RC R that confirms a closing (2 fixes       C*->C0, O*->C0 (close)
       spanning 60 s by default)
    U  uncertain, outlier (or zone inactive)   no-op
    I  the zone became inactive                everything -> C0 (closes)

No single fix opens an episode, however deep (monitoring-rules.md, "Episodes").
Uncertain fixes neither count nor break a run ("2 consecutive definite fixes"
means consecutive among definite fixes). A sequence is evaluated as a segmented
prefix composition of the symbols' state maps (4-state maps packed in one byte,
composed through a 256x256 table), so there is no per-fix Python loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from geofence.outliers import UNKNOWN_SPEED

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
U8 = npt.NDArray[np.uint8]
BoolA = npt.NDArray[np.bool_]
ObjA = npt.NDArray[np.object_]

SYM_U, SYM_W, SYM_D, SYM_X, SYM_R, SYM_I, SYM_RC = 0, 1, 2, 3, 4, 5, 6
C0, C1, O0, O1 = 0, 1, 2, 3
STATUS_NAMES = {C1: "pending", O0: "open", O1: "closing"}
STATUS_CODES = {v: k for k, v in STATUS_NAMES.items()}

ALERT_TYPES = ("exclusion_zone_entered", "inclusion_zone_left", "exclusion_zone_approach")
AT_ENTERED, AT_LEFT, AT_APPROACH = 0, 1, 2
SEVERITY = {
    "exclusion_zone_entered": "critical",
    "inclusion_zone_left": "high",
    "exclusion_zone_approach": "medium",
}
INFERRED_SEVERITY = "high"
KINDS = ("open", "update", "close")
K_OPEN, K_UPDATE, K_CLOSE = 0, 1, 2

_MAPS = {
    SYM_U: (0, 1, 2, 3),
    SYM_W: (1, 1, 2, 2),
    SYM_D: (2, 2, 2, 2),
    SYM_X: (0, 1, 2, 2),
    SYM_R: (0, 0, 3, 3),
    SYM_I: (0, 0, 0, 0),
    SYM_RC: (0, 0, 0, 0),
}


def _encode(m: tuple[int, ...]) -> int:
    return m[0] | m[1] << 2 | m[2] << 4 | m[3] << 6


SYM_MAP: U8 = np.array([_encode(_MAPS[s]) for s in range(7)], dtype=np.uint8)
_codes = np.arange(256)
# COMPOSE[a, b] = "apply map a, then map b".
COMPOSE: U8 = np.zeros((256, 256), dtype=np.uint8)
for _s in range(4):
    _after_a = (_codes >> (2 * _s)) & 3  # a(s) for every a
    _ba = (_codes[None, :] >> (2 * _after_a[:, None])) & 3  # b(a(s)) for every (a, b)
    COMPOSE |= (_ba << (2 * _s)).astype(np.uint8)


_COMPOSE_FLAT: U8 = COMPOSE.reshape(-1)


def scan_states(sym: I8, seg_start: I64, s0: I8) -> tuple[I8, I8]:
    """States before and after each row for segmented symbol sequences.

    ``seg_start[i]`` is the index of the first row of row i's segment (key) and
    ``s0[i]`` that segment's initial state. Hillis-Steele scan: O(n log L).
    """
    n = sym.shape[0]
    if n == 0:
        e = np.zeros(0, dtype=np.int8)
        return e, e
    p = SYM_MAP[sym]
    depth = np.arange(n, dtype=np.int64) - seg_start  # rows before i in its segment
    k = 1
    idx = np.flatnonzero(depth >= 1)
    while idx.size:
        # Both operands are read before the write, so one array serves every round;
        # the rows still to combine only shrink. COMPOSE through a flat take (2-D fancy
        # indexing runs a generic per-element loop).
        code = np.take(p, idx - k).astype(np.intp)
        code <<= 8
        code |= np.take(p, idx)
        p[idx] = np.take(_COMPOSE_FLAT, code)
        k <<= 1
        idx = idx[np.take(depth, idx) >= k]
    after = ((p >> (2 * s0.astype(np.uint8))) & 3).astype(np.int8)
    before = np.empty_like(after)
    before[0] = s0[0]
    before[1:] = after[:-1]
    np.copyto(before, s0, where=depth == 0)  # 2-3x faster than before[m] = s0[m]
    return before, after


# --------------------------------------------------------------------------- fixes


@dataclass(frozen=True)
class Fix:
    """Evidence fix: epoch ms, degrees, accuracy radius (m)."""

    ts: int
    lat: float
    lon: float
    acc: float

    def to_dict(self) -> dict[str, Any]:
        return {"ts": self.ts, "lat": self.lat, "lon": self.lon, "acc": self.acc}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fix:
        return cls(int(d["ts"]), float(d["lat"]), float(d["lon"]), float(d["acc"]))


# --------------------------------------------------------------------------- state

_EP_COLS: dict[str, Any] = {
    "dev": object,
    "case": object,
    "zone": object,
    "atype": np.int8,
    "status": np.int8,
    "f_ts": np.int64,
    "f_lat": np.float64,
    "f_lon": np.float64,
    "f_acc": np.float64,
    "l_ts": np.int64,
    "l_lat": np.float64,
    "l_lon": np.float64,
    "l_acc": np.float64,
    "max_depth": np.float64,
    "started": np.int64,
    "right_ts": np.int64,
    "last_ts": np.int64,
    "pend_n": np.int64,
    "b_ts": np.int64,
    "b_lat": np.float64,
    "b_lon": np.float64,
    "b_acc": np.float64,
}
_DEV_COLS: dict[str, Any] = {
    "d_id": object,
    "d_case": object,
    "d_ts": np.int64,
    "d_lat": np.float64,
    "d_lon": np.float64,
    "d_acc": np.float64,
}
#: The outlier detector's per-device carry (`geofence.outliers.Carry`), keyed by o_id.
OUT_FIELDS: dict[str, Any] = {
    "has_prev": np.bool_, "prev_ts": np.int64, "prev_lat": np.float64, "prev_lon": np.float64,
    "prev_m": np.float64, "prev_v": np.float64, "since": np.int64, "has_pp": np.bool_,
    "pp_ts": np.int64, "pp_lat": np.float64, "pp_lon": np.float64, "pp_m": np.float64,
    "anc_ts": np.int64, "anc_lat": np.float64, "anc_lon": np.float64, "anc_m": np.float64,
    "anc_v": np.float64, "q_ts": np.int64, "q_lat": np.float64, "q_lon": np.float64,
    "q_m": np.float64, "q_w": np.float64, "q_rest": np.int64, "q_slat": np.float64,
    "q_slon": np.float64, "q_sn": np.float64, "q_sm2": np.float64, "depart": np.bool_,
    "hold": np.bool_, "stay": np.bool_, "h_lat": np.float64, "h_lon": np.float64,
    "h_m": np.float64, "h_in": np.bool_,
}
#: values for carry fields a state stored before they existed
_OUT_DEFAULTS: dict[str, Any] = {"q_ts": 0, "q_lat": 0.0, "q_lon": 0.0, "q_m": 0.0,
                                 "q_w": UNKNOWN_SPEED, "q_rest": 0, "q_slat": 0.0,
                                 "q_slon": 0.0, "q_sn": 0.0, "q_sm2": 0.0,
                                 "depart": False, "hold": False, "stay": False,
                                 "h_lat": 0.0, "h_lon": 0.0, "h_m": 0.0, "h_in": False}
_OUT_COLS: dict[str, Any] = {"o_id": object, **{f"o_{k}": v for k, v in OUT_FIELDS.items()}}


@dataclass(frozen=True)
class EpisodeState:
    """Readable view of one stored (non-idle) episode state."""

    device_id: str
    case_id: str
    zone_id: str
    alert_type: str
    status: str  # pending | open | closing
    first_fix: Fix  # the pending fix when status == "pending"
    last_fix: Fix | None
    max_depth_m: float
    started_at: int
    right_since: int | None  # ts of the first right-side fix while closing
    last_ts: int
    pending_count: int = 1  # wrong-side fixes of the pending run (status "pending")
    before_fix: Fix | None = None  # the device's fix before the pending run


class EngineState:
    """All episode states (non-idle only) and each device's last fix, as numpy columns.

    Immutable by convention: `advance` returns a new object. Serialise with
    `to_dict` (JSON-able) or per device with `device_state` (what the
    ``geofence_states`` row of a device holds); restore with `from_dict` /
    `from_device_states`.
    """

    __slots__ = ("_cols", "_dev_index", "_ix", "_oix")

    def __init__(self, cols: Mapping[str, np.ndarray]) -> None:
        self._cols: dict[str, np.ndarray] = dict(cols)
        for name, dt in {**_EP_COLS, **_DEV_COLS, **_OUT_COLS}.items():
            if name not in self._cols:
                self._cols[name] = np.zeros(0, dtype=dt)
        self._dev_index: dict[str, int] | None = None
        self._oix: dict[str, int] | None = None
        self._ix: tuple[object, np.ndarray, np.ndarray] | None = None

    def __getattr__(self, name: str) -> np.ndarray:
        cols = object.__getattribute__(self, "_cols")
        try:
            return cols[name]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def empty(cls) -> EngineState:
        return cls({})

    @property
    def n_episodes(self) -> int:
        return int(self._cols["dev"].shape[0])

    def columns(self) -> dict[str, np.ndarray]:
        """Every column (a shallow copy of the mapping)."""
        return dict(self._cols)

    def col(self, name: str) -> np.ndarray:
        return self._cols[name]

    def dev_index(self) -> dict[str, int]:
        """device_id -> row in the device table."""
        if self._dev_index is None:
            self._dev_index = {d: i for i, d in enumerate(self._cols["d_id"].tolist())}
        return self._dev_index

    # ------------------------------------------------------------------ views

    def episodes(self, rows: Iterable[int] | None = None) -> list[EpisodeState]:
        """Readable views of the stored episodes (all, or the given rows)."""
        c = {k: v.tolist() for k, v in self._cols.items() if k in _EP_COLS}
        out = []
        for i in range(self.n_episodes) if rows is None else rows:
            st = c["status"][i]
            out.append(
                EpisodeState(
                    device_id=c["dev"][i],
                    case_id=c["case"][i],
                    zone_id=c["zone"][i],
                    alert_type=ALERT_TYPES[c["atype"][i]],
                    status=STATUS_NAMES[st],
                    first_fix=Fix(c["f_ts"][i], c["f_lat"][i], c["f_lon"][i], c["f_acc"][i]),
                    last_fix=None
                    if st == C1
                    else Fix(c["l_ts"][i], c["l_lat"][i], c["l_lon"][i], c["l_acc"][i]),
                    max_depth_m=c["max_depth"][i],
                    started_at=c["started"][i],
                    right_since=c["right_ts"][i] if st == O1 else None,
                    last_ts=c["last_ts"][i],
                    pending_count=c["pend_n"][i],
                    before_fix=Fix(c["b_ts"][i], c["b_lat"][i], c["b_lon"][i], c["b_acc"][i])
                    if st == C1 and c["b_ts"][i] >= 0 else None,
                )
            )
        return out

    def open_episodes(self) -> list[EpisodeState]:
        return [e for e in self.episodes() if e.status != "pending"]

    # ------------------------------------------------------------------ serialisation

    def device_ids(self) -> list[str]:
        ids = (set(self._cols["d_id"].tolist()) | set(self._cols["dev"].tolist())
               | set(self._cols["o_id"].tolist()))
        return sorted(ids)

    @staticmethod
    def _episode_dict(e: EpisodeState) -> dict[str, Any]:
        return {
            "case_id": e.case_id,
            "zone_id": e.zone_id,
            "alert_type": e.alert_type,
            "status": e.status,
            "first_fix": e.first_fix.to_dict(),
            "last_fix": e.last_fix.to_dict() if e.last_fix else None,
            "max_depth_m": e.max_depth_m,
            "started_at": e.started_at,
            "right_since": e.right_since,
            "last_ts": e.last_ts,
            "pending_count": e.pending_count,
            "before_fix": e.before_fix.to_dict() if e.before_fix else None,
        }

    def _device_dict(self, device_id: str, eps: list[EpisodeState]) -> dict[str, Any]:
        c = self._cols
        di = self.dev_index().get(device_id)
        last_fix = None
        case_id = None
        if di is not None:
            last_fix = Fix(
                int(c["d_ts"][di]),
                float(c["d_lat"][di]),
                float(c["d_lon"][di]),
                float(c["d_acc"][di]),
            ).to_dict()
            case_id = c["d_case"][di]
        out: dict[str, Any] = {
            "version": 1,
            "case_id": case_id,
            "last_fix": last_fix,
            "episodes": [self._episode_dict(e) for e in eps],
        }
        oi = self.out_index().get(device_id)
        if oi is not None:
            out["outliers"] = {k: c[f"o_{k}"][oi].item() for k in OUT_FIELDS}
        return out

    def out_index(self) -> dict[str, int]:
        """device_id -> row of the outlier carry table."""
        if self._oix is None:
            self._oix = {d: i for i, d in enumerate(self._cols["o_id"].tolist())}
        return self._oix

    def device_state(self, device_id: str) -> dict[str, Any]:
        """JSON-able state of one device (its last fix and all its episodes).

        This is what a ``geofence_states`` row (one per device) would hold.
        """
        rows = np.flatnonzero(self._cols["dev"] == device_id).tolist()
        return self._device_dict(device_id, self.episodes(rows))

    def device_states(self, device_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """`device_state` of many devices in one pass over the episodes (not one each)."""
        rows: dict[str, list[int]] = {d: [] for d in device_ids}
        for i, d in enumerate(self._cols["dev"].tolist()):
            lst = rows.get(d)
            if lst is not None:
                lst.append(i)
        order = [i for d in rows for i in rows[d]]
        eps = iter(self.episodes(order))
        return {d: self._device_dict(d, [next(eps) for _ in r]) for d, r in rows.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state of every device."""
        by_dev: dict[str, list[EpisodeState]] = {}
        for e in self.episodes():
            by_dev.setdefault(e.device_id, []).append(e)
        return {
            "version": 1,
            "devices": {d: self._device_dict(d, by_dev.get(d, [])) for d in self.device_ids()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EngineState:
        return cls.from_device_states(d.get("devices", {}))

    @classmethod
    def from_device_states(cls, states: Mapping[str, Mapping[str, Any]]) -> EngineState:
        """Rebuild from ``device_id -> device_state(device_id)`` dicts."""
        ep: dict[str, list[Any]] = {k: [] for k in _EP_COLS}
        dv: dict[str, list[Any]] = {k: [] for k in _DEV_COLS}
        ov: dict[str, list[Any]] = {k: [] for k in _OUT_COLS}
        for dev in sorted(states):
            s = states[dev]
            oc = s.get("outliers")
            if oc:
                ov["o_id"].append(dev)
                for k in OUT_FIELDS:
                    ov[f"o_{k}"].append(oc[k] if k in oc else _OUT_DEFAULTS[k])
            lf = s.get("last_fix")
            if lf is not None:
                f = Fix.from_dict(lf)
                dv["d_id"].append(dev)
                dv["d_case"].append(s.get("case_id"))
                dv["d_ts"].append(f.ts)
                dv["d_lat"].append(f.lat)
                dv["d_lon"].append(f.lon)
                dv["d_acc"].append(f.acc)
            for e in s.get("episodes", ()):
                ff = Fix.from_dict(e["first_fix"])
                lf2 = Fix.from_dict(e["last_fix"]) if e.get("last_fix") else ff
                ep["dev"].append(dev)
                ep["case"].append(e["case_id"])
                ep["zone"].append(e["zone_id"])
                ep["atype"].append(ALERT_TYPES.index(e["alert_type"]))
                ep["status"].append(STATUS_CODES[e["status"]])
                ep["f_ts"].append(ff.ts)
                ep["f_lat"].append(ff.lat)
                ep["f_lon"].append(ff.lon)
                ep["f_acc"].append(ff.acc)
                ep["l_ts"].append(lf2.ts)
                ep["l_lat"].append(lf2.lat)
                ep["l_lon"].append(lf2.lon)
                ep["l_acc"].append(lf2.acc)
                ep["max_depth"].append(float(e["max_depth_m"]))
                ep["started"].append(int(e.get("started_at", ff.ts)))
                rs = e.get("right_since")
                ep["right_ts"].append(-1 if rs is None else int(rs))
                ep["last_ts"].append(int(e["last_ts"]))
                ep["pend_n"].append(int(e.get("pending_count", 1)))
                bf = Fix.from_dict(e["before_fix"]) if e.get("before_fix") else None
                ep["b_ts"].append(bf.ts if bf else -1)
                ep["b_lat"].append(bf.lat if bf else 0.0)
                ep["b_lon"].append(bf.lon if bf else 0.0)
                ep["b_acc"].append(bf.acc if bf else 0.0)
        cols: dict[str, np.ndarray] = {}
        for k, dt in _EP_COLS.items():
            cols[k] = _arr(ep[k], dt)
        for k, dt in _DEV_COLS.items():
            cols[k] = _arr(dv[k], dt)
        for k, dt in _OUT_COLS.items():
            cols[k] = _arr(ov[k], dt)
        return cls(cols)

    def replace_devices(
        self, other: EngineState, device_ids: list[str] | None = None
    ) -> EngineState:
        """This state with the given devices' state (default: all of ``other``'s) from ``other``."""
        ids = set(other.device_ids() if device_ids is None else device_ids)
        keep_ep = np.array([d not in ids for d in self._cols["dev"].tolist()], dtype=bool)
        keep_dv = np.array([d not in ids for d in self._cols["d_id"].tolist()], dtype=bool)
        o_ep = np.array([d in ids for d in other._cols["dev"].tolist()], dtype=bool)
        o_dv = np.array([d in ids for d in other._cols["d_id"].tolist()], dtype=bool)
        keep_o = np.array([d not in ids for d in self._cols["o_id"].tolist()], dtype=bool)
        o_o = np.array([d in ids for d in other._cols["o_id"].tolist()], dtype=bool)
        cols = {}
        for k in _OUT_COLS:
            cols[k] = np.concatenate((self._cols[k][keep_o], other._cols[k][o_o]))
        for k in _EP_COLS:
            cols[k] = np.concatenate((self._cols[k][keep_ep], other._cols[k][o_ep]))
        for k in _DEV_COLS:
            cols[k] = np.concatenate((self._cols[k][keep_dv], other._cols[k][o_dv]))
        return EngineState(cols)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EngineState):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _arr(values: list[Any], dt: Any) -> np.ndarray:
    if dt is object:
        a = np.empty(len(values), dtype=object)
        a[:] = values
        return a
    return np.array(values, dtype=dt)


# --------------------------------------------------------------------------- transitions


@dataclass(frozen=True)
class Transition:
    """One episode transition (what the alert service turns into an alert change)."""

    kind: str  # open | update | close
    alert_type: str
    severity: str
    device_id: str
    case_id: str
    zone_id: str
    at: int  # epoch ms at which it happened (a fix's ts or the inactivity instant)
    first_fix: Fix
    last_fix: Fix
    max_depth_m: float
    started_at: int
    ended_at: int | None
    inferred: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "alert_type": self.alert_type,
            "severity": self.severity,
            "device_id": self.device_id,
            "case_id": self.case_id,
            "zone_id": self.zone_id,
            "at": self.at,
            "first_fix": self.first_fix.to_dict(),
            "last_fix": self.last_fix.to_dict(),
            "max_depth_m": self.max_depth_m,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "inferred": self.inferred,
        }


_TR_COLS = (
    "kind",
    "atype",
    "inferred",
    "dev",
    "case",
    "zone",
    "at",
    "started",
    "ended",
    "max_depth",
    "f_ts",
    "f_lat",
    "f_lon",
    "f_acc",
    "l_ts",
    "l_lat",
    "l_lon",
    "l_acc",
)


class Transitions:
    """Columnar transitions of one `advance` call, sorted by (at, device, case, zone, type).

    Columns (numpy, one row per transition): ``kind`` (0 open, 1 update, 2 close),
    ``atype`` (index in `ALERT_TYPES`), ``inferred``, ``dev``/``case``/``zone`` (ids),
    ``at``, ``started``, ``ended`` (-1 = none), ``max_depth``, first fix
    ``f_ts/f_lat/f_lon/f_acc`` and last fix ``l_*``. Iterate for `Transition` objects.
    """

    __slots__ = ("cols",)

    def __init__(self, cols: Mapping[str, np.ndarray]) -> None:
        self.cols = dict(cols)

    @classmethod
    def empty(cls) -> Transitions:
        dts: dict[str, Any] = {"kind": np.int8, "atype": np.int8, "inferred": bool}
        cols = {}
        for k in _TR_COLS:
            dt = dts.get(k, object if k in ("dev", "case", "zone") else np.float64)
            if k in ("at", "started", "ended", "f_ts", "l_ts"):
                dt = np.int64
            cols[k] = np.zeros(0, dtype=dt)
        return cls(cols)

    def __len__(self) -> int:
        return int(self.cols["kind"].shape[0])

    def __iter__(self) -> Iterator[Transition]:
        c = {k: v.tolist() for k, v in self.cols.items()}
        for i in range(len(self)):
            at = ALERT_TYPES[c["atype"][i]]
            inf = bool(c["inferred"][i])
            yield Transition(
                kind=KINDS[c["kind"][i]],
                alert_type=at,
                severity=INFERRED_SEVERITY if inf else SEVERITY[at],
                device_id=c["dev"][i],
                case_id=c["case"][i],
                zone_id=c["zone"][i],
                at=c["at"][i],
                first_fix=Fix(c["f_ts"][i], c["f_lat"][i], c["f_lon"][i], c["f_acc"][i]),
                last_fix=Fix(c["l_ts"][i], c["l_lat"][i], c["l_lon"][i], c["l_acc"][i]),
                max_depth_m=c["max_depth"][i],
                started_at=c["started"][i],
                ended_at=None if c["ended"][i] < 0 else c["ended"][i],
                inferred=inf,
            )

    def records(self) -> list[dict[str, Any]]:
        """JSON-able dicts (see `Transition.to_dict`)."""
        return [t.to_dict() for t in self]

    @staticmethod
    def concat(parts: list[Transitions]) -> Transitions:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Transitions.empty()
        cols = {k: np.concatenate([p.cols[k] for p in parts]) for k in _TR_COLS}
        return Transitions(cols).sorted()

    def sorted(self) -> Transitions:
        c = self.cols
        if len(self) < 2:
            return self
        # Deterministic order: time, then ids, then type/kind.
        keys = list(
            zip(
                c["at"].tolist(),
                c["dev"].tolist(),
                c["case"].tolist(),
                c["zone"].tolist(),
                c["atype"].tolist(),
                range(len(self)),
                strict=True,
            )
        )
        keys.sort()
        order = np.array([k[-1] for k in keys], dtype=np.int64)
        return Transitions({k: v[order] for k, v in c.items()})
