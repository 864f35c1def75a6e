"""Pure face analysis on plain data: geometry, challenges, quality, hashes, verdict."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from devices.faces import analysis as A


def face(*, yaw: float = 0.0, eye_open: float = 1.0, mouth: float = 1.0) -> A.Points:
    """A 68-point face: eyes 60 px apart, nose tip shifted by `yaw` inter-ocular distances,
    eyelids opened by `eye_open` (1: an eye aspect ratio of 0.3), mouth width scaled."""
    p = np.zeros((68, 2))
    p[0:17] = np.column_stack([np.linspace(60, 200, 17), np.full(17, 120.0)])
    for start, cx in ((36, 100.0), (42, 160.0)):
        w, h = 30.0, 0.3 * 30.0 * eye_open
        p[start:start + 6] = [
            (cx - w / 2, 100), (cx - w / 6, 100 - h / 2), (cx + w / 6, 100 - h / 2),
            (cx + w / 2, 100), (cx + w / 6, 100 + h / 2), (cx - w / 6, 100 + h / 2),
        ]
    p[30] = (130.0 + yaw * 60.0, 136.0)
    p[48] = (130.0 - 27.0 * mouth, 170.0)
    p[54] = (130.0 + 27.0 * mouth, 170.0)
    return p


def test_pose_eyes_and_mouth_measures():
    assert A.yaw(face()) == pytest.approx(0.0)
    assert A.yaw(face(yaw=0.3)) == pytest.approx(0.3)
    assert A.yaw(face(yaw=-0.3)) == pytest.approx(-0.3)
    assert A.pitch(face()) == pytest.approx(0.6)
    assert A.eye_aspect_ratio(face()) == pytest.approx(0.3)
    assert A.eye_aspect_ratio(face(eye_open=0.3)) == pytest.approx(0.09)
    assert A.mouth_width(face(mouth=1.2)) == pytest.approx(1.08)


def test_yaw_ignores_roll():
    p = face(yaw=0.25)
    t = np.deg2rad(20)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    assert A.yaw(p @ rot.T) == pytest.approx(0.25)


@pytest.mark.parametrize(("challenge", "frames", "seen"), [
    ("turn_left", [face(), face(yaw=0.05), face(yaw=0.3)], True),
    ("turn_left", [face(), face(yaw=-0.3)], False),
    ("turn_right", [face(), face(yaw=-0.3), face()], True),
    ("turn_right", [face(yaw=-0.3)] * 3, False),  # a still photo of a turned face
    ("turn_left", [face(yaw=0.5), face(yaw=0.8)], False),  # must start near frontal
    ("blink", [face(), face(eye_open=0.3), face()], True),
    ("blink", [face(), face(eye_open=0.9), face()], False),
    ("blink", [face(eye_open=0.4), face(eye_open=0.1)], False),  # not open at first
    ("smile", [face(), face(mouth=1.2)], True),
    ("smile", [face(mouth=1.2), face(mouth=1.2)], False),
    ("smile", [face()], False),
])
def test_challenge_detection(challenge, frames, seen):
    assert A.challenge_performed(challenge, frames) is seen


def test_unknown_challenge_is_an_error():
    with pytest.raises(ValueError):
        A.challenge_performed("nod", [face(), face()])


def _photo(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((320, 240), Image.Resampling.BICUBIC))


def _reencode(rgb: np.ndarray, scale: float, quality: int) -> np.ndarray:
    im = Image.fromarray(rgb)
    im = im.resize((int(im.width * scale), int(im.height * scale)))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_phash_survives_reencoding_and_separates_images():
    a = A.phash(A.to_gray(_photo(1)))
    again = A.phash(A.to_gray(_reencode(_photo(1), 0.9, 50)))
    other = A.phash(A.to_gray(_photo(2)))
    assert a.bit_length() <= 256
    assert A.hamming(a, again) <= A.DEFAULT.replay_distance
    assert A.hamming(a, other) > 60
    assert A.replayed([other, again], [a])
    assert not A.replayed([other], [a])
    assert not A.replayed([a], [])


def test_sharpness_drops_with_blur():
    rgb = _photo(3)
    blurred = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(6)))
    g, gb = A.to_gray(rgb), A.to_gray(blurred)
    assert A.sharpness(gb) < A.sharpness(g) / 5


def test_quality_reasons():
    good = A.Quality(face_px=150, sharpness=200, yaw=0.02, pitch=0.6, brightness=120, clipped=0)
    assert A.quality_reasons(good) == []
    bad = A.Quality(face_px=40, sharpness=2, yaw=0.5, pitch=0.6, brightness=20, clipped=0)
    assert A.quality_reasons(bad) == [A.Reason.FACE_TOO_SMALL, A.Reason.BLURRED,
                                      A.Reason.TURNED_AWAY, A.Reason.TOO_DARK]
    bright = A.Quality(face_px=150, sharpness=200, yaw=0, pitch=0.6, brightness=200, clipped=0.5)
    assert A.quality_reasons(bright) == [A.Reason.TOO_BRIGHT]


def test_template_and_match_score():
    rng = np.random.default_rng(0)
    person = rng.normal(size=128)
    shots = [person + rng.normal(scale=0.1, size=128) for _ in range(3)]
    t = A.template_of(shots)
    assert np.linalg.norm(t) == pytest.approx(1.0, abs=1e-5)
    assert A.match_score(t, shots) > 0.98
    stranger = rng.normal(size=128)
    assert A.match_score(t, [*shots, stranger]) < 0.5  # one frame of someone else
    with pytest.raises(ValueError):
        A.cosine(t, np.ones(64))


def test_face_counts_and_window():
    assert A.face_count_reason([1, 1, 1]) is None
    assert A.face_count_reason([1, 0, 1]) is A.Reason.NO_FACE
    assert A.face_count_reason([1, 2, 0]) is A.Reason.SEVERAL_FACES
    assert A.window_ok([None, None, None])
    assert A.window_ok([100.0, None, 104.0])
    assert not A.window_ok([100.0, 103.0, 106.0])


def test_verdict_json():
    v = A.Verdict(challenge="blink")
    assert v.passed
    v.reasons.append(A.Reason.NO_MATCH)
    v.similarity = 0.812345
    j = v.to_json()
    assert j["passed"] is False and j["reasons"] == ["no_match"] and j["similarity"] == 0.8123


def test_replays_within_one_verification_round():
    from devices.checkin_verifier import mark_batch_replays

    def v(*hashes: int) -> A.Verdict:
        return A.Verdict(hashes=[f"{h:064x}" for h in hashes])

    a, b = (1 << 200) - 1, (1 << 100) - 1  # far apart (more than 90 bits)
    first, again, other_case, fresh = v(a, a), v(a ^ 0b111, b), v(a), v(b ^ (1 << 250))
    mark_batch_replays([("c1", first), ("c1", again), ("c2", other_case), ("c1", fresh)],
                       A.DEFAULT)
    assert first.passed and other_case.passed
    assert again.reasons == ["replayed_frames"]
    assert fresh.reasons == ["replayed_frames"]  # b came with `again` earlier in the round
