"""Users: the table, roles and the API shapes of sign-in and user management.

Columns mirror `db/migrations` (the SQL there is the source of truth).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, StringConstraints
from pydantic import Field as PydField
from sqlalchemy import String
from sqlmodel import Field, SQLModel

from db.types import UTCDateTime, utcnow
from probation.fields import ShortText, clean_text


class Role(StrEnum):
    OFFICER = "officer"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    INVESTIGATOR = "investigator"  # proximity searches only; no caseload


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    username: str = Field(unique=True)
    password_hash: str
    role: Role = Field(sa_type=String)
    full_name: str = ""
    supervisor_id: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    is_active: bool = True
    failed_logins: int = 0
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


Username = Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")]


Password = Annotated[str, StringConstraints(min_length=8, max_length=256), AfterValidator(clean_text)]


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = PydField(description="Lifetime of the token in seconds.")


class UserBase(SQLModel):
    username: Username
    role: Role
    full_name: ShortText = ""
    supervisor_id: uuid.UUID | None = None


class UserCreate(UserBase):
    password: Password


class UserUpdate(SQLModel):
    full_name: ShortText | None = None
    role: Role | None = None
    supervisor_id: uuid.UUID | None = None
    is_active: bool | None = None
    password: Password | None = None
    unlock: bool | None = PydField(default=None, description="true: clear a login lock-out.")


class UserPublic(UserBase):
    id: uuid.UUID
    is_active: bool
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime
