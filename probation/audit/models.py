"""The audit log's table and API shapes.

Columns mirror `db/migrations` (the SQL there is the source of truth).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field as PydField
from sqlalchemy import Column
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from db.types import UTCDateTime, utcnow


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    user_id: uuid.UUID | None = None
    action: str
    resource: str
    resource_id: str | None = None
    case_id: uuid.UUID | None = None
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    prev_hash: str
    hash: str


class AuditEntryPublic(SQLModel):
    id: int
    at: datetime
    user_id: uuid.UUID | None
    action: str
    resource: str
    resource_id: str | None
    case_id: uuid.UUID | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerification(SQLModel):
    ok: bool
    entries: int = PydField(description="Entries checked.")
    broken_at: int | None = PydField(default=None, description="Id of the first bad entry.")
    reason: str | None = PydField(
        default=None, description="key_mismatch (keyed under another key), hash_mismatch "
        "(altered, or recomputed without the key), prev_hash_mismatch (removed or reordered), "
        "tail_missing (anchored entries gone: a dropped tail or a truncation), "
        "anchor_mismatch (an anchored entry changed: the chain was rewritten).",
    )
    head_id: int | None = PydField(default=None, description="Id of the newest entry checked.")
    anchors_checked: int = PydField(default=0, description="Anchors (kept outside the "
                                    "database) the chain was checked against.")
