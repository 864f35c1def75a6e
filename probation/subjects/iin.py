"""Kazakhstan individual identification numbers (ИИН / ЖСН).

Layout of the 12 digits: `YYMMDD` birth date, the century-and-sex digit (1/2:
1800s male/female, 3/4: 1900s, 5/6: 2000s), four serial digits, and a check
digit. The check digit is `Σ dᵢ·wᵢ mod 11` over the first 11 digits with the
weights 1..11; if that is 10, the weights 3, 4, …, 11, 1, 2 are used instead,
and if it is 10 again the number is invalid (never issued).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Literal

WEIGHTS_1 = tuple(range(1, 12))
WEIGHTS_2 = (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2)
CENTURY = {1: 1800, 2: 1800, 3: 1900, 4: 1900, 5: 2000, 6: 2000}


class IinError(ValueError):
    """An invalid IIN; `code` is the message code (`iin_format`, `iin_century`, …)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def check_digit(digits: Sequence[int]) -> int | None:
    """The check digit of the first 11 digits, or None when no valid one exists."""
    first = sum(d * w for d, w in zip(digits[:11], WEIGHTS_1, strict=True)) % 11
    if first != 10:
        return first
    second = sum(d * w for d, w in zip(digits[:11], WEIGHTS_2, strict=True)) % 11
    return None if second == 10 else second


def birth_date_of(iin: str) -> date:
    """The birth date an IIN encodes (raises `IinError`)."""
    if len(iin) != 12 or not iin.isascii() or not iin.isdigit():
        raise IinError("iin_format")
    c = int(iin[6])
    if c not in CENTURY:
        raise IinError("iin_century")
    try:
        return date(CENTURY[c] + int(iin[0:2]), int(iin[2:4]), int(iin[4:6]))
    except ValueError:
        raise IinError("iin_birth_date") from None


def validate_iin(iin: str, birth_date: date | None = None) -> str:
    """`iin` if it is well formed, its check digit holds and it matches `birth_date`."""
    encoded = birth_date_of(iin)
    digits = [int(ch) for ch in iin]
    expected = check_digit(digits)
    if expected is None or expected != digits[11]:
        raise IinError("iin_checksum")
    if birth_date is not None and encoded != birth_date:
        raise IinError("iin_birth_date")
    return iin


def make_iin(birth_date: date, sex: Literal["m", "f"] = "m", serial: int = 1) -> str:
    """A valid IIN for `birth_date` (tests and benchmarks): the first serial ≥ `serial`
    whose check digit exists."""
    base = {1800: 1, 1900: 3, 2000: 5}[birth_date.year // 100 * 100]
    c = base + (1 if sex == "f" else 0)
    for s in range(serial, serial + 10_000):
        head = f"{birth_date:%y%m%d}{c}{s % 10_000:04d}"
        digit = check_digit([int(ch) for ch in head])
        if digit is not None:
            return head + str(digit)
    raise ValueError("no serial with a valid check digit")  # pragma: no cover
