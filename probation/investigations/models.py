"""API shapes of proximity searches."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, StringConstraints, model_validator
from pydantic import Field as PydField

from probation.errors import field_error
from probation.fields import Instant, clean_text
from probation.zones.models import Circle, ZoneGeometry

MAX_WINDOW = timedelta(days=7)
MAX_PLACE_M = 10_000.0  # a place's radius, or its bounding box's larger side

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=10, max_length=2000)]
Reference = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ProximityQuery(BaseModel):
    geometry: ZoneGeometry | None = PydField(
        default=None, description="The place as a GeoJSON Polygon or MultiPolygon (lon, lat).")
    circle: Circle | None = PydField(
        default=None, description="Or the place as a point and radius (at most 10 km).")
    from_: Instant = PydField(alias="from", description="Window start (any offset).")
    to: Instant = PydField(description="Window end, at most 7 days after `from`.")
    reason: Reason = PydField(description="Why this search is needed (audited; 10+ characters).")
    reference: Reference = PydField(description="The criminal case number (audited).")
    min_probability: float = PydField(
        default=0.01, ge=0.0, le=1.0,
        description="Leave out cases below this probability (unless a gap leaves them open).")

    model_config = {"populate_by_name": True, "json_schema_extra": {"examples": [{
        "circle": {"center": [76.9457, 43.2383], "radius_m": 500},
        "from": "2026-12-01T18:00:00+05:00", "to": "2026-12-01T19:00:00+05:00",
        "reason": "Burglary at Abay 52 reported by the owner; checking who was near.",
        "reference": "УД 2026-0142-17"}]}}

    @model_validator(mode="after")
    def _check(self) -> ProximityQuery:
        clean_text(self.reason)
        clean_text(self.reference)
        if (self.geometry is None) == (self.circle is None):
            raise field_error("geometry", "place_required")
        if self.circle is not None and self.circle.radius_m > MAX_PLACE_M:
            raise field_error("circle", "less_than_equal", le=MAX_PLACE_M)
        if self.to <= self.from_:
            raise field_error("to", "time_order", other="from")
        if self.to - self.from_ > MAX_WINDOW:
            raise field_error("to", "window_too_long", max_days=7)
        return self

    def place_dict(self) -> dict[str, Any]:
        if self.circle is not None:
            return {"circle": self.circle.model_dump()}
        assert self.geometry is not None
        return {"geometry": self.geometry.model_dump()}


class SupportingFix(BaseModel):
    ts: datetime
    lat: float
    lon: float
    acc: float
    p: float = PydField(description="Probability that the true position was in the place.")


class ClosestApproach(BaseModel):
    ts: datetime
    lat: float
    lon: float
    acc: float
    distance_m: float = PydField(description="From the reported position to the place (0 inside).")


class Gap(BaseModel):
    from_: datetime = PydField(serialization_alias="from")
    to: datetime
    minutes: float
    near_place: bool = PydField(
        description="The fix before or after the gap is within 1 km of the place: the person "
        "may have been there while no fix was taken.")


class ProximityMatch(BaseModel):
    case_id: uuid.UUID
    subject_id: uuid.UUID
    probability: float = PydField(description="P(inside the place at least once), see `model`.")
    closest: ClosestApproach
    fixes: list[SupportingFix] = PydField(
        description="The fixes that support it: the 20 of highest p (p > 0), in time order.")
    supporting_fixes: int = PydField(description="How many fixes have p > 0.")
    fixes_in_window: int
    gaps: list[Gap]


class ProximityAnswer(BaseModel):
    query_id: str = PydField(description="Quote it: the audit entry names it.")
    from_: datetime = PydField(serialization_alias="from")
    to: datetime
    model: str = PydField(description="The error model in one sentence.")
    matches: list[ProximityMatch]


MODEL_TEXT = (
    "Each fix's true position is an isotropic 2-D Gaussian around it whose 68 % radius is its "
    "acc; p per fix is the probability that it lies in the place; fixes less than 10 min apart "
    "form one run counted with its largest p; runs combine as independent visits "
    "(1 - prod(1 - p_run)); stretches over 15 min without a fix are gaps (uncertainty).")
