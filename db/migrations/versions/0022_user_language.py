"""The console's language remembered per user (issue 15).

- users.language: `kk`, `ru` or `en`, NULL until the user picks one; set by the user
  with `PATCH /api/v1/me`, read by the console at sign-in.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE users ADD COLUMN language text "
        "CHECK (language IN ('kk', 'ru', 'en'))"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE users DROP COLUMN language")
