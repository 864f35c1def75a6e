"""Ingestion: a fingerprint per dead letter, so that a redelivered rejection is kept once.

A QoS 1 message is redelivered when the worker committed it but crashed before
acknowledging it: its valid items are deduplicated by the telemetry keys, and
its rejections by this fingerprint (sha256 of topic, item index and payload).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE dead_letters ADD COLUMN fingerprint bytea")
    op.execute("CREATE UNIQUE INDEX dead_letters_fingerprint_idx ON dead_letters (fingerprint)")


def downgrade() -> None:
    op.execute("DROP INDEX dead_letters_fingerprint_idx")
    op.execute("ALTER TABLE dead_letters DROP COLUMN fingerprint")
