"""Session and audit hardening (issue 14).

- users: `tokens_valid_after` (a password change, deactivation or "sign out everywhere"
  moves it: every access and refresh token issued before it is refused), the TOTP second
  factor (secret encrypted by the application, the last used time step against replay,
  a per-user requirement), and no more hard lock-out (throttling replaces it; the old
  columns stay for compatibility and are no longer written).
- refresh_tokens: rotating refresh tokens (only a SHA-256 of the token is stored); a
  reused token revokes its whole family.
- subjects: `created_by` (a person without a case is visible to whoever registered it).
- audit_log: TRUNCATE is refused too; `audit_chain` records which key (an id derived
  from it, never the key) the chain is keyed under and when it was re-chained. Existing
  rows are re-chained under the HMAC key by the application at upgrade (`probation db
  upgrade`, `serve`), because the key is not in the database; that re-chain is itself an
  audit entry.

Revision ID: 0021
Revises: 0018
Create Date: 2026-12-07
"""

from alembic import op

revision = "0021"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
ALTER TABLE users
    ADD COLUMN tokens_valid_after timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN totp_secret bytea,
    ADD COLUMN totp_pending bytea,
    ADD COLUMN totp_enabled boolean NOT NULL DEFAULT false,
    ADD COLUMN totp_last_step bigint,
    ADD COLUMN totp_required boolean NOT NULL DEFAULT false;
-- tokens already issued stay valid until they expire
UPDATE users SET tokens_valid_after = '-infinity';

-- who registered a person: until a case exists, only they (their supervisor, admins) see it
ALTER TABLE subjects ADD COLUMN created_by uuid REFERENCES users(id);

CREATE TABLE refresh_tokens (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    family_id uuid NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    issued_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

CREATE FUNCTION audit_log_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (TRUNCATE refused)';
END $$;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_no_truncate();

CREATE TABLE audit_chain (
    id integer PRIMARY KEY CHECK (id = 1),
    key_id text,
    keyed_at timestamptz
);
INSERT INTO audit_chain (id) VALUES (1);
"""
    )


def downgrade() -> None:
    op.execute(
        """
DROP TABLE audit_chain;
DROP TRIGGER audit_log_no_truncate ON audit_log;
DROP FUNCTION audit_log_no_truncate();
DROP TABLE refresh_tokens;
ALTER TABLE subjects DROP COLUMN created_by;
ALTER TABLE users DROP COLUMN tokens_valid_after, DROP COLUMN totp_secret,
    DROP COLUMN totp_pending, DROP COLUMN totp_enabled, DROP COLUMN totp_last_step,
    DROP COLUMN totp_required;
"""
    )
