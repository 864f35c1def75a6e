"""The caseload scope: which cases a user may see, and to whom they may give one.

Visibility lives here and only here (no web framework: services and routes both use
it). Officer: their own cases; supervisor: their own and their officers'; admin: all;
investigator: none (they search by place and time, `probation.investigations`).
`CaseScope` renders that rule as a SQLAlchemy clause or a SQL fragment, and every
case-scoped route and service filters through it. A case outside the scope is a 404,
exactly like a case that does not exist.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, false, or_, true
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from probation.cases.models import Case
from probation.users.models import Role, User


@dataclass(frozen=True)
class CaseScope:
    """The cases a user may see."""

    user_id: uuid.UUID
    role: Role

    @classmethod
    def of(cls, user: User) -> CaseScope:
        return cls(user.id, Role(user.role))

    @property
    def everything(self) -> bool:
        return self.role == Role.ADMIN

    def officers(self) -> SelectOfScalar[uuid.UUID]:
        """The officers whose cases are in scope (not meaningful for admins)."""
        return select(User.id).where(
            or_(col(User.id) == self.user_id, col(User.supervisor_id) == self.user_id)
        )

    def where(self, officer_col: Any = None) -> ColumnElement[bool]:
        """A clause on a case's officer column (default `Case.officer_id`)."""
        column = col(Case.officer_id) if officer_col is None else officer_col
        if self.role == Role.ADMIN:
            return true()
        if self.role == Role.SUPERVISOR:
            return column.in_(self.officers())  # type: ignore[no-any-return]
        if self.role == Role.INVESTIGATOR:
            return false()
        return column == self.user_id  # type: ignore[no-any-return]

    def case_ids(self) -> SelectOfScalar[uuid.UUID]:
        """`SELECT id FROM cases` within scope."""
        return select(Case.id).where(self.where())

    def sql(self, officer_expr: str = "c.officer_id") -> str:
        """The same rule as raw SQL over `officer_expr`, with the parameter `:scope_uid`."""
        if self.role == Role.ADMIN:
            return "TRUE"
        if self.role == Role.SUPERVISOR:
            return (f"({officer_expr} = :scope_uid OR {officer_expr} IN "
                    "(SELECT id FROM users WHERE supervisor_id = :scope_uid))")
        if self.role == Role.INVESTIGATOR:
            return "FALSE"
        return f"{officer_expr} = :scope_uid"

    @property
    def params(self) -> dict[str, Any]:
        return {"scope_uid": self.user_id}

    def may_assign_to(self, officer: User) -> bool:
        """Whether a case may be given to `officer` by this user."""
        if officer.role not in (Role.OFFICER, Role.SUPERVISOR) or not officer.is_active:
            return False
        if self.role == Role.ADMIN:
            return True
        if self.role == Role.SUPERVISOR:
            return officer.id == self.user_id or officer.supervisor_id == self.user_id
        return officer.id == self.user_id
