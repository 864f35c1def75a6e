"""The TOTP second factor (RFC 6238, 30 s steps, 6 digits, one step of clock drift).

Secrets are stored encrypted (Fernet, with a key kept in the data dir, not the database);
a code is accepted once (the last used time step is kept against replay).
"""

from __future__ import annotations

import time

import pyotp
from cryptography.fernet import Fernet

ISSUER = "Probation monitoring"
STEP_S = 30


def new_secret() -> str:
    return pyotp.random_base32()


def encrypt(key: str, secret: str) -> bytes:
    return Fernet(key.encode()).encrypt(secret.encode())


def decrypt(key: str, blob: bytes) -> str:
    return Fernet(key.encode()).decrypt(bytes(blob)).decode()


def uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def matching_step(secret: str, code: str, *, now: float | None = None,
                  last_step: int | None = None) -> int | None:
    """The time step `code` belongs to (current, previous or next), if newer than
    `last_step`; None when it does not match or was used already."""
    t = time.time() if now is None else now
    totp = pyotp.TOTP(secret)
    step = int(t // STEP_S)
    for s in (step, step - 1, step + 1):
        if last_step is not None and s <= last_step:
            continue
        if pyotp.utils.strings_equal(totp.at(s * STEP_S), code):
            return s
    return None
