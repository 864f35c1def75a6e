"""Check-in verification and enrolment assessment: the model applied to frames and photos.

Plain data in, plain data out (bytes, numpy arrays, `Verdict`); no database. The
check-in worker runs `verify_checkin` in a process pool, off the ingest path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from devices.faces import analysis as A
from devices.faces.images import ImageError, decode
from devices.faces.model import FaceModel, face_model


def verify_checkin(
    frames: Sequence[bytes],
    *,
    template: npt.ArrayLike | None,
    challenge: str | None,
    earlier_hashes: Sequence[int] = (),
    th: A.Thresholds = A.DEFAULT,
    model: FaceModel | None = None,
) -> A.Verdict:
    """The verdict on one check-in's frames (JPEG/PNG bytes, in capture order).

    Reasons, all that apply: `bad_image` / `too_large` (then nothing else is judged),
    `frames_out_of_window`, `no_face` / `several_faces`, `no_template`, `no_match`,
    `challenge_not_performed`, `replayed_frames`.
    """
    v = A.Verdict(challenge=challenge)
    images = []
    times: list[float | None] = []
    for raw in frames:
        try:
            rgb, taken = decode(raw)
        except ImageError as e:
            v.reasons.append(e.reason)
            return v
        images.append(rgb)
        times.append(taken)
    if not A.window_ok(times, th):
        v.reasons.append(A.Reason.FRAMES_OUT_OF_WINDOW)
    grays = [A.to_gray(im) for im in images]
    hashes = [A.phash(g) for g in grays]
    v.hashes = [f"{h:064x}" for h in hashes]
    m = model or face_model()
    detected = [m.detect(im) for im in images]
    v.faces = [len(d) for d in detected]
    count = A.face_count_reason(v.faces)
    if count is not None:
        v.reasons.append(count)
    else:
        faces = [d[0] for d in detected]
        if template is None:
            v.reasons.append(A.Reason.NO_TEMPLATE)
        else:
            embs = [m.embed(im, f) for im, f in zip(images, faces, strict=True)]
            v.similarity = A.match_score(template, embs)
            if v.similarity < th.match:
                v.reasons.append(A.Reason.NO_MATCH)
        if challenge is not None:
            v.challenge_seen = A.challenge_performed(challenge, [f.landmarks for f in faces], th)
            if not v.challenge_seen:
                v.reasons.append(A.Reason.CHALLENGE_NOT_PERFORMED)
    if A.replayed(hashes, earlier_hashes, th):
        v.reasons.append(A.Reason.REPLAYED_FRAMES)
    return v


@dataclass(slots=True)
class PhotoAssessment:
    """One enrolment photo: usable or the reasons it is refused; its embedding if usable."""

    index: int
    reasons: list[str] = field(default_factory=list)
    faces: int = 0
    quality: A.Quality | None = None
    embedding: npt.NDArray[np.float32] | None = None

    @property
    def accepted(self) -> bool:
        return not self.reasons


def assess_photo(
    raw: bytes, *, index: int = 0, th: A.Thresholds = A.DEFAULT, model: FaceModel | None = None,
) -> PhotoAssessment:
    """Exactly one face, of enrolment quality (size, sharpness, pose, exposure)."""
    out = PhotoAssessment(index)
    try:
        rgb, _ = decode(raw)
    except ImageError as e:
        out.reasons.append(e.reason)
        return out
    m = model or face_model()
    faces = m.detect(rgb)
    out.faces = len(faces)
    count = A.face_count_reason([len(faces)])
    if count is not None:
        out.reasons.append(count)
        return out
    f = faces[0]
    out.quality = A.quality(A.to_gray(rgb), f.box, f.landmarks)
    out.reasons.extend(A.quality_reasons(out.quality, th))
    if not out.reasons:
        out.embedding = m.embed(rgb, f)
    return out
