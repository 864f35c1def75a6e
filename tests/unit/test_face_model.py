"""The real face model (dlib, loaded from `face-recognition-models`) on real photographs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from devices.faces import analysis as A
from devices.faces.images import decode, encode_jpeg
from devices.faces.verify import assess_photo, verify_checkin

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"


def photo(name: str) -> bytes:
    return (FACES / f"{name}.jpg").read_bytes()


@pytest.fixture(scope="module")
def obama_template() -> np.ndarray:
    embs = []
    for name in ("obama_portrait", "obama_briefing"):
        a = assess_photo(photo(name))
        assert a.accepted, (name, a.reasons)
        embs.append(a.embedding)
    return A.template_of(embs)


def test_enrolment_refuses_what_it_cannot_use():
    assert assess_photo(b"not an image").reasons == ["bad_image"]
    rgb, _ = decode(photo("obama_portrait"))
    blank = encode_jpeg(np.full_like(rgb, 128))
    assert assess_photo(blank).reasons == ["no_face"]
    two = encode_jpeg(np.concatenate([rgb, decode(photo("biden_portrait"))[0][:rgb.shape[0],
                                                                          :rgb.shape[1]]], axis=1))
    assert assess_photo(two).reasons == ["several_faces"]
    # head bowed: the nose tip close to the eye line (pitch 0.29)
    assert assess_photo(photo("obama_standing")).reasons == ["turned_away"]
    tiny = encode_jpeg(rgb, max_side=150)
    assert "face_too_small" in assess_photo(tiny).reasons


def test_honest_checkin_passes(obama_template):
    frames = [photo("obama_portrait"), photo("obama_briefing"), photo("obama_portrait")]
    v = verify_checkin(frames, template=obama_template, challenge="turn_left")
    assert v.reasons == [] and v.passed
    assert v.similarity is not None and v.similarity >= A.DEFAULT.match
    assert v.faces == [1, 1, 1] and v.challenge_seen


def test_impostor_and_wrong_gesture_fail(obama_template):
    frames = [photo("biden_portrait"), photo("biden_portrait_2021"), photo("biden_portrait")]
    v = verify_checkin(frames, template=obama_template, challenge="smile")
    assert "no_match" in v.reasons and v.similarity is not None and v.similarity < 0.9
    frames = [photo("obama_portrait"), photo("obama_briefing"), photo("obama_portrait")]
    v = verify_checkin(frames, template=obama_template, challenge="turn_right")
    assert v.reasons == ["challenge_not_performed"]


def test_replayed_frames_fail(obama_template):
    frames = [photo("obama_briefing"), photo("obama_portrait"), photo("obama_portrait")]
    first = verify_checkin(frames, template=obama_template, challenge="smile")
    assert first.passed
    earlier = [int(h, 16) for h in first.hashes]
    resent = [encode_jpeg(decode(f)[0], max_side=300) for f in frames]  # re-encoded copies
    v = verify_checkin(resent, template=obama_template, challenge="smile", earlier_hashes=earlier)
    assert v.reasons == ["replayed_frames"]


def test_bad_frame_stops_verification(obama_template):
    v = verify_checkin([photo("obama_portrait"), b"\x89PNG\r\n\x1a\nbroken"],
                       template=obama_template, challenge="blink")
    assert v.reasons == ["bad_image"]


_CONCURRENT = """
from concurrent.futures import ThreadPoolExecutor
import sys
import numpy as np
from devices.faces.verify import assess_photo
photos = [open(p, 'rb').read() for p in sys.argv[1:]]
solo = [assess_photo(p).embedding for p in photos]
with ThreadPoolExecutor(8) as ex:
    par = list(ex.map(lambda i: assess_photo(photos[i % len(photos)]).embedding, range(48)))
assert all(np.array_equal(e, solo[i % len(photos)]) for i, e in enumerate(par))
print("ok")
"""


def test_the_model_survives_concurrent_enrolments_in_one_process():
    """The API enrols in its thread pool: dlib's objects are not thread-safe, so the model
    serialises its calls (without that, 8 threads corrupted the heap: SIGABRT/SIGSEGV).
    Run in a child process so that a crash fails this test instead of killing pytest."""
    import subprocess
    import sys

    names = [str(FACES / f"{n}.jpg") for n in ("obama_portrait", "obama_briefing")]
    r = subprocess.run([sys.executable, "-c", _CONCURRENT, *names], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])
