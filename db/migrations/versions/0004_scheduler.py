"""Scheduler: a record of every job run, and notification deliveries per event.

`scheduler_runs` holds one row per (job, due time): the unique key is what makes a
job run at most once per due time even if two scheduler processes ever overlap, and
the curfew pass reads its previous `now` from it. Notification deliveries gain the
event they announce (`opened`, `escalated`), the escalation level and a retry time.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-25
"""

from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE scheduler_runs (
    id bigserial PRIMARY KEY,
    job_id text NOT NULL,
    due_at timestamptz NOT NULL,
    now_at timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    runner text NOT NULL,
    result jsonb NOT NULL DEFAULT '{}',
    UNIQUE (job_id, due_at)
);
CREATE INDEX scheduler_runs_job_idx ON scheduler_runs (job_id, now_at DESC);

ALTER TABLE notification_deliveries
    ADD COLUMN event text NOT NULL DEFAULT 'opened',
    ADD COLUMN level integer NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz;
CREATE UNIQUE INDEX notification_deliveries_once
    ON notification_deliveries (alert_id, notifier, event, level);
CREATE INDEX notification_deliveries_retry_idx
    ON notification_deliveries (next_attempt_at) WHERE status = 'retrying';
-- The notifier reads the timeline as its outbox: recent `opened`/`escalated` rows.
CREATE INDEX alert_events_notify_idx ON alert_events (at) WHERE kind IN ('opened', 'escalated');
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TABLE scheduler_runs")
    op.execute("DROP INDEX alert_events_notify_idx")
    op.execute("DROP INDEX notification_deliveries_once")
    op.execute("DROP INDEX notification_deliveries_retry_idx")
    op.execute(
        "ALTER TABLE notification_deliveries DROP COLUMN event, DROP COLUMN level,"
        " DROP COLUMN next_attempt_at"
    )
