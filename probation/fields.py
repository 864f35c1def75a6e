"""Annotated field types shared by the API shapes of every domain.

Inputs reject NUL characters and unencodable text (PostgreSQL cannot store them) and
non-finite numbers; every datetime in is offset-aware, every one out is UTC.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, StringConstraints
from pydantic import Field as PydField

from probation.errors import field_error


def clean_text(value: str) -> str:
    if "\x00" in value:
        raise field_error(None, "nul_character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise field_error(None, "string_pattern_mismatch") from None
    return value


def _known_timezone(value: str) -> str:
    if value not in _timezones():
        raise field_error(None, "timezone_unknown")
    return value


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


def _sane_instant(value: datetime) -> datetime:
    """An aware instant between 1900 and 2200, normalised to UTC."""
    from datetime import UTC

    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise field_error(None, "datetime_range") from None
    if not 1900 <= utc.year <= 2200:
        raise field_error(None, "datetime_range")
    return utc


Instant = Annotated[AwareDatetime, AfterValidator(_sane_instant),
                    PydField(description="RFC 3339 with an offset (years 1900-2200)")]


ShortText = Annotated[str, StringConstraints(max_length=200), AfterValidator(clean_text)]


NameText = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(clean_text)]


NoteText = Annotated[str, StringConstraints(min_length=1, max_length=4000), AfterValidator(clean_text)]


Timezone = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_known_timezone),
    PydField(description="IANA time zone name", examples=["Asia/Almaty"]),
]


Lon = Annotated[float, PydField(ge=-180, le=180, allow_inf_nan=False)]


Lat = Annotated[float, PydField(ge=-90, le=90, allow_inf_nan=False)]


Meters = Annotated[float, PydField(ge=0, le=100_000, allow_inf_nan=False)]
