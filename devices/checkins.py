"""Biometric check-in evaluation: the ingest pipeline's `CheckinJudge` and its follow-up.

Two steps, because the pipeline's check-in judge must have no side effects (it also sees
redelivered check-ins that will not be stored again):

1. `BiometricCheckins.evaluate` (the `devices.pipeline.CheckinJudge`): decrypts the face
   template enrolled for the case's subject (`devices.biometrics`), computes the cosine
   similarity with the submitted embedding (numpy) and decides: passed when similarity
   ≥ 0.6 and liveness ≥ 0.8 (configurable). Reads only.
2. `CheckinOutcomes.on_batch` (the `checkin_outcomes` after-store stage, called with
   the check-ins that were actually stored): a passing check-in marks its request `passed`
   (the one named by `request_id`, the request's or its command's id, else the case's oldest open request whose window
   holds it); a failing one opens a `checkin_failed` alert (an instantaneous episode).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from cryptography.exceptions import InvalidTag

from alerts.models import AlertType
from alerts.service import open_episode
from devices.biometrics import cosine_similarity, decrypt_template, encrypt_frames, load_key
from devices.pipeline import CheckinVerdict, DeviceBatch, StoredCheckin
from devices.protocol import Checkin

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

# A check-in may arrive a little before its request's due time (device clocks).
EARLY_S = 120


@dataclass(frozen=True, slots=True)
class CheckinThresholds:
    similarity: float = 0.6
    liveness: float = 0.8


def _template(conn: Conn, case_id: uuid.UUID) -> tuple[uuid.UUID, str, bytes] | None:
    row = conn.execute(
        "SELECT t.subject_id, t.method, t.ciphertext FROM cases c"
        " JOIN biometric_templates t ON t.subject_id = c.subject_id WHERE c.id = %s",
        (case_id,),
    ).fetchone()
    return None if row is None else (row[0], row[1], bytes(row[2]))


DEFAULT_CHALLENGES = ("turn_left", "turn_right", "blink", "smile")

# Camera frames: decided by `devices.checkin_verifier` after the batch is stored.
PENDING = CheckinVerdict(False, None, pending=True)
# An app-computed embedding from a device not marked trusted for biometrics.
UNTRUSTED = CheckinVerdict(False, None, reason="untrusted_device_biometrics")


def random_challenge(challenges: Sequence[str] = DEFAULT_CHALLENGES) -> str:
    """The gesture a check-in request asks for, drawn with the system's CSPRNG (the app
    cannot predict it, so pre-recorded frames cannot show it)."""
    return secrets.choice(list(challenges))


def _trusted(conn: Conn, device_id: uuid.UUID) -> bool:
    row = conn.execute("SELECT trusted_biometrics FROM devices WHERE id = %s",
                       (device_id,)).fetchone()
    return bool(row and row[0])


def evaluate_checkins(
    conn: Conn,
    *,
    device_id: uuid.UUID,
    case_id: uuid.UUID | None,
    checkins: Sequence[Checkin],
    key: str | bytes,
    thresholds: CheckinThresholds | None = None,
) -> list[CheckinVerdict]:
    """One verdict per check-in (same order); reads the template, writes nothing.

    Check-ins with camera frames are `pending` (the verifier decides them). Embeddings are
    judged only from devices trusted for biometrics, else `untrusted_device_biometrics`.
    No case, no enrolled template, another method, an undecryptable template or a
    length mismatch → not passed with similarity None.
    """
    th = thresholds or CheckinThresholds()
    if not checkins:
        return []
    if all(c.frames is not None for c in checkins):
        return [PENDING for _ in checkins]
    if not _trusted(conn, device_id):
        return [PENDING if c.frames is not None else UNTRUSTED for c in checkins]
    tpl = _template(conn, case_id) if case_id is not None else None
    if tpl is None:
        return [CheckinVerdict(False, None) for _ in checkins]
    subject_id, method, blob = tpl
    try:
        template = decrypt_template(load_key(key), blob, subject_id=subject_id, method=method)
    except (InvalidTag, ValueError):
        log.error("check-ins: the template of subject %s does not decrypt with the "
                  "configured key (device %s)", subject_id, device_id)
        return [CheckinVerdict(False, None) for _ in checkins]
    out: list[CheckinVerdict] = []
    for c in checkins:
        if c.frames is not None:
            out.append(PENDING)
            continue
        emb = np.asarray(c.embedding, dtype=np.float64)
        if c.method != method or emb.shape != template.shape:
            out.append(CheckinVerdict(False, None))
            continue
        sim = cosine_similarity(template, emb)
        live = c.liveness is not None and c.liveness >= th.liveness
        out.append(CheckinVerdict(sim >= th.similarity and live, sim))
    return out


class BiometricCheckins:
    """The ingest pipeline's check-in judge (`devices.pipeline.CheckinJudge`)."""

    def __init__(self, *, key: str | bytes, thresholds: CheckinThresholds | None = None) -> None:
        self.key = load_key(key)
        self.thresholds = thresholds or CheckinThresholds()

    def evaluate(
        self, conn: Conn, *, device_id: uuid.UUID, case_id: uuid.UUID | None,
        checkins: Sequence[Checkin],
    ) -> Sequence[CheckinVerdict]:
        return evaluate_checkins(conn, device_id=device_id, case_id=case_id, checkins=checkins,
                                 key=self.key, thresholds=self.thresholds)


def failure_reason(
    checkin: Checkin, verdict: CheckinVerdict, thresholds: CheckinThresholds
) -> str:
    """Why a check-in did not pass: the verdict's own reason, else `no_template`,
    `face_mismatch` or `liveness`."""
    if verdict.reason is not None:
        return verdict.reason
    if verdict.similarity is None:
        return "no_template"
    if verdict.similarity < thresholds.similarity:
        return "face_mismatch"
    return "liveness"


def _request_uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def apply_checkin_outcomes(
    conn: Conn,
    *,
    device_id: uuid.UUID,
    case_id: uuid.UUID,
    checkins: Sequence[StoredCheckin],
    thresholds: CheckinThresholds | None = None,
    key: str | bytes | None = None,
) -> list[uuid.UUID]:
    """Act on stored check-ins: mark requests passed, open `checkin_failed`; returns the
    ids of alerts opened."""
    th = thresholds or CheckinThresholds()
    opened: list[uuid.UUID] = []
    for sc in checkins:
        c, v = sc.checkin, sc.verdict
        if v.pending:
            if key is None:
                raise RuntimeError("check-ins with frames need the biometric key")
            queue_frames(conn, key=key, device_id=device_id, case_id=case_id, checkin=c)
            continue
        if v.passed:
            mark_request_passed(conn, case_id=case_id, checkin=c)
            continue
        reason = failure_reason(c, v, th)
        ep = open_episode(
            conn, case_id=case_id, type=AlertType.CHECKIN_FAILED, started_at=c.ts,
            ended_at=c.ts, device_id=device_id,
            evidence={
                "reason": reason, "seq": c.seq, "method": c.method,
                "similarity": None if v.similarity is None else round(v.similarity, 4),
                "liveness": c.liveness, "request_id": c.request_id,
                "thresholds": {"similarity": th.similarity, "liveness": th.liveness},
                "location": None if c.lat is None else {"lat": c.lat, "lon": c.lon, "acc": c.acc},
            },
        )
        if ep.created:
            opened.append(ep.alert_id)
    return opened


def queue_frames(conn: Conn, *, key: str | bytes, device_id: uuid.UUID,
                 case_id: uuid.UUID | None, checkin: Checkin) -> None:
    """Keep a stored check-in's frames, encrypted, for the verifier."""
    assert checkin.frames is not None
    conn.execute(
        "INSERT INTO checkin_frames (device_id, seq, ts, case_id, request_id, challenge,"
        " ciphertext) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (device_id, checkin.seq, checkin.ts, case_id, checkin.request_id, checkin.challenge,
         encrypt_frames(key, checkin.frames, device_id=device_id, seq=checkin.seq)),
    )


def mark_request_passed(conn: Conn, *, case_id: uuid.UUID, checkin: Checkin) -> None:
    """The request a passing check-in answers becomes `passed`."""
    c = checkin
    conn.execute(
        """
        UPDATE checkin_requests SET status = 'passed', resolved_at = %(ts)s
        WHERE id = (
            SELECT id FROM checkin_requests
            WHERE case_id = %(case)s AND status IN ('scheduled', 'sent')
              AND (id = %(rid)s OR command_id = %(rid)s OR (due_at - make_interval(secs => %(early)s) <= %(ts)s
                                    AND %(ts)s <= deadline))
            ORDER BY (id = %(rid)s OR command_id = %(rid)s) IS TRUE DESC, due_at
            LIMIT 1 FOR UPDATE)
        """,
        {"ts": c.ts, "case": case_id, "rid": _request_uuid(c.request_id),
         "early": EARLY_S},
    )


class CheckinOutcomes:
    """The `checkin_outcomes` after-store stage: acts on stored check-ins only."""

    name = "checkin_outcomes"

    def __init__(self, *, thresholds: CheckinThresholds | None = None,
                 key: str | bytes | None = None) -> None:
        self.thresholds = thresholds or CheckinThresholds()
        self.key = None if key is None else load_key(key)

    def on_batch(self, conn: Conn, batches: Sequence[DeviceBatch]) -> None:
        for b in batches:
            if b.checkins and b.case_id is not None:
                apply_checkin_outcomes(conn, device_id=b.device_id, case_id=b.case_id,
                                       checkins=b.checkins, thresholds=self.thresholds,
                                       key=self.key)

