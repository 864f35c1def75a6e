"""Register the simulated world through the API (`docs/api.md`), with httpx.

The caller must be an admin (devices are created by admins). Per run (tag `T`): one
officer per 100 people (`sim-T-officer-K`, random password), and per person a subject
(valid IIN, face template enrolled), a case owned by one of those officers, a bracelet
(`SIMT-00042`) and a check-in phone (`SIMT-00042-P`) assigned to the case, a home
inclusion zone active 22:00-06:00 every day (the curfew) and an exclusion zone.
Requests carry `Idempotency-Key`s derived from the tag, so a retried request is safe.
What was registered is saved as JSON (`SetupState`) for `--no-setup` runs and scoring.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from probation.subjects.iin import make_iin
from simulator.people import Person

log = logging.getLogger(__name__)

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
CURFEW_SCHEDULE = {"windows": [{"days": ALL_DAYS, "start": "22:00", "end": "06:00"}]}
PEOPLE_PER_OFFICER = 100
EMBEDDING_DIM = 128

_FIRST = ["Aidar", "Nurlan", "Yerlan", "Daniyar", "Askar", "Marat", "Serik", "Timur", "Arman",
          "Dmitry", "Sergey", "Ruslan", "Aigerim", "Dana", "Aliya", "Madina", "Saule", "Olga"]
_LAST = ["Abenov", "Nurpeisov", "Kassymov", "Zhakupov", "Omarov", "Ivanov", "Tulegenov",
         "Sadykov", "Bekov", "Kim", "Petrov", "Akhmetov", "Seitkali", "Utegenov"]


class ApiError(RuntimeError):
    """An API call failed; `status` is the HTTP status (0: no response)."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ApiClient:
    """A small, thread-safe API client: bearer token (re-login on 401), retries on 5xx."""

    def __init__(self, base_url: str, username: str, password: str, *, timeout: float = 30,
                 retries: int = 4) -> None:
        self.base = base_url.rstrip("/")
        if not self.base.endswith("/api/v1"):
            self.base += "/api/v1"
        self.username = username
        self.password = password
        self.retries = retries
        self._token: str | None = None
        self._lock = threading.Lock()
        self.http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=64))

    def close(self) -> None:
        self.http.close()

    def login(self) -> str:
        r = self.http.post(f"{self.base}/auth/token",
                           data={"username": self.username, "password": self.password})
        if r.status_code != 200:
            raise ApiError(f"login as {self.username!r} failed: HTTP {r.status_code} {r.text[:300]}",
                           r.status_code)
        if r.json().get("scope") == "totp_setup":
            raise ApiError(f"{self.username!r} must set up a second factor (TOTP) before the "
                           "simulator can act as them; use an account without one, or "
                           "PROBATION_TOTP_REQUIRED_ROLES on a test server", 401)
        token = str(r.json()["access_token"])
        with self._lock:
            self._token = token
        return token

    def _headers(self, key: str | None) -> dict[str, str]:
        with self._lock:
            token = self._token
        if token is None:
            token = self.login()
        h = {"Authorization": f"Bearer {token}"}
        if key:
            h["Idempotency-Key"] = key
        return h

    def request(self, method: str, path: str, *, json_body: Any = None,
                params: dict[str, Any] | None = None, key: str | None = None,
                ok: Sequence[int] = (200, 201, 204)) -> Any:
        """JSON of a successful response; raises `ApiError` otherwise (after retries)."""
        url = path if path.startswith("http") else f"{self.base}{path}"
        last: ApiError | None = None
        for attempt in range(self.retries + 1):
            try:
                r = self.http.request(method, url, json=json_body, params=params,
                                      headers=self._headers(key))
            except httpx.HTTPError as e:
                last = ApiError(f"{method} {path}: {e}")
                time.sleep(min(2 ** attempt * 0.2, 5))
                continue
            if r.status_code == 401 and attempt < self.retries:
                self.login()
                continue
            if r.status_code in ok:
                return r.json() if r.content else None
            body: Any
            try:
                body = r.json()
            except ValueError:
                body = r.text[:500]
            last = ApiError(f"{method} {path}: HTTP {r.status_code} {str(body)[:500]}",
                            r.status_code, body)
            if r.status_code < 500 and r.status_code != 429:
                raise last
            time.sleep(min(2 ** attempt * 0.2, 5))
        assert last is not None
        raise last

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, *, key: str | None = None) -> Any:
        return self.request("POST", path, json_body=body, key=key)

    def post_files(self, path: str, files: list[tuple[str, tuple[str, bytes, str]]], *,
                   key: str | None = None) -> Any:
        """A multipart POST (retried like the others)."""
        url = self.base + path
        last: ApiError | None = None
        for attempt in range(self.retries + 1):
            r = self.http.post(url, files=files, headers=self._headers(key))
            if r.status_code == 401 and attempt < self.retries:
                self.login()
                continue
            if r.status_code in (200, 201):
                return r.json()
            last = ApiError(f"POST {path}: HTTP {r.status_code} {r.text[:500]}", r.status_code)
            if r.status_code < 500:
                raise last
            time.sleep(min(2 ** attempt * 0.2, 5))
        assert last is not None
        raise last

    def patch(self, path: str, body: Any = None) -> Any:
        return self.request("PATCH", path, json_body=body)

    def pages(self, path: str, *, limit: int = 500, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list."""
        cursor: str | None = None
        while True:
            page = self.get(path, limit=limit, cursor=cursor, **params)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return


@dataclass
class Registered:
    """What the API knows one simulated person by."""

    person: int
    subject_id: str
    case_id: str
    bracelet_id: str
    bracelet: str
    phone_id: str | None
    phone: str | None
    home_zone_id: str
    exclusion_zone_id: str
    officer: str


@dataclass
class SetupState:
    """The registered world of one tag (saved as JSON)."""

    tag: str
    seed: int
    people: int
    api: str
    officers: dict[str, str] = field(default_factory=dict)  # username -> password
    persons: list[Registered] = field(default_factory=list)
    # enrolment from photos comes after the rest (`enrol_from_photos`): False until done
    enrolled: bool = True

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> SetupState:
        raw = json.loads(path.read_text())
        persons = [Registered(**p) for p in raw.pop("persons")]
        return cls(**raw, persons=persons)


def serials(tag: str, index: int) -> tuple[str, str]:
    """(bracelet, phone) serials of person `index`."""
    b = f"SIM{tag}-{index:05d}"
    return b, f"{b}-P"


def template(seed: int, index: int) -> np.ndarray:
    """The enrolled face embedding of person `index` (unit vector, deterministic)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7_777, index]))
    v = rng.standard_normal(EMBEDDING_DIM)
    return np.asarray(v / np.linalg.norm(v))


def _subject_body(tag: str, seed: int, index: int, attempt: int) -> dict[str, Any]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4_242, index, attempt]))
    born = date(1965, 1, 1) + timedelta(days=int(rng.integers(0, 38 * 365)))
    female = bool(rng.random() < 0.1)
    serial = int(rng.integers(0, 9_000)) + 1
    name = f"{_FIRST[int(rng.integers(len(_FIRST)))]} {_LAST[int(rng.integers(len(_LAST)))]}"
    return {
        "iin": make_iin(born, "f" if female else "m", serial),
        "full_name": f"{name} (sim {tag}-{index})",
        "birth_date": born.isoformat(),
    }


def register(
    api: ApiClient, people: Sequence[Person], *, tag: str, seed: int, case_start: date,
    phones: bool = True, workers: int = 8, timezone: str = "Asia/Almaty",
    on_person: Callable[[Registered], None] | None = None, frames: bool = False,
    supervisor_id: str | None = None,
    on_officers: Callable[[dict[str, str]], None] | None = None,
) -> SetupState:
    """Create officers (under `supervisor_id`, if given; `on_officers` gets their logins at
    once), then every person's subject, case, devices and zones (in parallel).

    With `frames` the face is enrolled from photos afterwards (`enrol_from_photos`: the
    backend's model takes ~0.3 s of CPU per person, which would hold every person back
    until all are enrolled); until then the case asks for no random check-ins.
    """
    state = SetupState(tag=tag, seed=seed, people=len(people), api=api.base, enrolled=not frames)
    me = api.get("/me")
    if me.get("role") != "admin":
        raise ApiError(f"{api.username!r} is {me.get('role')}: the simulator's setup needs an "
                       "admin (devices are created by admins)", 403)
    officer_ids: list[tuple[str, str]] = []
    for k in range(max(1, math.ceil(len(people) / PEOPLE_PER_OFFICER))):
        username = f"sim-{tag}-officer-{k}"
        password = secrets.token_urlsafe(12)
        body = {"username": username, "password": password, "role": "officer",
                "full_name": f"Simulated officer {k}"}
        if supervisor_id:
            body["supervisor_id"] = supervisor_id
        u = api.post("/users", body, key=f"sim-{tag}-user-{k}")
        state.officers[username] = password
        officer_ids.append((username, str(u["id"])))
    if on_officers is not None:
        on_officers(dict(state.officers))

    def one(p: Person) -> Registered:
        officer, officer_id = officer_ids[p.index // PEOPLE_PER_OFFICER % len(officer_ids)]
        k = f"sim-{tag}-{p.index}"
        subject = None
        for attempt in range(20):  # a random IIN may already exist (another run)
            try:
                subject = api.post("/subjects", _subject_body(tag, seed, p.index, attempt),
                                   key=f"{k}-subject-{attempt}")
                break
            except ApiError as e:
                if e.status not in (409, 422):
                    raise
        if subject is None:
            raise ApiError(f"no free IIN found for person {p.index}")
        sid = str(subject["id"])
        if not frames:
            api.post(f"/subjects/{sid}/biometric-template",
                     {"method": "face",
                      "embedding": [round(float(x), 6) for x in template(seed, p.index)]},
                     key=f"{k}-template")
        case = api.post("/cases", {
            "subject_id": sid, "officer_id": officer_id, "court_order_ref": f"SIM-{tag}-{p.index:05d}",
            "starts_on": case_start.isoformat(),
            "ends_on": (case_start + timedelta(days=365)).isoformat(),
            "risk_level": p.risk_level, "timezone": timezone,
            **({"checkin_policy": {"per_day": 0}} if frames else {}),
        }, key=f"{k}-case")
        cid = str(case["id"])
        bracelet, phone = serials(tag, p.index)
        b = api.post("/devices", {"serial": bracelet, "kind": "bracelet", "model": "SimBand 2",
                                  "firmware": "2.4.1"}, key=f"{k}-bracelet")
        api.post(f"/cases/{cid}/devices", {"device_id": b["id"]}, key=f"{k}-assign-b")
        ph = None
        if phones:
            ph = api.post("/devices", {"serial": phone, "kind": "phone", "model": "SimPhone",
                                       "firmware": "1.0"}, key=f"{k}-phone")
            api.post(f"/cases/{cid}/devices", {"device_id": ph["id"]}, key=f"{k}-assign-p")
            if not frames:  # the app sends its own embeddings (v1.0): trusted devices only
                api.patch(f"/devices/{ph['id']}", {"trusted_biometrics": True})
        home = api.post(f"/cases/{cid}/zones", {
            "name": "Home (curfew)", "kind": "inclusion",
            "circle": {"center": [round(p.home.lon, 7), round(p.home.lat, 7)],
                       "radius_m": round(p.home_radius_m, 1)},
            "schedule": CURFEW_SCHEDULE,
        }, key=f"{k}-home")
        excl = api.post(f"/cases/{cid}/zones", {
            "name": "Victim's home", "kind": "exclusion", **p.exclusion.geojson(),
        }, key=f"{k}-exclusion")
        reg = Registered(
            person=p.index, subject_id=sid, case_id=cid, bracelet_id=str(b["id"]),
            bracelet=bracelet, phone_id=str(ph["id"]) if ph else None, phone=phone if ph else None,
            home_zone_id=str(home["id"]), exclusion_zone_id=str(excl["id"]), officer=officer,
        )
        if on_person is not None:
            on_person(reg)
        return reg

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sim-setup") as ex:
        state.persons = list(ex.map(one, people))
    return state


def enrol_from_photos(
    api: ApiClient, state: SetupState, *, workers: int = 4,
    on_enrolled: Callable[[Registered], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Enrol every person's face from real photos through the API (the backend's model),
    then give the case back its risk level's random check-ins (`register` held them)."""
    from simulator.faces import ENROLMENT, photo

    files = [("photos", (f"{n}.jpg", photo(n), "image/jpeg")) for n in ENROLMENT]

    def one(r: Registered) -> None:
        if stop is not None and stop.is_set():
            return
        k = f"sim-{state.tag}-{r.person}"
        api.post_files(f"/subjects/{r.subject_id}/biometric-enrolment", files,
                       key=f"{k}-enrolment")
        api.patch(f"/cases/{r.case_id}", {"checkin_policy": None})
        if on_enrolled is not None:
            on_enrolled(r)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sim-enrol") as ex:
        list(ex.map(one, state.persons))
    state.enrolled = stop is None or not stop.is_set()


def new_tag() -> str:
    """A short random run tag (serials and court order references carry it)."""
    return uuid.uuid4().hex[:6]
