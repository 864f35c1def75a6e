"""Investigations and reports: the `investigator` role, look-ups in the audit log.

- `users.role` admits `investigator` (proximity searches only; no caseload).
- Reports are identified by the SHA-256 of their content (printed in the footer) and of
  their file, both in the detail of their `report.generated` audit entry: two partial
  expression indexes make `GET /api/v1/reports/verify` a look-up.
- The per-user rate limit of proximity searches counts the user's recent
  `investigation.proximity` entries: a partial index on (user_id, at).

Revision ID: 0017
Revises: 0008
Create Date: 2026-12-07
"""

from alembic import op

revision = "0017"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check
    CHECK (role IN ('officer', 'supervisor', 'admin', 'investigator'));
CREATE INDEX audit_log_report_content_idx ON audit_log ((detail->>'content_sha256'))
    WHERE action = 'report.generated';
CREATE INDEX audit_log_report_file_idx ON audit_log ((detail->>'file_sha256'))
    WHERE action = 'report.generated';
CREATE INDEX audit_log_proximity_idx ON audit_log (user_id, at)
    WHERE action = 'investigation.proximity';
"""
    )


def downgrade() -> None:
    op.execute(
        """
DROP INDEX IF EXISTS audit_log_proximity_idx;
DROP INDEX IF EXISTS audit_log_report_file_idx;
DROP INDEX IF EXISTS audit_log_report_content_idx;
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check
    CHECK (role IN ('officer', 'supervisor', 'admin'));
"""
    )
