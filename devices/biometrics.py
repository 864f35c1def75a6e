"""Biometric template crypto and matching: AES-256-GCM at rest, cosine similarity.

Byte format of `biometric_templates.ciphertext` (`encrypt_template` writes it at the
API's enrolment, `decrypt_template` reads it at a check-in): ``version(1) ‖ nonce(12) ‖ AES-GCM(float32 little-endian
embedding)`` with ``subject_id.bytes ‖ method`` as associated data, so a template
copied onto another person does not decrypt. The key is the urlsafe base64 of 32 bytes
(`Settings.resolved_biometric_key()`), or the raw 32 bytes.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"\x01"
NONCE_BYTES = 12

F32 = npt.NDArray[np.float32]


def load_key(key: str | bytes) -> bytes:
    """The 32-byte AES key from raw bytes or its urlsafe base64 form (ValueError if not 32)."""
    if isinstance(key, str):
        raw = base64.urlsafe_b64decode(key.encode() + b"=" * (-len(key) % 4))
    else:
        raw = bytes(key)
    if len(raw) != 32:
        raise ValueError("the biometric key must be 32 bytes (urlsafe base64)")
    return raw


def _aad(subject_id: uuid.UUID, method: str) -> bytes:
    return subject_id.bytes + method.encode()


def encrypt_template(
    key: str | bytes,
    vector: Sequence[float] | npt.ArrayLike,
    *,
    subject_id: uuid.UUID,
    method: str = "face",
) -> bytes:
    """Encrypt an embedding for storage (fresh random nonce per call)."""
    plain = np.asarray(vector, dtype="<f4").ravel().tobytes()
    nonce = os.urandom(NONCE_BYTES)
    return VERSION + nonce + AESGCM(load_key(key)).encrypt(nonce, plain, _aad(subject_id, method))


def decrypt_template(
    key: str | bytes, blob: bytes, *, subject_id: uuid.UUID, method: str = "face"
) -> F32:
    """The stored embedding as float32.

    Raises `cryptography.exceptions.InvalidTag` when the blob, key, subject or method do
    not match, ValueError for an unknown format.
    """
    blob = bytes(blob)
    if blob[:1] != VERSION or len(blob) < 1 + NONCE_BYTES + 16:
        raise ValueError("unknown biometric template format")
    nonce = blob[1 : 1 + NONCE_BYTES]
    plain = AESGCM(load_key(key)).decrypt(nonce, blob[1 + NONCE_BYTES :], _aad(subject_id, method))
    return np.frombuffer(plain, dtype="<f4").astype(np.float32)


def cosine_similarity(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Cosine of the angle between two vectors (float64 maths); 0.0 if either is zero.

    Raises ValueError when the lengths differ.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"embedding length {x.size} != template length {y.size}")
    nx = float(np.linalg.norm(x))
    ny = float(np.linalg.norm(y))
    if nx == 0.0 or ny == 0.0 or not (np.isfinite(nx) and np.isfinite(ny)):
        return 0.0
    return float(np.clip(np.dot(x, y) / (nx * ny), -1.0, 1.0))


def _frames_aad(device_id: uuid.UUID, seq: int) -> bytes:
    return b"frames" + device_id.bytes + seq.to_bytes(8, "big")


def encrypt_frames(key: str | bytes, frames: Sequence[bytes], *, device_id: uuid.UUID,
                   seq: int) -> bytes:
    """Check-in frames waiting for verification, encrypted like templates:
    ``version ‖ nonce ‖ AES-GCM(count(1) ‖ (length(4) ‖ bytes)…)``."""
    plain = bytes([len(frames)]) + b"".join(len(f).to_bytes(4, "big") + f for f in frames)
    nonce = os.urandom(NONCE_BYTES)
    return VERSION + nonce + AESGCM(load_key(key)).encrypt(nonce, plain,
                                                           _frames_aad(device_id, seq))


def decrypt_frames(key: str | bytes, blob: bytes, *, device_id: uuid.UUID,
                   seq: int) -> list[bytes]:
    blob = bytes(blob)
    if blob[:1] != VERSION:
        raise ValueError("unknown frames format")
    plain = AESGCM(load_key(key)).decrypt(blob[1:1 + NONCE_BYTES], blob[1 + NONCE_BYTES:],
                                          _frames_aad(device_id, seq))
    out, pos = [], 1
    for _ in range(plain[0]):
        n = int.from_bytes(plain[pos:pos + 4], "big")
        out.append(plain[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def encrypt_photo(key: str | bytes, photo: bytes, *, subject_id: uuid.UUID) -> bytes:
    """An enrolment photo kept at rest (only when the setting keeps photos)."""
    nonce = os.urandom(NONCE_BYTES)
    return VERSION + nonce + AESGCM(load_key(key)).encrypt(nonce, photo,
                                                           b"photo" + subject_id.bytes)
