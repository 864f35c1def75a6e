"""Template crypto (AES-GCM, byte-compatible with the API's enrolment) and cosine similarity."""

from __future__ import annotations

import base64
import os
import uuid

import numpy as np
import pytest
from cryptography.exceptions import InvalidTag

from devices.biometrics import cosine_similarity, decrypt_template, encrypt_template, load_key

KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()


def test_round_trip_float32() -> None:
    sid = uuid.uuid4()
    v = np.random.default_rng(1).normal(size=512)
    blob = encrypt_template(KEY, v, subject_id=sid)
    assert blob[:1] == b"\x01" and len(blob) == 1 + 12 + 512 * 4 + 16
    out = decrypt_template(KEY, blob, subject_id=sid)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, v.astype(np.float32))
    # a fresh nonce each time
    assert encrypt_template(KEY, v, subject_id=sid) != blob


def test_bound_to_subject_method_and_key() -> None:
    sid = uuid.uuid4()
    blob = encrypt_template(KEY, [0.1] * 128, subject_id=sid)
    with pytest.raises(InvalidTag):
        decrypt_template(KEY, blob, subject_id=uuid.uuid4())
    with pytest.raises(InvalidTag):
        decrypt_template(KEY, blob, subject_id=sid, method="iris")
    with pytest.raises(InvalidTag):
        decrypt_template(os.urandom(32), blob, subject_id=sid)
    with pytest.raises(ValueError):
        decrypt_template(KEY, b"\x02" + blob[1:], subject_id=sid)


def test_key_forms() -> None:
    raw = os.urandom(32)
    assert load_key(raw) == raw
    assert load_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    with pytest.raises(ValueError):
        load_key(b"short")


def test_documented_byte_format() -> None:
    """version(1) | nonce(12) | AES-GCM(float32 LE) with subject id bytes + method as AAD."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sid = uuid.uuid4()
    v = np.arange(128, dtype="<f4") / 7
    nonce = os.urandom(12)
    blob = b"\x01" + nonce + AESGCM(load_key(KEY)).encrypt(nonce, v.tobytes(), sid.bytes + b"face")
    np.testing.assert_array_equal(decrypt_template(KEY, blob, subject_id=sid), v)


def test_cosine_similarity() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=256)
    assert cosine_similarity(a, a) == pytest.approx(1.0)
    assert cosine_similarity(a, 3.5 * a) == pytest.approx(1.0)
    assert cosine_similarity(a, -a) == pytest.approx(-1.0)
    b = rng.normal(size=256)
    b -= a * np.dot(a, b) / np.dot(a, a)  # orthogonal
    assert cosine_similarity(a, b) == pytest.approx(0.0, abs=1e-9)
    assert cosine_similarity(np.zeros(8), np.ones(8)) == 0.0
    with pytest.raises(ValueError):
        cosine_similarity(np.ones(3), np.ones(4))
