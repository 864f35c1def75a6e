"""The check-in verifier: decides check-ins with camera frames, off the ingest path.

Ingest stores a check-in with frames as not passed and queues its frames, encrypted, in
`checkin_frames` (`devices.checkins.queue_frames`, in the batch's transaction). This
verifier takes queued check-ins (`FOR UPDATE SKIP LOCKED`, so several instances share the
queue), runs `devices.faces.verify.verify_checkin` in a process pool (each pool process
loads the face model once), and in one transaction per check-in writes the verdict into
the check-in row, marks the request it answers `passed` or opens `checkin_failed` with
the verdict as evidence, and deletes the frames. A burst of check-ins waits in the
queue; fixes never wait for it.

The challenge verified is the one the request asked for (found by `request_id`); a
check-in answering no request is verified against the challenge it names, and one that
names none cannot show liveness (`challenge_not_performed`).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import psycopg
from cryptography.exceptions import InvalidTag

from alerts.models import AlertType
from alerts.service import open_episode
from db.engine import connect
from devices.biometrics import decrypt_frames, decrypt_template, load_key
from devices.checkins import _request_uuid, _template, mark_request_passed
from devices.faces import analysis as A
from devices.protocol import Checkin

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

# Earlier check-ins whose frame hashes a new one is compared with (per case).
REPLAY_HISTORY = 500


def _warm() -> None:
    from devices.faces.model import face_model

    face_model()


def _verify(frames: list[bytes], template: Any, challenge: str | None,
            earlier: list[int], th: A.Thresholds) -> A.Verdict:
    from devices.faces.verify import verify_checkin

    v = verify_checkin(frames, template=template, challenge=challenge,
                       earlier_hashes=earlier, th=th)
    if challenge is None and A.Reason.CHALLENGE_NOT_PERFORMED not in v.reasons and v.faces:
        v.reasons.append(A.Reason.CHALLENGE_NOT_PERFORMED)
    return v


def process_pool(processes: int) -> ProcessPoolExecutor:
    """Pool processes started fresh (`spawn`: no threads or sockets inherited), each with
    the face model loaded."""
    return ProcessPoolExecutor(max_workers=processes, initializer=_warm,
                               mp_context=multiprocessing.get_context("spawn"))


@dataclass(slots=True)
class Pending:
    device_id: uuid.UUID
    seq: int
    ts: datetime
    case_id: uuid.UUID | None
    request_id: str | None
    challenge: str | None
    ciphertext: bytes


def _claim(conn: Conn, limit: int) -> list[Pending]:
    rows = conn.execute(
        "SELECT device_id, seq, ts, case_id, request_id, challenge, ciphertext"
        " FROM checkin_frames ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (limit,),
    ).fetchall()
    return [Pending(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6])) for r in rows]


def _asked_challenge(conn: Conn, p: Pending) -> str | None:
    """The request's challenge (None: no request named, or it asked none)."""
    rid = _request_uuid(p.request_id)
    if rid is None or p.case_id is None:
        return None
    row = conn.execute(
        "SELECT challenge FROM checkin_requests WHERE case_id = %s"
        " AND (id = %s OR command_id = %s) LIMIT 1", (p.case_id, rid, rid)).fetchone()
    return None if row is None else row[0]


def _earlier_hashes(conn: Conn, p: Pending) -> list[int]:
    col, val = ("case_id", p.case_id) if p.case_id is not None else ("device_id", p.device_id)
    rows = conn.execute(
        f"SELECT verdict->'hashes' FROM checkins WHERE {col} = %s AND verdict IS NOT NULL"
        " ORDER BY ts DESC LIMIT %s", (val, REPLAY_HISTORY)).fetchall()
    return [int(h, 16) for (hs,) in rows for h in (hs or [])]


def _template_for(conn: Conn, key: bytes, case_id: uuid.UUID | None) -> np.ndarray | None:
    tpl = _template(conn, case_id) if case_id is not None else None
    if tpl is None:
        return None
    subject_id, method, blob = tpl
    try:
        return decrypt_template(key, blob, subject_id=subject_id, method=method)
    except (InvalidTag, ValueError):
        log.error("check-in verifier: the template of subject %s does not decrypt", subject_id)
        return None


class CheckinVerifier:
    """Verifies queued check-ins with a process pool; `run_once` is one round."""

    def __init__(self, *, database_url: str, key: str | bytes,
                 thresholds: A.Thresholds = A.DEFAULT, processes: int = 1,
                 batch: int = 8, poll_s: float = 0.5, pool: Executor | None = None) -> None:
        self.database_url = database_url
        self.key = load_key(key)
        self.th = thresholds
        self.processes = processes
        self.batch = batch
        self.poll_s = poll_s
        self._pool = pool
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.verified = 0

    @property
    def pool(self) -> Executor:
        if self._pool is None:
            self._pool = process_pool(self.processes)
        return self._pool

    def start(self) -> None:
        _ = self.pool
        self._thread = threading.Thread(target=self._loop, name="checkin-verifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with connect(self.database_url) as conn:
                    while not self._stop.is_set():
                        if self.run_once(conn) == 0:
                            self._stop.wait(self.poll_s)
            except Exception:
                log.exception("check-in verifier: round failed (retrying)")
                self._stop.wait(2.0)

    def run_once(self, conn: Conn) -> int:
        """Verify up to `batch` queued check-ins; commits; returns how many."""
        pending = _claim(conn, self.batch)
        if not pending:
            conn.rollback()
            return 0
        jobs = []
        for p in pending:
            try:
                frames = decrypt_frames(self.key, p.ciphertext, device_id=p.device_id, seq=p.seq)
            except (InvalidTag, ValueError):
                frames = []
            # the request's challenge rules over the one the app echoes
            challenge = _asked_challenge(conn, p) or p.challenge
            jobs.append(self.pool.submit(
                _verify, frames, _template_for(conn, self.key, p.case_id), challenge,
                _earlier_hashes(conn, p), self.th))
        verdicts = []
        for p, job in zip(pending, jobs, strict=True):
            try:
                verdicts.append(job.result())
            except Exception:
                log.exception("check-in verifier: device %s seq %s failed", p.device_id, p.seq)
                verdicts.append(A.Verdict(reasons=["verification_error"]))
        mark_batch_replays([(p.case_id or p.device_id, v) for p, v in
                            zip(pending, verdicts, strict=True)], self.th)
        for p, v in zip(pending, verdicts, strict=True):
            record_verdict(conn, p, v, th=self.th)
            self.verified += 1
        conn.commit()
        return len(pending)


def mark_batch_replays(items: Sequence[tuple[Any, A.Verdict]], th: A.Thresholds) -> None:
    """Check-ins verified in one round do not see each other's frame hashes in the
    database: a later one (in queue order) repeating an earlier one's frames of the same
    case is a replay too."""
    seen: dict[Any, list[int]] = {}
    for group, v in items:
        mine = [int(h, 16) for h in v.hashes]
        earlier = seen.setdefault(group, [])
        if A.Reason.REPLAYED_FRAMES not in v.reasons and A.replayed(mine, earlier, th):
            v.reasons.append(A.Reason.REPLAYED_FRAMES)
        earlier.extend(mine)


def record_verdict(conn: Conn, p: Pending, v: A.Verdict, *, th: A.Thresholds) -> None:
    """Store the verdict with the check-in, act on it, drop the frames (no commit)."""
    conn.execute(
        "UPDATE checkins SET passed = %s, similarity = %s, challenge = %s, verdict = %s"
        " WHERE device_id = %s AND seq = %s AND ts = %s",
        (v.passed, v.similarity, v.challenge, orjson.dumps(v.to_json()).decode(),
         p.device_id, p.seq, p.ts),
    )
    conn.execute("DELETE FROM checkin_frames WHERE device_id = %s AND seq = %s AND ts = %s",
                 (p.device_id, p.seq, p.ts))
    if p.case_id is None:
        return
    c = Checkin(p.seq, p.ts, "face", [], None, p.request_id, None, None, None)
    if v.passed:
        mark_request_passed(conn, case_id=p.case_id, checkin=c)
        return
    open_episode(
        conn, case_id=p.case_id, type=AlertType.CHECKIN_FAILED, started_at=p.ts,
        ended_at=p.ts, device_id=p.device_id,
        evidence={
            "reason": v.reasons[0], "reasons": list(v.reasons), "seq": p.seq,
            "method": "face", "request_id": p.request_id, "verdict": v.to_json(),
            "thresholds": {"similarity": th.match},
        },
    )


def verify_all(conn: Conn, verifier: CheckinVerifier, *, rounds: int = 1000) -> int:
    """Run rounds until the queue is empty (tests, the demo); returns how many."""
    total = 0
    for _ in range(rounds):
        n = verifier.run_once(conn)
        if n == 0:
            break
        total += n
    return total


__all__: Sequence[str] = ("CheckinVerifier", "mark_batch_replays", "process_pool",
                          "record_verdict", "verify_all")
