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
    tokens_valid_after: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    totp_secret: bytes | None = None
    totp_pending: bytes | None = None
    totp_enabled: bool = False
    totp_last_step: int | None = None
    totp_required: bool = False
    language: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


Language = Literal["kk", "ru", "en"]

Username = Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")]


def _acceptable_password(value: str) -> str:
    from probation.users.security import password_problem

    problem = password_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Password = Annotated[
    str, StringConstraints(min_length=12, max_length=256), AfterValidator(clean_text),
    AfterValidator(_acceptable_password),
]


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = PydField(description="Lifetime of the token in seconds.")
    refresh_token: str | None = PydField(
        default=None, description="Exchange it at `POST /api/v1/auth/refresh` for a new pair "
        "before `refresh_expires_in` runs out; each refresh token works once.",
    )
    refresh_expires_in: int | None = PydField(
        default=None, description="Lifetime of the refresh token in seconds.")
    scope: str | None = PydField(
        default=None, description="`totp_setup`: the second factor is required for this user "
        "but not set up; this token reaches only `/api/v1/me` and `/api/v1/me/totp`.",
    )


class RefreshRequest(BaseModel):
    refresh_token: str = PydField(min_length=1, max_length=512)


class PasswordChange(BaseModel):
    current_password: str = PydField(min_length=1, max_length=256)
    new_password: Password


class TotpAction(BaseModel):
    action: Literal["enable", "confirm", "disable"] = PydField(
        description="`enable`: start (returns a new secret and its otpauth URI); `confirm`: "
        "prove the authenticator works with a `code` (the factor is on from then); "
        "`disable`: turn it off (needs a current `code`; refused where the role requires it).",
    )
    code: str | None = PydField(default=None, pattern=r"^[0-9]{6}$",
                                description="A current 6-digit code.")


class TotpStatus(BaseModel):
    enabled: bool
    required: bool
    secret: str | None = PydField(default=None, description="Base32 secret (on `enable` only).")
    otpauth_uri: str | None = PydField(default=None, description="For a QR code (on `enable`).")


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
    unlock: bool | None = PydField(default=None, description="true: clear sign-in throttling "
                                   "(kept for compatibility; throttling expires by itself).")
    totp_required: bool | None = PydField(
        default=None, description="Require a TOTP second factor from this user.")
    totp_reset: bool | None = PydField(
        default=None, description="true: remove the user's second factor (a lost phone).")


class MeUpdate(BaseModel):
    language: Language = PydField(
        description="The caller's language (`kk`, `ru`, `en`): the console uses it from "
        "the next sign-in on.")


class UserPublic(UserBase):
    id: uuid.UUID
    is_active: bool
    locked_until: datetime | None
    totp_enabled: bool = False
    totp_required: bool = False
    language: Language | None = PydField(
        default=None, description="The language the user chose (`PATCH /api/v1/me`), "
        "null until they choose one.")
    created_at: datetime
    updated_at: datetime
