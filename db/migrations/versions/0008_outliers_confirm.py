"""Outliers and per-case confirmation (monitoring-rules.md, "Outliers" and "Episodes").

`fixes.outlier`: the geofence stage marks fixes the kinematic rule found to be
outliers (stored and shown in the track, never deciding). `cases.confirm_points` /
`cases.confirm_seconds`: the case's "N points / T seconds" to open a violation (NULL:
the defaults, 2 fixes spanning 30 s).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
ALTER TABLE fixes ADD COLUMN outlier boolean NOT NULL DEFAULT false;
ALTER TABLE cases ADD COLUMN confirm_points integer CHECK (confirm_points BETWEEN 1 AND 20),
    ADD COLUMN confirm_seconds double precision
        CHECK (confirm_seconds >= 0 AND confirm_seconds <= 3600);
"""
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE fixes DROP COLUMN outlier;"
        " ALTER TABLE cases DROP COLUMN confirm_points, DROP COLUMN confirm_seconds;"
    )
