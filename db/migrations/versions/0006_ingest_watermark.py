"""Ingest watermark: how far each ingest worker has drained the broker.

Each ingest worker publishes a probe (its wall-clock time) to a private topic it is
subscribed to; when the probe comes out of its pipeline and every message received
before it has been committed, everything the broker had received before that time is
stored, and the worker upserts `watermark` here (`devices/watermark.py`). The
scheduler's clock rules decide a deadline only once the minimum watermark of the
workers seen recently (`updated_at`, the database's clock) has passed it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
CREATE TABLE ingest_watermark (
    worker_id text PRIMARY KEY,
    watermark timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE ingest_watermark;")
