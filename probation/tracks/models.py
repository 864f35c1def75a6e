"""Tracks: a case's fixes as a GeoJSON FeatureCollection."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from pydantic import Field as PydField


class PointGeometry(BaseModel):
    type: Literal["Point"] = "Point"
    coordinates: list[float]


class LineStringGeometry(BaseModel):
    type: Literal["LineString"] = "LineString"
    coordinates: list[list[float]]


class TrackFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    geometry: LineStringGeometry | PointGeometry | None = PydField(
        description="null for the line of a track with fewer than two fixes")
    properties: dict[str, Any]


class TrackCollection(BaseModel):
    """The track: a LineString feature (properties: case_id, from, to, fixes, points)
    followed by one Point feature per kept fix (properties: ts, acc, `crossing` and
    `outlier`)."""

    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[TrackFeature]


class LivePosition(BaseModel):
    """A case's newest fix, as the live positions stream sends it."""

    case_id: uuid.UUID
    ts: datetime
    lat: float
    lon: float
    acc: float
