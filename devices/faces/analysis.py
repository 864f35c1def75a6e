"""Pure face analysis on plain data: numpy images and (68, 2) landmark arrays.

Landmarks follow the iBUG 68-point layout: jaw 0-16, nose tip 30, the eye on the image's
left 36-41, the eye on the image's right 42-47, mouth corners 48 and 54. Frames are taken
as the camera sensor delivers them (not mirrored): a person who turns to their own left
moves their nose towards the image's right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

Points = npt.NDArray[np.float64]
Gray = npt.NDArray[np.float64]


class Reason(StrEnum):
    """Why a check-in failed (the `checkin_failed` evidence) or a photo was refused."""

    NO_FACE = "no_face"
    SEVERAL_FACES = "several_faces"
    NO_MATCH = "no_match"
    CHALLENGE_NOT_PERFORMED = "challenge_not_performed"
    REPLAYED_FRAMES = "replayed_frames"
    BAD_IMAGE = "bad_image"
    TOO_LARGE = "too_large"
    FRAMES_OUT_OF_WINDOW = "frames_out_of_window"
    UNTRUSTED_DEVICE_BIOMETRICS = "untrusted_device_biometrics"
    NO_TEMPLATE = "no_template"
    # enrolment photo quality
    FACE_TOO_SMALL = "face_too_small"
    BLURRED = "blurred"
    TURNED_AWAY = "turned_away"
    TOO_DARK = "too_dark"
    TOO_BRIGHT = "too_bright"


class Challenge(StrEnum):
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    BLINK = "blink"
    SMILE = "smile"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Every tunable number of the verification (defaults from `probation bench biometrics`)."""

    match: float = 0.955  # cosine similarity to the template (bench: FAR <= 0.1 %)
    min_face_px: int = 80  # enrolment: face box width
    min_frame_face_px: int = 60  # check-in frames
    min_sharpness: float = 15.0  # variance of the Laplacian on the 128-px face crop
    max_frontal_yaw: float = 0.2  # |yaw| of a turn's first frame (inter-ocular distances)
    max_enrol_yaw: float = 0.2
    enrol_pitch: float = 0.6  # nose tip below the eye line, frontal (inter-ocular distances)
    max_enrol_pitch_dev: float = 0.3
    min_brightness: float = 40.0
    max_brightness: float = 220.0
    max_clipped: float = 0.25  # share of face pixels at 0-5 or 250-255
    turn_delta: float = 0.15  # yaw change that counts as a turn
    blink_ratio: float = 0.7  # closed / open eye aspect ratio at most
    blink_max_closed: float = 0.21
    smile_ratio: float = 1.15  # mouth width / inter-ocular distance grows by at least
    replay_distance: int = 12  # pHash Hamming distance (of 255 bits) at most: same frame
    frames_window_s: float = 5.0


DEFAULT = Thresholds()


# ----------------------------------------------------------------------- geometry


def _eye_centres(p: Points) -> tuple[Points, Points]:
    return p[36:42].mean(axis=0), p[42:48].mean(axis=0)


def interocular(p: Points) -> float:
    a, b = _eye_centres(p)
    return float(np.linalg.norm(b - a))


def yaw(p: Points) -> float:
    """Horizontal offset of the nose tip from the eyes' midpoint, in inter-ocular distances.

    0 for a frontal face; positive when the person turns to their own left (nose towards
    the image's right), negative to their right. Roll is removed by measuring along the
    eye line.
    """
    a, b = _eye_centres(p)
    axis = b - a
    d = float(np.linalg.norm(axis))
    if d == 0.0:
        return 0.0
    return float(np.dot(p[30] - (a + b) / 2.0, axis / d) / d)


def pitch(p: Points) -> float:
    """Distance of the nose tip below the eye line, in inter-ocular distances (about 0.5-0.65
    for a frontal face; smaller when the head tilts back or bows far forward)."""
    a, b = _eye_centres(p)
    axis = b - a
    d = float(np.linalg.norm(axis))
    if d == 0.0:
        return 0.0
    normal = np.array([-axis[1], axis[0]]) / d
    return float(np.dot(p[30] - (a + b) / 2.0, normal) / d)


def eye_aspect_ratio(p: Points) -> float:
    """Mean eye aspect ratio of both eyes (Soukupová and Čech 2016): ~0.3 open, <0.2 closed."""
    def ear(e: Points) -> float:
        w = float(np.linalg.norm(e[0] - e[3]))
        if w == 0.0:
            return 0.0
        return float((np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4])) / (2.0 * w))

    return (ear(p[36:42]) + ear(p[42:48])) / 2.0


def mouth_width(p: Points) -> float:
    """Mouth corner distance in inter-ocular distances."""
    d = interocular(p)
    return 0.0 if d == 0.0 else float(np.linalg.norm(p[54] - p[48]) / d)


# ----------------------------------------------------------------------- image quality


def to_gray(rgb: npt.NDArray[np.uint8]) -> Gray:
    a = np.asarray(rgb, dtype=np.float64)
    if a.ndim == 2:
        return a
    return a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114


def crop(gray: Gray, box: tuple[int, int, int, int]) -> Gray:
    left, top, right, bottom = box
    h, w = gray.shape
    return gray[max(top, 0):min(bottom, h), max(left, 0):min(right, w)]


def resample(gray: Gray, size: int) -> Gray:
    """Nearest-neighbour resample of a 2-D array to size x size (numpy only)."""
    h, w = gray.shape
    if h == 0 or w == 0:
        return np.zeros((size, size))
    ys = (np.arange(size) * h / size).astype(np.intp)
    xs = (np.arange(size) * w / size).astype(np.intp)
    return gray[np.ix_(ys, xs)]


def laplacian_variance(gray: Gray) -> float:
    """Variance of the 4-neighbour Laplacian: low for a blurred image."""
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    lap = (gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1]
           - 4.0 * gray[1:-1, 1:-1])
    return float(lap.var())


def sharpness(face: Gray) -> float:
    """Laplacian variance of a face crop resampled to 128 x 128 (independent of size)."""
    return laplacian_variance(resample(face, 128))


@dataclass(frozen=True, slots=True)
class Quality:
    face_px: int
    sharpness: float
    yaw: float
    pitch: float
    brightness: float
    clipped: float


def quality(gray: Gray, box: tuple[int, int, int, int], p: Points) -> Quality:
    face = crop(gray, box)
    clipped = float(np.mean((face <= 5) | (face >= 250))) if face.size else 1.0
    return Quality(
        face_px=box[2] - box[0], sharpness=sharpness(face), yaw=yaw(p), pitch=pitch(p),
        brightness=float(face.mean()) if face.size else 0.0, clipped=clipped,
    )


def quality_reasons(q: Quality, th: Thresholds = DEFAULT) -> list[Reason]:
    """What makes an enrolment photo unusable (empty: usable)."""
    out: list[Reason] = []
    if q.face_px < th.min_face_px:
        out.append(Reason.FACE_TOO_SMALL)
    if q.sharpness < th.min_sharpness:
        out.append(Reason.BLURRED)
    if abs(q.yaw) > th.max_enrol_yaw or abs(q.pitch - th.enrol_pitch) > th.max_enrol_pitch_dev:
        out.append(Reason.TURNED_AWAY)
    if q.brightness < th.min_brightness:
        out.append(Reason.TOO_DARK)
    elif q.brightness > th.max_brightness or q.clipped > th.max_clipped:
        out.append(Reason.TOO_BRIGHT)
    return out


# ----------------------------------------------------------------------- challenges


def challenge_performed(
    challenge: Challenge | str, landmarks: Sequence[Points], th: Thresholds = DEFAULT
) -> bool:
    """Whether the frames' landmarks (one face per frame, in frame order) show the gesture.

    Each gesture is a change across frames measured from the first frame: a single photo
    of a turned face or a smile, or a face that stays still, does not do.
    - turn_left / turn_right: the first frame roughly frontal (|yaw| <= `max_frontal_yaw`),
      a later frame's yaw differs from it by `turn_delta` in the asked direction;
    - blink: eyes open in the first frame (eye aspect ratio over `blink_max_closed`), a
      later frame's at most `blink_ratio` of it and under `blink_max_closed`;
    - smile: the mouth widens by `smile_ratio` (mouth width over inter-ocular distance).
    """
    if len(landmarks) < 2:
        return False
    first, rest = landmarks[0], landmarks[1:]
    y0 = yaw(first)
    c = Challenge(challenge)
    if c in (Challenge.TURN_LEFT, Challenge.TURN_RIGHT) and abs(y0) > th.max_frontal_yaw:
        return False
    if c is Challenge.TURN_LEFT:
        return any(yaw(p) - y0 >= th.turn_delta for p in rest)
    if c is Challenge.TURN_RIGHT:
        return any(y0 - yaw(p) >= th.turn_delta for p in rest)
    if c is Challenge.BLINK:
        e0 = eye_aspect_ratio(first)
        limit = min(th.blink_ratio * e0, th.blink_max_closed)
        return e0 > th.blink_max_closed and any(eye_aspect_ratio(p) <= limit for p in rest)
    m0 = mouth_width(first)
    return m0 > 0 and any(mouth_width(p) >= th.smile_ratio * m0 for p in rest)


# ----------------------------------------------------------------------- replay


def _dct_matrix(n: int) -> npt.NDArray[np.float64]:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n))
    m[0] /= np.sqrt(2.0)
    return m * np.sqrt(2.0 / n)


HASH_SIDE = 64  # the image is box-averaged to 64 x 64
HASH_FREQ = 16  # the 16 x 16 lowest frequencies: 255 bits (the DC term is left out)
_DCT = _dct_matrix(HASH_SIDE)


def phash(gray: Gray) -> int:
    """256-bit perceptual hash (DCT hash): the image box-averaged to 64 x 64, the 16 x 16
    lowest DCT frequencies without DC, a bit set for each above their median.

    A re-encoded or rescaled copy of a frame stays within a few bits (at most 10 of 255
    in `probation bench biometrics`); two captures of a person differ in far more.
    """
    h, w = gray.shape
    ys = np.linspace(0, h, HASH_SIDE + 1).astype(np.intp)
    xs = np.linspace(0, w, HASH_SIDE + 1).astype(np.intp)
    if h < HASH_SIDE or w < HASH_SIDE:
        gray = resample(gray, HASH_SIDE)
        ys = xs = np.arange(HASH_SIDE + 1)
    small = np.add.reduceat(np.add.reduceat(gray, ys[:-1], axis=0), xs[:-1], axis=1)
    small = small / np.outer(np.diff(ys), np.diff(xs))
    low = (_DCT @ small @ _DCT.T)[:HASH_FREQ, :HASH_FREQ].ravel()[1:]
    bits = low > np.median(low)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def replayed(hashes: Sequence[int], earlier: Sequence[int], th: Thresholds = DEFAULT) -> bool:
    """Whether any frame is identical or near-identical to a frame of an earlier check-in."""
    return any(hamming(h, e) <= th.replay_distance for h in hashes for e in earlier)


# ----------------------------------------------------------------------- match


def cosine(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"embedding length {x.size} != template length {y.size}")
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0.0 or ny == 0.0:
        return 0.0
    return float(np.clip(np.dot(x, y) / (nx * ny), -1.0, 1.0))


def template_of(embeddings: Sequence[npt.ArrayLike]) -> npt.NDArray[np.float32]:
    """The stored template: the mean of the unit-length embeddings, unit length."""
    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    m = e.mean(axis=0)
    return (m / np.linalg.norm(m)).astype(np.float32)


def match_score(template: npt.ArrayLike, embeddings: Sequence[npt.ArrayLike]) -> float:
    """The weakest frame's similarity: every frame must show the enrolled person."""
    return min(cosine(template, e) for e in embeddings)


# ----------------------------------------------------------------------- verdict


@dataclass(slots=True)
class Verdict:
    """The outcome of one check-in's verification (stored with it, evidence on failure)."""

    reasons: list[str] = field(default_factory=list)
    similarity: float | None = None
    challenge: str | None = None
    challenge_seen: bool | None = None
    faces: list[int] = field(default_factory=list)  # faces found per frame
    hashes: list[str] = field(default_factory=list)  # pHash per frame, 64 hex digits
    frame_errors: list[str | None] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def to_json(self) -> dict[str, object]:
        return {
            "passed": self.passed, "reasons": list(self.reasons),
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "challenge": self.challenge, "challenge_seen": self.challenge_seen,
            "faces": list(self.faces), "hashes": list(self.hashes),
        }


def face_count_reason(faces: Sequence[int]) -> Reason | None:
    if any(n > 1 for n in faces):
        return Reason.SEVERAL_FACES
    if any(n == 0 for n in faces):
        return Reason.NO_FACE
    return None


def window_ok(times: Sequence[float | None], th: Thresholds = DEFAULT) -> bool:
    """Frames that carry a capture time (EXIF) must span at most `frames_window_s`."""
    known = [t for t in times if t is not None]
    return len(known) < 2 or max(known) - min(known) <= th.frames_window_s
